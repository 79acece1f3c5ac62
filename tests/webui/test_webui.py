"""The web UI's page logic with Streamlit's AppTest, against the real API served over HTTP (Milvus Lite, the real
embedding model; the real LLM stack where a test needs answers)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.llm.stack import LLMStack
from app.settings import PROJECT_ROOT
from tests import fixtures_ocr as fo
from tests.conftest import answering_settings, free_port, make_settings, wait_until
from tests.live_api import serving
from webui.export import conversation_markdown
from webui.i18n import TEXTS

WEBUI = PROJECT_ROOT / "webui_st.py"
KB_PAGE = "webui/pages/knowledge_bases.py"
KB = "产品手册"
FACT = "北辰九号探测器的主镜口径为三点七米，由岚山光学研究所研制。"
HOSTILE = "注意事项：<script>window.__pwned = 1</script> 与 **不是粗体** 以及 $x$。"


def zh(key: str, **values: object) -> str:
    text = TEXTS[key][0]
    return text.format(**values) if values else text


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, llm_stack: LLMStack) -> Iterator[str]:
    settings = answering_settings(tmp_path_factory.mktemp("webui-api"), embedding_model_dir, llm_stack, max_tokens=80)
    with serving(settings) as url:
        yield url


@pytest.fixture
def use_api(monkeypatch: pytest.MonkeyPatch, api_url: str) -> str:
    monkeypatch.setenv("KBQA_API_URL", api_url)
    monkeypatch.delenv("KBQA_UI_LANGUAGE", raising=False)
    return api_url


def app() -> AppTest:
    return AppTest.from_file(str(WEBUI), default_timeout=120).run()


def kb_page() -> AppTest:
    at = app()
    at.switch_page(KB_PAGE).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    """The elements' text as a reader sees it: Markdown backslash escapes removed."""
    return [re.sub(r"\\(.)", r"\1", str(element.value)) for element in getattr(at, kind)]


