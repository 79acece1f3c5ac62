"""End to end in a real browser: Debian's Chromium, driven by Playwright, against the whole real stack (the FastChat
LLM stack, the API over HTTP, the Streamlit UI started by the same launcher as `kbqa up`).

A screenshot of every step is kept under test-artifacts/webui/ (KBQA_TEST_ARTIFACTS overrides the folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.llm.stack import LLMStack, terminate
from app.settings import PROJECT_ROOT, Settings
from app.webui_launcher import start_ui
from tests.conftest import answering_settings, free_port
from tests.fixtures_docs import cjk_fonts, make_pages_pdf
from tests.live_api import serving

CHROMIUM = Path("/usr/bin/chromium")
# The flags a root, offline, GPU-less machine needs (background networking fails loudly on a closed network).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("KBQA_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts")) / "webui"
KB = "星舰资料库"
PAGES = [
    "北辰九号探测器项目简介。本项目由多家单位联合承担，目标是在二〇三〇年前完成深空观测任务。",
    "技术参数：北辰九号探测器的主镜口径为三点七米，由岚山光学研究所研制，设计寿命十五年。",
]
HOSTILE = "安全提示：<script>window.__pwned = 1</script> 这一行必须原样显示。"
EVAL_QUESTIONS = [
    {"question": "北辰九号探测器的主镜口径是多少？", "file_name": "北辰九号技术说明.pdf"},
    {"question": "北辰九号计划在哪一年前完成观测任务？", "file_name": "北辰九号技术说明.pdf"},
    {"question": "哪一行必须原样显示？", "file_name": "安全提示.txt"},
]
ANSWER_TIMEOUT_MS = 240_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is absent: scripts/setup.sh installs it"),
    pytest.mark.skipif(cjk_fonts() is None, reason="no CJK fonts for the Chinese PDF: scripts/setup.sh installs them"),
]


@pytest.fixture(scope="module")
def ui_settings(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, llm_stack: LLMStack) -> Settings:
    return answering_settings(
        tmp_path_factory.mktemp("webui-browser"),
        embedding_model_dir,
        llm_stack,
        max_tokens=400,  # the long answer must still be streaming when the test clicks
        api__port=free_port(),
        ui__port=free_port(),
    )


@pytest.fixture(scope="module")
def ui_url(ui_settings: Settings, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch_module.delenv("KBQA_API_URL", raising=False)  # the UI must reach the API this test serves
    with serving(ui_settings, port=ui_settings.api.port):
        process = start_ui(ui_settings)
        try:
            yield ui_settings.ui.url
        finally:
            terminate([process.pid])


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def browser_page(ui_url: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs  # type: ignore[attr-defined]
        page.goto(ui_url)
        yield page
        browser.close()


class Steps:
    def __init__(self, page: object) -> None:
        self.page = page
        self.count = 0

    def shot(self, name: str, show: object | None = None) -> None:
        """A screenshot of the window, scrolled so that `show` (a locator) is in view."""
        self.count += 1
        if show is not None:
            show.scroll_into_view_if_needed()
        self.idle()
        self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        self.page.screenshot(path=str(ARTIFACTS / f"{self.count:02d}-{name}.png"))

    def nav(self, label: str) -> None:
        self.page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()

    def mode(self, label: str) -> None:
        self.page.locator('[data-testid="stMainBlockContainer"]').get_by_role("radio", name=label, exact=True).click()

    def ask(self, placeholder: str, question: str) -> None:
        box = self.page.get_by_placeholder(placeholder)
        box.fill(question)
        box.press("Enter")

    def idle(self, timeout_ms: int = ANSWER_TIMEOUT_MS) -> None:
        """Wait until the script run has finished (the state Streamlit marks on its root element) and no element of
        an earlier run is left stale. Called after waiting for something the run draws, so that run has started."""
        self.page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout_ms)
        self.page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=timeout_ms)


def test_the_whole_journey_in_a_browser(browser_page: object, tmp_path: Path) -> None:
    page = browser_page
    steps = Steps(page)
    page.get_by_text("对话", exact=True).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.shot("start")

    # Knowledge-base page: create a knowledge base, upload a PDF and a hostile text file, watch them get ready.
    steps.nav("知识库管理")
    page.get_by_label("名称").fill(KB)
    page.get_by_role("button", name="创建").click()
    page.get_by_text("这个知识库还没有文档").wait_for()
    steps.shot("kb-created")
    pdf = make_pages_pdf(tmp_path, "北辰九号技术说明.pdf", PAGES)
    hostile = tmp_path / "安全提示.txt"
    hostile.write_text(HOSTILE, encoding="utf-8")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(pdf), str(hostile)])
    page.get_by_text("北辰九号技术说明.pdf").first.wait_for()
    page.get_by_role("button", name="上传并建立索引").click()
    page.get_by_text("「北辰九号技术说明.pdf」已就绪").wait_for(timeout=180_000)
    page.get_by_text("「安全提示.txt」已就绪").wait_for()
    steps.idle()
    steps.shot("documents-ready")

    # The hostile document's chunk shows as text; nothing in it runs.
    page.locator('[data-testid="stSelectbox"]').filter(has_text="选择文档").click()
    page.get_by_role("option", name="安全提示.txt").click()
    page.get_by_text("查看分块").click()
    page.get_by_text("<script>window.__pwned = 1</script>", exact=False).wait_for()
    assert page.evaluate("window.__pwned") is None
    steps.shot("chunks-plain-text", page.get_by_text("<script>window.__pwned = 1</script>", exact=False))

    # 知识库问答: an answer with its numbered source (file and page).
    steps.nav("对话")
    steps.mode("知识库问答")
    page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').click()
    page.get_by_role("option", name=KB).click()
    page.keyboard.press("Escape")
    steps.ask("基于知识库提问……", "北辰九号探测器的主镜口径是多少？")
    sources = page.get_by_text("来源（", exact=False).first
    sources.wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    answer = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
    assert "三点七" in answer or "3.7" in answer, answer
    sources.click()
    page.get_by_text("北辰九号技术说明.pdf · 第 2 页", exact=False).first.wait_for()
    steps.shot("kb-answer-with-sources")

    # 知识库测试: scored chunks as a table and a chart.
    steps.mode("知识库测试")
    steps.ask("输入问题，查看检索到的分块与分数……", "主镜是谁研制的？")
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    steps.shot("retrieval-test-scores")

    # The evaluation panel of 知识库测试: a JSONL question set, recall per mode, the suggested threshold.
    page.get_by_text("批量评测", exact=False).click()
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in EVAL_QUESTIONS), encoding="utf-8")
    page.locator('[data-testid="stExpander"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(questions)
    )
    page.get_by_role("button", name="开始评测").click()
    page.get_by_text("完成：3 个问题", exact=False).wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    steps.shot("evaluation-report", page.get_by_text("建议分数阈值"))
    page.get_by_text("批量评测", exact=False).click()  # fold it away again

    # LLM 对话: the model alone, no sources.
    steps.mode("LLM 对话")
    steps.ask("和模型聊聊……", "用一句话介绍你自己。")
    llm_answer = page.locator('[data-testid="stChatMessage"]').nth(5)
    llm_answer.get_by_text("耗时:", exact=False).wait_for(timeout=ANSWER_TIMEOUT_MS)  # the answer is complete
    steps.idle()
    # Asked of this message, not counted over the page: a rerun redraws the messages one by one, so a count over
    # the whole page taken mid-redraw misses some (a busy machine showed 2 of 3).
    assert llm_answer.inner_text().strip()
    assert llm_answer.get_by_text("来源（", exact=False).count() == 0
    steps.shot("llm-chat")

    # The English switch relabels the interface; the conversation stays.
    page.locator('[data-testid="stSidebar"]').get_by_role("radio", name="English").click()
    page.locator('[data-testid="stMainBlockContainer"]').get_by_role("radio", name="KB Q&A", exact=True).wait_for()
    steps.idle()
    page.locator('[data-testid="stChatMessage"]').nth(5).wait_for()  # the rerun redraws them one by one
    assert page.locator('[data-testid="stChatMessage"]').count() == 6
    steps.shot("english")

    # A click while an answer streams (here: back to Chinese) reruns the page; what came so far stays.
    steps.ask("Talk to the model…", "请写一篇很长的文章，介绍印刷术从古至今的历史，至少一千字。")
    answer = page.locator('[data-testid="stChatMessage"]').nth(7)
    words = re.compile(r"[\u4e00-\u9fff]{6,}")
    answer.locator('[data-testid="stMarkdownContainer"]').filter(has_text=words).first.wait_for(
        timeout=ANSWER_TIMEOUT_MS
    )
    page.locator('[data-testid="stSidebar"]').get_by_role("radio", name="中文").click()
    steps.idle()
    page.locator('[data-testid="stMainBlockContainer"]').get_by_role("radio", name="知识库问答", exact=True).wait_for()
    # The rerun redraws the messages one by one, and until it reaches this one the page still shows the
    # interrupted run's element (the text without the mark): wait for the redrawn message, don't read it once.
    interrupted = page.locator('[data-testid="stChatMessage"]').nth(7)
    interrupted.get_by_text("回答被中断", exact=False).wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert page.locator('[data-testid="stChatMessage"]').count() == 8
    kept = interrupted.inner_text()
    assert words.search(kept) and "回答被中断" in kept, kept
    assert page.dialogs == []  # type: ignore[attr-defined]
