"""End to end in a real browser: Debian's Chromium, driven by Playwright, against the whole real stack (the FastChat
LLM stack, the API over HTTP, the Streamlit UI started by the same launcher as `kbqa up`).

A screenshot of every step is kept under test-artifacts/webui/ (KBQA_TEST_ARTIFACTS overrides the folder).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.llm.stack import LLMStack, terminate
from app.settings import PROJECT_ROOT, Settings
from app.webui_launcher import start_ui
from kbqa_client import KbqaClient
from tests.conftest import answering_settings, free_port, wait_until
from tests.fixtures_docs import cjk_fonts, make_pages_pdf, make_paragraphs_docx
from tests.live_api import serving
from webui.i18n import TEXTS

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
WINDOW = {"viewport": {"width": 1440, "height": 1000}, "locale": "zh-CN"}
SOURCE_KB = "原文查看库"
SOURCE_PDF = "青岚水库手册.pdf"
SOURCE_PAGES = [
    "青岚水库管理手册。本手册介绍水库的日常巡查制度与值班人员的分工安排。",
    "防汛要求：青岚水库的汛限水位为一百二十六米，超过汛限水位时必须在两小时内开闸泄洪。",
]
SOURCE_DOCX = "食堂规定.docx"
DOCX_SENTENCE = "员工食堂的早餐供应时间改为七点到九点，逾时不再供应，请大家合理安排上班前的时间。"
DOCX_PARAGRAPHS = [  # each a chunk of its own in SOURCE_KB (chunks of 60 characters at most)
    "食堂由后勤部统一管理，每天供应早餐、午餐和晚餐三餐，就餐时需要刷员工卡。",
    DOCX_SENTENCE,
    "节假日期间食堂只供应午餐，供应时间为十一点半到一点，其余时段暂停营业。",
]
HIGHLIGHT_ON_WHITE = (255, 234, 165)  # the page highlight's fill (255, 196, 0, alpha 90) blended over white paper

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
        page = browser.new_page(**WINDOW)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs  # type: ignore[attr-defined]
        page.goto(ui_url)
        yield page
        browser.close()


class Steps:
    def __init__(self, page: object, prefix: str = "") -> None:
        self.page = page
        self.prefix = prefix  # keeps a second test's screenshots apart from the journey's
        self.count = 0

    def shot(self, name: str, show: object | None = None) -> None:
        """A screenshot of the window, scrolled so that `show` (a locator) is in view."""
        self.count += 1
        if show is not None:
            show.scroll_into_view_if_needed()
        self.idle()
        self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        self.page.screenshot(path=str(self.path(name)))

    def path(self, name: str) -> Path:
        return ARTIFACTS / f"{self.prefix}{self.count:02d}-{name}.png"

    def nav(self, label: str) -> None:
        self.page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()

    def mode(self, label: str) -> None:
        self.page.locator('[data-testid="stMainBlockContainer"]').get_by_role("radio", name=label, exact=True).click()

    def choose_kb(self, name: str) -> None:
        self.page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').click()
        self.page.get_by_role("option", name=name).click()
        self.page.keyboard.press("Escape")

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
    steps.choose_kb(KB)
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


def test_a_cited_source_opens_on_its_highlighted_page(
    browser_page: object, ui_settings: Settings, tmp_path: Path
) -> None:
    """知识库问答's citation of a PDF source opens the source page in a new tab: page 2 with the cited lines marked;
    知识库测试's "在原文中查看" shows a DOCX source's paragraph highlighted. The documents go in through the API (the
    journey above uploads through the UI), the questions through a fresh browser tab (a session of its own)."""
    api = KbqaClient(ui_settings.api.url)
    try:
        pdf_id, _ = _index_sources(api, tmp_path)
        cited = next(c for c in api.chunks(SOURCE_KB, pdf_id) if c["page"] == 2)["chunk_index"]
        expected = api.page_image(SOURCE_KB, pdf_id, 2, cited)
    finally:
        api.close()
    assert expected.highlight == "text_layer"
    context = browser_page.context.browser.new_context(**WINDOW)  # type: ignore[attr-defined]
    try:
        _open_cited_sources(context, ui_settings.ui.url, pdf_id, cited, expected.png)
    finally:
        context.close()


def _open_cited_sources(context: object, ui_url: str, pdf_id: str, cited: int, expected_png: bytes) -> None:
    tab = context.new_page()  # type: ignore[attr-defined]
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(ui_url)
    steps = Steps(tab, prefix="source-")
    tab.get_by_text("对话", exact=True).first.wait_for(timeout=ANSWER_TIMEOUT_MS)

    # 知识库问答: the answer cites page 2's chunk; its [n] opens the source page in a new tab.
    steps.mode("知识库问答")
    steps.choose_kb(SOURCE_KB)
    steps.ask("基于知识库提问……", "青岚水库的汛限水位是多少？")
    answer = tab.locator('[data-testid="stChatMessage"]').nth(1)
    answer.get_by_text("来源（", exact=False).wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    citation = answer.locator(f'a[href*="doc={pdf_id}&chunk={cited}"]')
    assert citation.count() >= 1, answer.inner_text()
    steps.shot("answer-with-citation", citation.first)
    with tab.context.expect_page() as opened:
        citation.first.click()
    source = steps.page = opened.value
    shown = source.locator('[data-testid="stImage"] img')
    shown.wait_for(timeout=ANSWER_TIMEOUT_MS)
    source.get_by_text(TEXTS["preview.page"][0].format(page=2, pages=2), exact=False).wait_for()
    steps.idle()
    assert source.get_by_text(TEXTS["preview.not_found"][0], exact=False).count() == 0
    png = source.request.get(shown.evaluate("img => img.src")).body()
    assert png == expected_png  # page 2 with chunk `cited` marked, the API's PNG as it rendered it
    assert _highlighted_pixels(png) > 2000
    steps.shot("pdf-page-highlighted")  # the file's name above, the page's first lines

    # 知识库测试: "在原文中查看" under the source holding the DOCX sentence shows it highlighted among its neighbours.
    steps.page = tab
    tab.bring_to_front()
    steps.mode("知识库测试")
    steps.ask("输入问题，查看检索到的分块与分数……", "早餐供应时间改为几点到几点？")
    hits = tab.locator('[data-testid="stChatMessage"]').nth(3)
    hits.locator('[data-testid="stDataFrame"]').wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    hits.get_by_text("来源（", exact=False).click()
    source_text = hits.locator('[data-testid="stText"]').filter(has_text=DOCX_SENTENCE).first
    source_text.locator('xpath=preceding::*[@data-testid="stCheckbox"][1]').click()  # that source's toggle
    marked = hits.locator("span.stMarkdownColoredBackground")
    marked.filter(has_text=DOCX_SENTENCE).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    steps.idle()
    neighbours = (DOCX_PARAGRAPHS[0], DOCX_PARAGRAPHS[2])
    assert not any(n in text for text in marked.all_inner_texts() for n in neighbours)  # the cited chunk only
    assert marked.first.evaluate("el => getComputedStyle(el).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
    hits.locator('[data-testid="stText"]').filter(has_text=DOCX_PARAGRAPHS[0]).first.wait_for()  # the one before
    hits.get_by_text(TEXTS["preview.download"][0].format(file=SOURCE_DOCX), exact=False).wait_for()
    steps.shot("docx-highlighted", marked)
    assert dialogs == []


def _index_sources(api: KbqaClient, folder: Path) -> list[str]:
    """The two-page PDF and the DOCX in SOURCE_KB, indexed; their ids."""
    api.create_knowledge_base(SOURCE_KB, chunk_size=60, chunk_overlap=0)
    pdf = make_pages_pdf(folder, SOURCE_PDF, SOURCE_PAGES)
    docx = make_paragraphs_docx(folder, SOURCE_DOCX, "第三章 后勤管理", DOCX_PARAGRAPHS)
    files = [(SOURCE_PDF, pdf.read_bytes()), (SOURCE_DOCX, docx.read_bytes())]
    ids = [outcome["document"]["id"] for outcome in api.upload_many(SOURCE_KB, files)]
    for doc_id in ids:
        wait_until(
            lambda d=doc_id: api.document(SOURCE_KB, d)["status"] in ("ready", "failed"), "the sources to be indexed"
        )
        assert api.document(SOURCE_KB, doc_id)["status"] == "ready", api.document(SOURCE_KB, doc_id)
    return ids


def _highlighted_pixels(png: bytes) -> int:
    """How many pixels show the highlight's fill over the paper."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(HIGHLIGHT_ON_WHITE)).max(axis=2) <= 4).sum())