def wait_for(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 300) -> AppTest:
    """Rerun the page (as the progress fragment's timer would) until `done(at)`."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, f"timed out; errors: {texts(at, 'error')}"
        time.sleep(0.5)
        at.run()
    return at


@pytest.fixture(scope="module")
def knowledge_base(api_url: str) -> str:
    """Made through the UI once: create, upload (a fact, hostile text and an empty file), wait until ready."""
    os.environ["KBQA_API_URL"] = api_url
    try:
        at = kb_page()
        at.text_input[0].input(KB)
        at.button[0].click().run()  # the create form's submit button
        assert at.selectbox(key="kb_selected").value == KB
        at.file_uploader[0].set_value(
            [
                ("北辰九号.md", FACT.encode(), "text/markdown"),
                ("注意.txt", HOSTILE.encode(), "text/plain"),
                ("空白.txt", b"", "text/plain"),
            ]
        ).run()
        next(b for b in at.button if b.label == zh("kbs.upload_button")).click().run()
        assert not at.exception, at.exception
        assert any("空白.txt" in e and "empty" in e for e in texts(at, "error")), texts(at, "error")
        wait_for(at, lambda a: len(texts(a, "success")) == 2)
    finally:
        del os.environ["KBQA_API_URL"]
    return KB


def test_knowledge_base_page_lists_documents_and_shows_chunks_as_plain_text(use_api: str, knowledge_base: str) -> None:
    at = kb_page()
    table = at.dataframe[0].value
    assert sorted(table[zh("col.filename")]) == ["北辰九号.md", "注意.txt"]
    assert set(table[zh("col.status")]) == {zh("doc.ready")}
    assert [m.value for m in at.metric][:3] == ["2", "2", "2"]
    at.selectbox(key=f"doc_selected_{KB}").set_value(
        next(d["id"] for d in httpx.get(f"{use_api}/api/kbs/{KB}/documents").json() if d["filename"] == "注意.txt")
    ).run()
    at.toggle(key="show_chunks").set_value(True).run()
    shown = texts(at, "text")
    assert any("<script>window.__pwned = 1</script>" in text for text in shown), shown
    assert all("unsafe_allow_html" not in path.read_text() for path in (PROJECT_ROOT / "webui").rglob("*.py"))


def test_delete_document_and_knowledge_base_through_the_page(use_api: str, knowledge_base: str) -> None:
    other = "临时库"
    assert httpx.post(f"{use_api}/api/kbs", json={"name": other}).status_code == 201
    files = [("files", ("a.txt", "甲乙丙丁。".encode())), ("files", ("b.txt", "戊己庚辛。".encode()))]
    assert httpx.post(f"{use_api}/api/kbs/{other}/documents", files=files).status_code == 202
    at = kb_page()
    at.selectbox(key="kb_selected").set_value(other).run()
    wait_for(at, lambda a: bool(a.dataframe) and len(a.dataframe[0].value) == 2)
    at.button(key="delete_doc").click().run()
    assert len(httpx.get(f"{use_api}/api/kbs/{other}/documents").json()) == 1
    at.button(key="delete_kb").click().run()
    assert httpx.get(f"{use_api}/api/kbs/{other}").status_code == 200, "deleted without confirmation"
    assert any(other in w for w in texts(at, "warning"))
    at.button(key="confirm_delete_kb_button").click().run()
    assert httpx.get(f"{use_api}/api/kbs/{other}").status_code == 404
    assert httpx.get(f"{use_api}/api/kbs/{knowledge_base}").status_code == 200
    assert at.selectbox(key="kb_selected").value == knowledge_base


def ask(at: AppTest, mode: str, question: str, kbs: list[str] | None = None) -> AppTest:
    at.segmented_control(key="mode").set_value(mode).run()
    if kbs is not None:
        at.multiselect(key="selected_kbs").set_value(kbs).run()
    at.chat_input(key="question").set_value(question).run()
    assert not at.exception, at.exception
    return at


def test_retrieval_test_mode_shows_scored_hits_table_and_chart(use_api: str, knowledge_base: str) -> None:
    at = ask(app(), "kb_test", "北辰九号的主镜口径是多少？", [knowledge_base])
    table = at.dataframe[0].value
    scores = list(table[zh("hits.score")])
    assert table[zh("hits.file")][0] == "北辰九号.md"
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    assert len(at.get("vega_lite_chart")) == 1
    assert any(c.startswith(zh("chat.timings")) and zh("timing.retrieval_ms") in c for c in texts(at, "caption"))


def test_kb_mode_streams_an_answer_with_its_sources_and_exports_it(use_api: str, knowledge_base: str) -> None:
    at = ask(app(), "kb", "北辰九号探测器的主镜口径是多少？", [knowledge_base])
    message = at.session_state["messages"][-1]
    assert "三点七" in message["content"] or "3.7" in message["content"], message["content"]
    assert message["sources"][0]["file_name"] == "北辰九号.md"
    assert any(e.label == zh("chat.sources", n=len(message["sources"])) for e in at.expander)
    assert message["timings"]["first_token_ms"] > 0
    markdown = conversation_markdown(at.session_state["messages"], now=datetime(2026, 1, 2, 3, 4))
    assert markdown.startswith("# 对话记录 (2026-01-02 03:04)")
    assert "北辰九号探测器的主镜口径是多少？" in markdown and "[1] 北辰九号.md" in markdown
    assert message["content"].strip() in markdown

    # A reload loses the page's state; the conversation id in the URL brings the turns back from the server.
    reloaded = AppTest.from_file(str(WEBUI), default_timeout=120)
    reloaded.query_params["c"] = at.query_params["c"]
    reloaded.run()
    restored = reloaded.session_state["messages"]
    assert [m["role"] for m in restored] == ["user", "assistant"]
    assert restored[1]["content"] == message["content"] and restored[1]["sources"] == message["sources"]
    gone = AppTest.from_file(str(WEBUI), default_timeout=120)
    gone.query_params["c"] = "0" * 32
    gone.run()
    assert gone.session_state["messages"] == [] and "c" not in gone.query_params
    next(b for b in at.button if b.label == zh("chat.new")).click().run()
    assert at.session_state["messages"] == [] and at.session_state["conversation_id"] is None


def test_follow_up_is_rewritten_and_llm_mode_has_no_sources(use_api: str, knowledge_base: str) -> None:
    at = ask(app(), "llm", "用一句话介绍你自己。")
    first = at.session_state["messages"][-1]
    assert first["content"].strip() and first["sources"] == []
    at = ask(at, "kb", "北辰九号是谁研制的？", [knowledge_base])
    assert "岚山" in at.session_state["messages"][-1]["content"]
    at = ask(at, "kb", "它的主镜口径呢？")
    follow_up = at.session_state["messages"][-1]
    assert follow_up["rewritten_question"] and follow_up["rewritten_question"] != "它的主镜口径呢？"
    assert any(c.startswith(zh("chat.rewritten", question="")) for c in texts(at, "caption"))


def test_mode_switch_keeps_the_picked_knowledge_bases(use_api: str, knowledge_base: str) -> None:
    at = app()
    at.segmented_control(key="mode").set_value("kb").run()
    at.multiselect(key="selected_kbs").set_value([knowledge_base]).run()
    at.segmented_control(key="mode").set_value("llm").run()
    assert at.multiselect(key="selected_kbs").disabled
    at.segmented_control(key="mode").set_value("kb_test").run()
    assert at.multiselect(key="selected_kbs").value == [knowledge_base]


def test_each_retrieval_mode_keeps_its_own_top_k(use_api: str) -> None:
    """知识库问答 starts at the chunks the API gives its prompt (chat.kb_top_k), 知识库测试 at retrieval.default_top_k;
    what the user picks stays with its mode."""
    limits = httpx.get(f"{use_api}/api/status").json()["limits"]
    assert limits["kb_top_k"] != limits["default_top_k"]
    at = app()
    at.segmented_control(key="mode").set_value("kb").run()
    assert at.slider(key="top_k").value == limits["kb_top_k"]
    at.segmented_control(key="mode").set_value("kb_test").run()
    assert at.slider(key="top_k").value == limits["default_top_k"]
    at.slider(key="top_k").set_value(7).run()
    at.segmented_control(key="mode").set_value("llm").run()
    at.segmented_control(key="mode").set_value("kb").run()
    assert at.slider(key="top_k").value == limits["kb_top_k"]
    at.segmented_control(key="mode").set_value("kb_test").run()
    assert at.slider(key="top_k").value == 7
    assert not at.exception, at.exception


def test_chinese_by_default_english_by_setting(use_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-page switch is exercised in the browser test: AppTest keeps a widget's first format_func, so it
    cannot follow labels that change language mid-session."""
    at = app()
    assert at.segmented_control(key="mode").options == [zh("mode.llm"), zh("mode.kb"), zh("mode.kb_test")]
    monkeypatch.setenv("KBQA_UI_LANGUAGE", "en")
    at = app()
    assert at.segmented_control(key="lang").value == "en"
    assert at.segmented_control(key="mode").options == ["LLM chat", "KB Q&A", "Retrieval test"]
    at.switch_page(KB_PAGE).run()
    assert at.title[0].value == "Knowledge bases"


def test_unreachable_api_gets_a_message_on_both_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KBQA_API_URL", url)
    at = app()
    assert not at.exception
    assert texts(at, "error") == [zh("err.api_unreachable", url=url)]
    at.switch_page(KB_PAGE).run()
    assert not at.exception
    assert texts(at, "error") == [zh("err.api_unreachable", url=url)]


@pytest.fixture(scope="module")
def api_without_llm(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[str]:
    settings = make_settings(
        tmp_path_factory.mktemp("webui-no-llm"), embedding_model_dir, llm__base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    with serving(settings) as url:
        httpx.post(f"{url}/api/kbs", json={"name": KB}).raise_for_status()
        httpx.post(f"{url}/api/kbs/{KB}/documents", files=[("files", ("f.md", FACT.encode()))]).raise_for_status()
        yield url


def test_llm_down_is_explained_and_retrieval_test_still_works(
    monkeypatch: pytest.MonkeyPatch, api_without_llm: str
) -> None:
    monkeypatch.setenv("KBQA_API_URL", api_without_llm)
    at = app()
    assert zh("err.llm_down") in texts(at, "warning")
    at = ask(at, "llm", "你好")
    assert zh("err.llm_down") in texts(at, "error")
    at = ask(at, "kb", "主镜口径？", [KB])
    assert zh("err.llm_down") in texts(at, "error")
    deadline = time.monotonic() + 120
    while httpx.get(f"{api_without_llm}/api/kbs/{KB}").json()["ready_count"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    at = ask(at, "kb_test", "北辰九号的主镜口径是多少？")
    assert at.dataframe[0].value[zh("hits.file")][0] == "f.md"


def test_the_ui_imports_nothing_from_the_backend() -> None:
    sources = [WEBUI, *(PROJECT_ROOT / "webui").rglob("*.py"), *(PROJECT_ROOT / "kbqa_client").rglob("*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "app" or n.startswith("app.") for n in names), f"{path} imports the backend: {names}"


def test_retrieval_test_area_runs_an_evaluation_and_shows_its_report(use_api: str, knowledge_base: str) -> None:
    questions = [
        {"question": "北辰九号探测器的主镜口径是多少？", "file_name": "北辰九号.md", "source": "手册"},
        {"question": "岚山光学研究所研制了什么？", "file_name": "北辰九号.md", "source": "手册"},
        {"question": "哪段文字提到了粗体和脚本？", "file_name": "注意.txt", "source": "注意"},
    ]
    jsonl = "\n".join(json.dumps(q, ensure_ascii=False) for q in questions).encode()
    at = app()
    at.segmented_control(key="mode").set_value("kb_test").run()
    at.selectbox(key="eval_kb").set_value(knowledge_base)
    at.multiselect(key="eval_modes").set_value(["hybrid", "bm25"])
    at.file_uploader(key="eval_file").set_value(("q.jsonl", jsonl, "application/jsonl")).run()
    next(b for b in at.button if b.label == zh("eval.start")).click().run()
    assert not at.exception and not texts(at, "error"), texts(at, "error")
    wait_for(at, lambda a: any(s.startswith("完成：3 个问题") for s in texts(a, "success")), timeout=120)
    summary = at.dataframe[0].value
    assert list(summary[zh("eval.col.run")]) == ["混合（向量+BM25） @500", "关键词 BM25 @500"]
    job = httpx.get(f"{use_api}/api/eval/jobs/{at.session_state['eval_job']}").json()
    assert list(summary["recall@5"]) == [run["overall"]["recall_at_5"] for run in job["report"]["runs"]]
    assert any(m.label == zh("eval.threshold") for m in at.metric)
    assert sorted(set(at.dataframe[1].value[zh("eval.col.source")])) == ["手册", "注意"]
    assert any(b.label == zh("eval.download") for b in at.get("download_button"))


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[str]:
    settings = make_settings(
        tmp_path_factory.mktemp("webui-keys"),
        embedding_model_dir,
        security__api_keys=["ui-key-1"],
        llm__base_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    with serving(settings) as url:
        yield url


def test_the_ui_sends_its_key_and_explains_a_refused_one(monkeypatch: pytest.MonkeyPatch, keyed_api: str) -> None:
    monkeypatch.setenv("KBQA_API_URL", keyed_api)
    monkeypatch.setenv("KBQA_CLIENT_API_KEY", "wrong")
    at = app()
    assert texts(at, "error") == [zh("err.unauthorized")]
    monkeypatch.setenv("KBQA_CLIENT_API_KEY", "ui-key-1")
    at = kb_page()
    assert not texts(at, "error")
    hostile = "质量?#%报告 & <b>"  # characters that must survive URLs and Markdown
    at.text_input[0].input(hostile)
    at.button[0].click().run()
    assert at.selectbox(key="kb_selected").value == hostile
    assert texts(at, "info") == [zh("kbs.no_documents")]
    headers = {"Authorization": "Bearer ui-key-1"}
    assert httpx.get(f"{keyed_api}/api/kbs", headers=headers).json()[0]["name"] == hostile


SCAN_KB = "扫描库"


@pytest.fixture(scope="module")
def api_with_a_scan(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[tuple[str, dict]]:
    """An API without an LLM holding a PDF of a text page, a scanned page and a blank scan, read; every page read
    is recorded at once (no interval)."""
    if shutil.which("tesseract") is None:
        pytest.skip("OCR needs Tesseract: bash scripts/setup.sh")
    folder = tmp_path_factory.mktemp("webui-scan")
    settings = make_settings(
        folder / "data",
        embedding_model_dir,
        llm__base_url=f"http://127.0.0.1:{free_port()}/v1",
        ocr__progress_interval_s=0,
    )
    scan = fo.render_text([fo.ZH_MIXED_SENTENCE]).image
    pages = ["第一页有文字层：" + fo.ZH_PARAGRAPHS[4], scan, Image.new("L", scan.size, 255)]
    pdf = fo.pages_pdf(pages, folder / "三页.pdf")
    with serving(settings) as url:
        httpx.post(f"{url}/api/kbs", json={"name": SCAN_KB}).raise_for_status()
        sent = httpx.post(f"{url}/api/kbs/{SCAN_KB}/documents", files=[("files", (pdf.name, pdf.read_bytes()))])
        doc_id = sent.json()[0]["document"]["id"]
        wait_until(lambda: httpx.get(f"{url}/api/kbs/{SCAN_KB}/documents/{doc_id}").json()["status"] == "ready", "OCR")
        yield url, httpx.get(f"{url}/api/kbs/{SCAN_KB}/documents/{doc_id}").json()


def test_the_document_list_says_how_each_document_was_read_and_chunks_mark_ocr(
    monkeypatch: pytest.MonkeyPatch, api_with_a_scan: tuple[str, dict]
) -> None:
    url, doc = api_with_a_scan
    monkeypatch.setenv("KBQA_API_URL", url)
    at = kb_page()
    confidence = doc["reading"]["ocr_confidence"]
    expected = f"文本层 1 页 · OCR 1 页（置信度 {confidence:.2f}） · 无内容 1 页"
    assert list(at.dataframe[0].value[zh("col.reading")]) == [expected]
    at.toggle(key="show_chunks").set_value(True).run()
    captions = [c for c in texts(at, "caption") if c.startswith("分块 #")]
    assert captions == ["分块 #0 · 第 1 页", "分块 #1 · 第 2 页 · OCR"], captions


def test_the_retrieval_test_marks_hits_read_by_ocr(
    monkeypatch: pytest.MonkeyPatch, api_with_a_scan: tuple[str, dict]
) -> None:
    monkeypatch.setenv("KBQA_API_URL", api_with_a_scan[0])
    table = ask(app(), "kb_test", fo.ZH_MIXED_SENTENCE, [SCAN_KB]).dataframe[0].value
    assert (table[zh("hits.page")][0], table[zh("hits.ocr")][0]) == ("2", "OCR")
    assert "OCR" not in set(table[zh("hits.ocr")][table[zh("hits.page")] == "1"])


def test_the_document_list_shows_ocr_progress_page_by_page(
    monkeypatch: pytest.MonkeyPatch, api_with_a_scan: tuple[str, dict], tmp_path: Path
) -> None:
    url = api_with_a_scan[0]
    monkeypatch.setenv("KBQA_API_URL", url)
    pages = [fo.render_text([fo.ZH_PARAGRAPHS[n % 6]]).image for n in range(12)]
    pdf = fo.image_only_pdf(pages, tmp_path / "十二页.pdf")
    sent = httpx.post(f"{url}/api/kbs/{SCAN_KB}/documents", files=[("files", (pdf.name, pdf.read_bytes()))])
    doc_id = sent.json()[0]["document"]["id"]

    def reading_row(at: AppTest) -> tuple[float, str] | None:
        table = at.dataframe[0].value
        row = table[table[zh("col.filename")] == pdf.name]
        how = str(row[zh("col.reading")].iloc[0]) if len(row) else ""
        return (float(row[zh("col.progress")].iloc[0]), how) if how.startswith("读取第") else None

    at = wait_for(kb_page(), lambda a: reading_row(a) is not None)
    progress, how = reading_row(at)  # type: ignore[misc]
    done = int(re.fullmatch(r"读取第 (\d+)/12 页", how).group(1))  # type: ignore[union-attr]
    assert 0 < done < 12 and progress == pytest.approx(done / 12)
    assert httpx.delete(f"{url}/api/kbs/{SCAN_KB}/documents/{doc_id}").status_code == 204
