"""Sources seen in the original: the uploaded file, a chunk with its neighbours, PDF pages rendered with the chunk's
lines highlighted (text layer and OCR), the bounded page cache, and the links hits and sources carry. Real PDFs
generated with fpdf2, the real API (Milvus Lite, the real embedding model)."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import pypdfium2
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader, PdfWriter
from streamlit.testing.v1 import AppTest

from app.api.main import create_app
from app.chat.models import Source
from app.kb.preview.cache import PageCache
from app.kb.preview.locate import Box
from app.kb.preview.pdf_pages import RenderedPage
from app.settings import PROJECT_ROOT
from kbqa_client import KbqaClient
from tests.conftest import create_kb, make_settings, upload_ready, wait_until
from tests.fixtures_docs import make_landscape_pdf, make_pages_pdf
from tests.fixtures_ocr import (
    EN_PICTURE_SENTENCE,
    ZH_PARAGRAPHS,
    ZH_PICTURE_SENTENCE,
    ZH_PNG_SENTENCE,
    full_page,
    mixed_pdf,
    normalized,
    picture,
)
from tests.live_api import serving
from webui.i18n import TEXTS
from webui.preview import highlighted

PAGE1 = "第一页：季度概况。本季度共处理了一千二百份申请，平均审批时间为三天。"
SENTENCE = "The Quillfeather bridge was painted teal in 1931 by the harbour board, and it still carries two lanes."
FIRST_WORDS = "The Quillfeather bridge was painted"  # on the sentence's first line
PDF_NAME = "季度报告.pdf"
CACHE_MB = 0.15  # room for two page images of about 60-75 KB: a third evicts the least recently shown
MARKDOWN = "# 设备手册\n\n## 第二章 维护\n\n" + "\n\n".join(
    f"第{n}段：维护记录编号{n:03d}，检查了第{n}号泵的密封圈与轴承，结果正常。" for n in range(1, 9)
)
UI_MARKDOWN = (
    "# 设备手册\n\n## 第二章 维护\n\n"
    "第三号泵的密封圈检查结果：正常 `<script>alert(1)</script>` 与 **<img src=x onerror=alert(2)>**。\n\n"
    "第四号泵的轴承需要更换。"
)
SHEET_KB = "表格库"
PICTURE_KB = "图片界面库"
STAFF = [
    ("张三", "销售部", "1001"),
    ("李四", "财务部", "1002"),
    ("王五", "研发部", "1003"),
    ("赵六", "法务部", "1004"),
    ("钱七", "采购部", "1005"),
    ("孙八", "后勤部", "1006"),
    ("周九", "市场部", "1007"),
    ("吴十", "客服部", "1008"),
]
STAFF_CSV = ("姓名,部门,工号\n" + "".join(f"{','.join(row)}\n" for row in STAFF)).encode()
HOSTILE_HTML = (
    "<html><body><h1>告示</h1><p>原文写着 &lt;script&gt;alert(1)&lt;/script&gt; 这几个字。</p>"
    '<img src="x" onerror="alert(2)"><script>alert(3)</script><p>第二段正文内容。</p></body></html>'
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("preview"), embedding_model_dir, preview__cache_mb=CACHE_MB)
    with TestClient(create_app(settings)) as test_client:
        create_kb(test_client, "原文库")
        yield test_client


@pytest.fixture(scope="module")
def pdf(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = make_pages_pdf(tmp_path_factory.mktemp("pdf"), "two_pages.pdf", [PAGE1, SENTENCE])
    doc = upload_ready(client, "原文库", (PDF_NAME, path.read_bytes()))[0]
    assert doc["status"] == "ready" and doc["pages"] == 2, doc
    return doc | {"bytes": path.read_bytes(), "path": path}


def _base(doc: dict, kb: str = "原文库") -> str:
    return f"/api/kbs/{kb}/documents/{doc['id']}"


def _chunk_on(client: TestClient, doc: dict, page: int) -> dict:
    chunks = client.get(f"{_base(doc)}/chunks").json()
    return next(c for c in chunks if c["page"] == page)


def _services(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.services  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------- the original file


def test_download_returns_the_exact_bytes_under_the_chinese_name(client: TestClient, pdf: dict) -> None:
    response = client.get(f"{_base(pdf)}/file")
    assert response.status_code == 200
    assert response.content == pdf["bytes"]
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("inline;")
    assert f"filename*=UTF-8''{quote(PDF_NAME, safe='')}" in disposition
    assert 'filename="document.pdf"' in disposition  # the ASCII fallback of a name with no ASCII letters
    forced = client.get(f"{_base(pdf)}/file", params={"download": "true"})
    assert forced.headers["content-disposition"].startswith("attachment;") and forced.content == pdf["bytes"]


def test_html_is_an_attachment_and_its_context_comes_back_as_text(client: TestClient) -> None:
    doc = upload_ready(client, "原文库", ("告示.html", HOSTILE_HTML.encode()))[0]
    assert doc["status"] == "ready", doc
    served = client.get(f"{_base(doc)}/file")
    assert served.content == HOSTILE_HTML.encode()
    assert served.headers["content-type"] == "text/html"
    assert served.headers["content-disposition"].startswith("attachment;")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]

    context = client.get(f"{_base(doc)}/chunks/0")
    assert context.status_code == 200 and context.headers["content-type"] == "application/json"
    body = context.json()
    assert body["kind"] == "text" and body["page_image_url"] is None
    assert "<script>alert(1)</script>" in body["chunk"]["text"]  # the document's words, as text
    assert "onerror" not in body["chunk"]["text"] and "alert(3)" not in body["chunk"]["text"]


# --------------------------------------------------------------------------------------------- chunk context


def test_chunk_context_holds_the_neighbours_asked_for(client: TestClient) -> None:
    create_kb_small = client.post("/api/kbs", json={"name": "上下文", "chunk_size": 60, "chunk_overlap": 0})
    assert create_kb_small.status_code == 201, create_kb_small.text
    doc = upload_ready(client, "上下文", ("手册.md", MARKDOWN.encode()))[0]
    assert doc["chunk_count"] >= 5, doc
    base = _base(doc, "上下文")

    body = client.get(f"{base}/chunks/2", params={"before": 1, "after": 2}).json()
    assert body["chunk"]["chunk_index"] == 2 and "第二章 维护" in body["chunk"]["heading"]
    assert [c["chunk_index"] for c in body["before"]] == [1]
    assert [c["chunk_index"] for c in body["after"]] == [3, 4]
    assert body["kind"] == "text" and body["file_name"] == "手册.md"
    assert body["file_url"] == f"/api/kbs/{quote('上下文')}/documents/{doc['id']}/file"

    first = client.get(f"{base}/chunks/0", params={"before": 3, "after": 0}).json()
    assert first["before"] == [] and first["after"] == []
    last = doc["chunk_count"] - 1
    assert client.get(f"{base}/chunks/{last}", params={"after": 5}).json()["after"] == []

    assert client.get(f"{base}/chunks/2", params={"before": 11}).status_code == 422
    missing = client.get(f"{base}/chunks/{doc['chunk_count']}")
    assert missing.status_code == 404 and f"has {doc['chunk_count']} chunks" in missing.json()["detail"]


def test_pdf_chunk_context_links_its_highlighted_page(client: TestClient, pdf: dict) -> None:
    chunk = _chunk_on(client, pdf, 2)
    body = client.get(f"{_base(pdf)}/chunks/{chunk['chunk_index']}").json()
    assert body["kind"] == "pdf_page" and body["pages"] == 2
    assert body["page_image_url"] == (
        f"/api/kbs/{quote('原文库')}/documents/{pdf['id']}/pages/2.png?chunk={chunk['chunk_index']}"
    )
    assert client.get(body["page_image_url"]).headers["content-type"] == "image/png"


# --------------------------------------------------------------------------------------------- page images


def _sentence_boxes(path: Path, page: int, sentence: str) -> list[Box]:
    """pypdfium2's own boxes of the sentence's characters, from the page's top-left corner, in points."""
    document = pypdfium2.PdfDocument(path)
    try:
        pdf_page = document[page - 1]
        height = pdf_page.get_height()
        textpage = pdf_page.get_textpage()
        searcher = textpage.search(sentence, match_case=True)
        start, count = searcher.get_next()
        searcher.close()
        boxes = []
        for index in range(start, start + count):
            left, bottom, right, top = textpage.get_charbox(index)
            if right > left:
                boxes.append(Box(left, height - top, right, height - bottom))
        return boxes
    finally:
        document.close()


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_highlight_boxes_lie_on_the_text_of_the_chunk(client: TestClient, pdf: dict) -> None:
    chunk = _chunk_on(client, pdf, 2)
    assert SENTENCE in chunk["text"]
    stored = _services(client).knowledge_bases.stored_document("原文库", pdf["id"])
    rendered = _services(client).previews.pages.render(stored.path, 2, chunk["text"])
    assert rendered.found == "text_layer" and rendered.boxes

    glyphs = _sentence_boxes(pdf["path"], 2, FIRST_WORDS)
    assert len(glyphs) >= 20
    for glyph in glyphs:  # every character of the sentence lies in a highlight box
        x, y = (glyph.left + glyph.right) / 2, (glyph.top + glyph.bottom) / 2
        assert any(b.left <= x <= b.right and b.top <= y <= b.bottom for b in rendered.boxes), glyph
    text_top = min(g.top for g in glyphs) - 6
    text_bottom = max(g.bottom for g in glyphs) + 30  # the sentence's second line (8 mm = 22.7 pt lower)
    for box in rendered.boxes:  # and no box strays from the text
        assert text_top <= box.top and box.bottom <= text_bottom, box

    marked = client.get(f"{_base(pdf)}/pages/2.png", params={"chunk": chunk["chunk_index"]})
    plain = client.get(f"{_base(pdf)}/pages/2.png")
    assert marked.headers["x-highlight"] == "text_layer" and "x-highlight" not in plain.headers
    diff = np.abs(_image(marked.content) - _image(plain.content)).sum(axis=2) > 0
    inside = np.zeros_like(diff)
    near = np.zeros_like(diff)
    for box in rendered.boxes:
        left, top = int(box.left * rendered.scale), int(box.top * rendered.scale)
        right, bottom = int(box.right * rendered.scale), int(box.bottom * rendered.scale)
        inside[top + 3 : bottom - 2, left + 3 : right - 2] = True
        near[max(top - 3, 0) : bottom + 4, max(left - 3, 0) : right + 4] = True
    assert diff[inside].mean() > 0.9  # the box is tinted
    assert not diff[~near].any()  # and nothing else on the page changed


def _rotated(path: Path, page: int, degrees: int) -> Path:
    """A copy of the PDF whose page `page` carries /Rotate `degrees` (its content left as drawn)."""
    writer = PdfWriter(clone_from=PdfReader(path))
    writer.pages[page - 1].rotate(degrees)
    turned = path.with_name(f"{path.stem}-rotate{degrees}.pdf")
    with turned.open("wb") as handle:
        writer.write(handle)
    return turned


@pytest.fixture(scope="module")
def turned_kb(client: TestClient) -> str:
    """The rotated PDFs' own knowledge base: their copies of SENTENCE stay out of 原文库's searches."""
    return create_kb(client, "转页库")["name"]


@pytest.mark.parametrize(("degrees", "landscape"), [(0, False), (90, False), (180, False), (270, False), (90, True)])
def test_highlight_boxes_turn_with_a_rotated_page(
    client: TestClient, turned_kb: str, tmp_path: Path, degrees: int, landscape: bool
) -> None:
    """/Rotate turns the rendered page, not the text layer's boxes; a landscape page (text drawn turned, /Rotate
    setting it upright) reads across as shown, a plain page turned by /Rotate reads down or up."""
    if landscape:
        path = make_landscape_pdf(tmp_path, "landscape.pdf", [PAGE1, SENTENCE])
    else:
        path = _rotated(make_pages_pdf(tmp_path, "turned.pdf", [PAGE1, SENTENCE]), 2, degrees)
    doc = upload_ready(client, turned_kb, (f"转{degrees}{'横' if landscape else ''}.pdf", path.read_bytes()))[0]
    assert doc["status"] == "ready", doc
    chunk = next(c for c in client.get(f"{_base(doc, turned_kb)}/chunks").json() if c["page"] == 2)
    assert SENTENCE in chunk["text"]
    marked = client.get(f"{_base(doc, turned_kb)}/pages/2.png", params={"chunk": chunk["chunk_index"]})
    assert marked.headers["x-highlight"] == "text_layer"
    stored = _services(client).knowledge_bases.stored_document(turned_kb, doc["id"])
    rendered = _services(client).previews.pages.render(stored.path, 2, chunk["text"])
    assert rendered.png == marked.content and rendered.boxes

    plain = client.get(f"{_base(doc, turned_kb)}/pages/2.png").content  # page 2 holds SENTENCE only
    width, height = Image.open(io.BytesIO(plain)).size
    assert (width > height) == (degrees in (90, 270))  # rendered as a viewer shows it
    assert _ink_in_boxes(plain, rendered) > 0.98
    assert len(rendered.boxes) == 2  # the sentence's two lines, each one box


def _ink_in_boxes(plain: bytes, rendered: RenderedPage) -> float:
    """The share of the page's ink (its dark pixels, unmarked) that lies in the highlight boxes, after checking
    that every box lies on some."""
    ink = _image(plain).sum(axis=2) < 3 * 128
    covered = np.zeros_like(ink)
    for box in rendered.boxes:
        left, top, right, bottom = (round(v * rendered.scale) for v in (box.left, box.top, box.right, box.bottom))
        assert ink[max(top, 0) : bottom, max(left, 0) : right].any(), box
        covered[max(top, 0) : bottom, max(left, 0) : right] = True
    assert ink.sum() > 500
    return float(ink[covered].sum() / ink.sum())


def test_a_scanned_page_is_highlighted_from_the_ocr_word_boxes(
    client: TestClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = mixed_pdf(PAGE1, full_page("zh").image, tmp_path_factory.mktemp("scan") / "scan.pdf")
    doc = upload_ready(client, "原文库", ("扫描件.pdf", path.read_bytes()))[0]
    assert doc["status"] == "ready", doc
    chunk = next(c for c in client.get(f"{_base(doc)}/chunks").json() if c["page"] == 2)
    stored = _services(client).knowledge_bases.stored_document("原文库", doc["id"])
    rendered = _services(client).previews.pages.render(stored.path, 2, chunk["text"])
    assert rendered.found == "ocr" and rendered.boxes
    # The page's first paragraph starts 1 inch from the top and the left (fixtures_ocr.render_text's margins).
    assert min(b.top for b in rendered.boxes) == pytest.approx(72, abs=12)
    assert min(b.left for b in rendered.boxes) == pytest.approx(72, abs=12)
    response = client.get(f"{_base(doc)}/pages/2.png", params={"chunk": chunk["chunk_index"]})
    assert response.status_code == 200 and response.headers["x-highlight"] == "ocr"
    assert ZH_PARAGRAPHS[0][:6] in chunk["text"]


@pytest.fixture(scope="module")
def picture_kb(client: TestClient) -> str:
    return create_kb(client, "图片库")["name"]


def test_a_picture_is_served_with_its_ocr_words_highlighted(client: TestClient, picture_kb: str) -> None:
    notice = picture(ZH_PNG_SENTENCE)
    png = io.BytesIO()
    notice.image.save(png, format="PNG")
    doc = upload_ready(client, picture_kb, ("告示.png", png.getvalue()))[0]
    assert doc["status"] == "ready" and doc["pages"] == 1, doc
    context = client.get(f"{_base(doc, picture_kb)}/chunks/0").json()
    assert context["kind"] == "picture" and context["chunk"]["page"] is None
    assert context["page_image_url"] == f"/api/kbs/{quote(picture_kb)}/documents/{doc['id']}/pages/1.png?chunk=0"

    marked = client.get(context["page_image_url"])
    assert marked.status_code == 200 and marked.headers["x-highlight"] == "ocr"
    plain = client.get(f"{_base(doc, picture_kb)}/pages/1.png")
    assert Image.open(io.BytesIO(plain.content)).size == notice.image.size and "x-highlight" not in plain.headers
    stored = _services(client).knowledge_bases.stored_document(picture_kb, doc["id"])
    rendered = _services(client).previews.pictures.render(stored.path, 1, context["chunk"]["text"])
    assert rendered.png == marked.content and rendered.found == "ocr"
    assert _ink_in_boxes(plain.content, rendered) > 0.9  # OCR's word boxes, shared among the characters

    beyond = client.get(f"{_base(doc, picture_kb)}/pages/2.png")
    assert beyond.status_code == 404 and "the picture has 1 pages" in beyond.json()["detail"]


def test_a_multi_page_tiff_is_served_page_by_page(client: TestClient, picture_kb: str) -> None:
    first, third = picture(EN_PICTURE_SENTENCE), picture(ZH_PICTURE_SENTENCE)
    tiff = io.BytesIO()
    first.image.save(tiff, format="TIFF", save_all=True, append_images=[Image.new("L", (600, 300), 255), third.image])
    doc = upload_ready(client, picture_kb, ("传真.tiff", tiff.getvalue()))[0]
    assert doc["status"] == "ready" and doc["pages"] == 3, doc
    chunk = next(c for c in client.get(f"{_base(doc, picture_kb)}/chunks").json() if c["page"] == 3)
    assert "仓库的温度" in normalized(chunk["text"])  # OCR may misread a character elsewhere
    context = client.get(f"{_base(doc, picture_kb)}/chunks/{chunk['chunk_index']}").json()
    assert context["page_image_url"].endswith(f"/pages/3.png?chunk={chunk['chunk_index']}")

    marked = client.get(context["page_image_url"])
    assert marked.status_code == 200 and marked.headers["x-highlight"] == "ocr"
    plain = client.get(f"{_base(doc, picture_kb)}/pages/3.png").content
    stored = _services(client).knowledge_bases.stored_document(picture_kb, doc["id"])
    rendered = _services(client).previews.pictures.render(stored.path, 3, chunk["text"])
    assert rendered.png == marked.content
    assert _ink_in_boxes(plain, rendered) > 0.9
    assert _image(client.get(f"{_base(doc, picture_kb)}/pages/2.png").content).min() == 255  # the blank page
    wrong = client.get(f"{_base(doc, picture_kb)}/pages/1.png", params={"chunk": chunk["chunk_index"]})
    assert wrong.status_code == 422 and "not on page 1" in wrong.json()["detail"]


def test_pages_out_of_range_and_mismatched_chunks_are_refused_clearly(client: TestClient, pdf: dict) -> None:
    beyond = client.get(f"{_base(pdf)}/pages/3.png")
    assert beyond.status_code == 404
    assert "page 3 does not exist: the PDF has 2 pages" in beyond.json()["detail"]
    assert client.get(f"{_base(pdf)}/pages/0.png").status_code == 422
    on_page_one = _chunk_on(client, pdf, 1)
    wrong = client.get(f"{_base(pdf)}/pages/2.png", params={"chunk": on_page_one["chunk_index"]})
    assert wrong.status_code == 422 and "not on page 2" in wrong.json()["detail"]
    markdown = upload_ready(client, "原文库", ("说明.md", "# 说明\n\n不是 PDF 的文档没有页面图片。".encode()))[0]
    not_pdf = client.get(f"{_base(markdown)}/pages/1.png")
    assert not_pdf.status_code == 404 and "PDF documents and pictures only" in not_pdf.json()["detail"]


def test_the_page_cache_stays_within_its_bound(client: TestClient, pdf: dict) -> None:
    cache = _services(client).previews.cache
    chunk = _chunk_on(client, pdf, 2)["chunk_index"]
    asked = [(1, None), (2, None), (2, chunk), (1, None)]
    for page, marked in asked:
        params = {} if marked is None else {"chunk": marked}
        assert client.get(f"{_base(pdf)}/pages/{page}.png", params=params).status_code == 200
        assert cache.size_bytes <= CACHE_MB * 1024 * 1024
    kept = sorted(p.name for p in cache.folder.iterdir())
    assert len(kept) >= 1 and any(name.endswith("-p1-plain-4000000.png") for name in kept), kept
    again = client.get(f"{_base(pdf)}/pages/1.png")
    assert again.content == (cache.folder / f"{pdf['id']}-p1-plain-4000000.png").read_bytes()


def test_the_least_recently_shown_image_goes_first(tmp_path: Path) -> None:
    cache = PageCache(tmp_path / "pages", max_bytes=250)
    cache.put("a.png", b"a" * 100)
    cache.put("b.png", b"b" * 100)
    past = time.time() - 60
    os.utime(tmp_path / "pages" / "a.png", (past, past))
    os.utime(tmp_path / "pages" / "b.png", (past - 1, past - 1))
    assert cache.get("b.png") == b"b" * 100  # shown again: now the most recent
    cache.put("c.png", b"c" * 100)
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == ["b.png", "c.png"]
    assert cache.size_bytes == 200
    cache.put("huge.png", b"h" * 251)  # larger than the whole cache: not kept, nothing evicted for it
    assert cache.get("huge.png") is None and cache.size_bytes == 200


def test_a_full_cache_trims_to_its_low_water_mark_so_writes_rarely_scan(tmp_path: Path) -> None:
    trims = []

    class Counted(PageCache):
        def trim(self) -> None:
            trims.append(1)
            super().trim()

    cache = Counted(tmp_path / "pages", max_bytes=1000)
    for n in range(40):
        cache.put(f"{n:02d}.png", bytes([n]) * 50)
        assert cache.size_bytes <= 1000
    # The first write scans (nothing known yet); past the bound (write 21), a trim to 900 bytes leaves room for two
    # more writes: 21, 24, ..., 39 trim, not all 20 writes past the bound.
    assert len(trims) == 1 + len(range(21, 41, 3))
    assert sorted(p.name for p in cache.folder.iterdir())[-1] == "39.png"


# --------------------------------------------------------------------------------------------- deletion, links


def test_a_deleted_documents_previews_are_404_and_its_pages_leave_the_cache(
    client: TestClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = make_pages_pdf(tmp_path_factory.mktemp("gone"), "gone.pdf", ["即将删除的文档。" * 4])
    doc = upload_ready(client, "原文库", ("删除.pdf", path.read_bytes()))[0]
    assert client.get(f"{_base(doc)}/pages/1.png").status_code == 200
    cache = _services(client).previews.cache
    assert list(cache.folder.glob(f"{doc['id']}-*"))
    assert client.delete(_base(doc)).status_code == 204
    for suffix in ("/file", "/chunks/0", "/pages/1.png"):
        response = client.get(_base(doc) + suffix)
        assert response.status_code == 404 and doc["id"] in response.json()["detail"], suffix
    assert not list(cache.folder.glob(f"{doc['id']}-*"))


def test_search_hits_and_chat_sources_link_their_preview(client: TestClient, pdf: dict) -> None:
    hits = client.post("/api/kbs/原文库/search", json={"question": "Quillfeather bridge teal", "top_k": 3}).json()
    hit = next(h for h in hits["hits"] if h["doc_id"] == pdf["id"])
    assert hit["preview_url"] == f"/api/kbs/{quote('原文库')}/documents/{pdf['id']}/chunks/{hit['chunk_index']}"
    assert client.get(hit["preview_url"]).json()["chunk"]["text"] == hit["text"]

    body = {"question": "Quillfeather bridge teal", "mode": "kb_test", "kb_names": ["原文库"], "stream": False}
    sources = client.post("/api/chat", json=body).json()["sources"]
    assert any(s["preview_url"] == hit["preview_url"] for s in sources)
    source = Source(doc_id="d1", file_name="x.pdf", chunk_index=3, page=1, text="t", number=1, kb_name="a/b", score=1)
    assert source.model_dump()["preview_url"] == "/api/kbs/a%2Fb/documents/d1/chunks/3"  # what the OpenAI door sends


def test_previews_need_the_api_key_when_keys_are_set(tmp_path: Path, embedding_model_dir: Path) -> None:
    settings = make_settings(tmp_path, embedding_model_dir, security__api_keys=["preview-key"])
    with TestClient(create_app(settings)) as keyed:
        for suffix in ("/file", "/chunks/0", "/pages/1.png"):
            path = "/api/kbs/库/documents/0123456789abcdef0123456789abcdef" + suffix
            assert keyed.get(path).status_code == 401, suffix
            allowed = keyed.get(path, headers={"Authorization": "Bearer preview-key"})
            assert allowed.status_code == 404 and allowed.json()["code"] == "kb_not_found", suffix


# --------------------------------------------------------------------------------------------- the web UI


@pytest.fixture(scope="module")
def served_api(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[str]:
    """An API over HTTP for the web UI (知识库测试 needs no LLM), holding the two-page PDF and a hostile Markdown
    file."""
    settings = make_settings(tmp_path_factory.mktemp("preview-ui"), embedding_model_dir)
    with serving(settings) as url:
        api = KbqaClient(url)
        api.create_knowledge_base("界面库")
        pdf = make_pages_pdf(tmp_path_factory.mktemp("ui-pdf"), "ui.pdf", [PAGE1, SENTENCE]).read_bytes()
        api.create_knowledge_base(SHEET_KB, chunk_size=60, chunk_overlap=0)  # two rows a chunk
        api.create_knowledge_base(PICTURE_KB)
        notice = io.BytesIO()
        picture(ZH_PNG_SENTENCE).image.save(notice, format="PNG")
        uploads = [
            ("界面库", PDF_NAME, pdf),
            ("界面库", "注意.md", UI_MARKDOWN.encode()),
            (SHEET_KB, "员工.csv", STAFF_CSV),
            (PICTURE_KB, "告示.png", notice.getvalue()),
        ]
        for kb, name, data in uploads:
            doc_id = api.upload(kb, name, data)["document"]["id"]
            wait_until(lambda k=kb, d=doc_id: api.document(k, d)["status"] == "ready", f"{name} to be indexed")
        api.close()
        yield url


def _ask_in_retrieval_test(url: str, monkeypatch: pytest.MonkeyPatch, question: str) -> AppTest:
    monkeypatch.setenv("KBQA_API_URL", url)
    monkeypatch.delenv("KBQA_UI_LANGUAGE", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "webui_st.py"), default_timeout=120).run()
    at.segmented_control(key="mode").set_value("kb_test").run()
    at.multiselect(key="selected_kbs").set_value(["界面库"]).run()
    at.chat_input(key="question").set_value(question).run()
    assert not at.exception, at.exception
    return at


def _open_source(at: AppTest, file_name: str) -> None:
    sources = at.session_state["messages"][-1]["sources"]
    number = next(s["number"] for s in sources if s["file_name"] == file_name)
    toggle = next(t for t in at.toggle if t.key.startswith("preview-") and t.key.endswith(f"-{number}"))
    toggle.set_value(True).run()
    assert not at.exception, at.exception


def test_the_chat_page_shows_a_pdf_source_on_its_highlighted_page(
    served_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _ask_in_retrieval_test(served_api, monkeypatch, "Quillfeather bridge painted teal")
    assert not at.get("image")
    _open_source(at, PDF_NAME)
    images = at.get("image")
    assert len(images) == 1
    assert images[0].proto.imgs[0].caption.startswith(TEXTS["preview.page"][0].format(page=2, pages=2))
    assert any(TEXTS["preview.download"][0].split(" ")[0] in b.proto.label for b in at.get("download_button"))


def test_the_chat_page_shows_a_text_source_escaped_among_its_neighbours(
    served_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _ask_in_retrieval_test(served_api, monkeypatch, "第三号泵的密封圈检查结果")
    _open_source(at, "注意.md")
    cited = next(s for s in at.session_state["messages"][-1]["sources"] if s["file_name"] == "注意.md")
    assert "<script>" in cited["text"] or "<img" in cited["text"], cited["text"]  # the loader keeps them as text
    marked = [m.value for m in at.markdown if ":orange-background[" in m.value]
    assert marked == [highlighted(cited["text"])]
    assert not re.search(r"(?<!\\)[<>*`]", marked[0])  # nothing left for Markdown or HTML to interpret
    captions = [c.value for c in at.caption]
    assert any("维护" in c for c in captions), captions


def _api(url: str, call: Callable[[KbqaClient], Any]) -> Any:
    api = KbqaClient(url)
    try:
        return call(api)
    finally:
        api.close()


def _kb_page_chunks(url: str, monkeypatch: pytest.MonkeyPatch, kb: str, file_name: str) -> tuple[AppTest, dict]:
    """The knowledge-base page with `file_name`'s chunks shown; the document as the API lists it."""
    monkeypatch.setenv("KBQA_API_URL", url)
    monkeypatch.delenv("KBQA_UI_LANGUAGE", raising=False)
    doc = next(d for d in _api(url, lambda api: api.documents(kb)) if d["filename"] == file_name)
    at = AppTest.from_file(str(PROJECT_ROOT / "webui_st.py"), default_timeout=120).run()
    at.switch_page("webui/pages/knowledge_bases.py").run()
    at.selectbox(key="kb_selected").set_value(kb).run()
    at.selectbox(key=f"doc_selected_{kb}").set_value(doc["id"]).run()
    at.toggle(key="show_chunks").set_value(True).run()
    assert not at.exception, at.exception
    return at, doc


def test_a_citation_in_an_answer_links_to_its_source_in_the_original(
    served_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"question": "Quillfeather bridge painted teal", "mode": "kb_test", "kb_names": ["界面库"]}
    sources = _api(served_api, lambda api: api.ask(body))["sources"]
    cited = next(s for s in sources if s["file_name"] == PDF_NAME)
    n = cited["number"]
    answer = f"桥被漆成了青绿色 [{n}]，另见 [99]。<script>alert(1)</script> [x](javascript:alert(2))"
    monkeypatch.setenv("KBQA_API_URL", served_api)
    monkeypatch.delenv("KBQA_UI_LANGUAGE", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "webui_st.py"), default_timeout=120)
    at.session_state["messages"] = [
        {"role": "user", "mode": "kb", "content": "桥是什么颜色？"},
        {"role": "assistant", "mode": "kb", "content": answer, "sources": sources, "timings": {"total_ms": 1}},
    ]
    at.run()
    assert not at.exception, at.exception
    shown = next(m.value for m in at.markdown if "青绿色" in m.value)
    links = re.findall(r"\[\\\[(\d+)\\\]\]\((source\?[^)\s]+)\)", shown)
    assert [number for number, _ in links] == [str(n)]  # [99] cites nothing: it stays text
    assert r"\[99\]" in shown and r"\<script>" in shown and r"\[x\](javascript" in shown

    query = dict(parse_qsl(urlsplit(links[0][1]).query))
    assert query == {"kb": "界面库", "doc": cited["doc_id"], "chunk": str(cited["chunk_index"])}
    opened = AppTest.from_file(str(PROJECT_ROOT / "webui_st.py"), default_timeout=120)
    opened.query_params.update(query)
    opened.run()
    opened.switch_page("webui/pages/source.py").run()
    assert not opened.exception, opened.exception
    images = opened.get("image")
    assert len(images) == 1
    assert images[0].proto.imgs[0].caption.startswith(TEXTS["preview.page"][0].format(page=2, pages=2))
    assert any(PDF_NAME in re.sub(r"\\(.)", r"\1", s.value) for s in opened.subheader)  # escapes removed


def test_the_chunk_viewer_shows_a_pdf_chunk_on_its_page(served_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at, doc = _kb_page_chunks(served_api, monkeypatch, "界面库", PDF_NAME)
    assert not at.get("image")
    on_page_two = next(c for c in _api(served_api, lambda api: api.chunks("界面库", doc["id"])) if c["page"] == 2)
    at.toggle(key=f"chunk-preview-{doc['id']}-{on_page_two['chunk_index']}").set_value(True).run()
    assert not at.exception, at.exception
    images = at.get("image")
    assert len(images) == 1
    assert images[0].proto.imgs[0].caption.startswith(TEXTS["preview.page"][0].format(page=2, pages=2))


def test_the_chunk_viewer_shows_a_picture_with_its_words_marked(
    served_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at, doc = _kb_page_chunks(served_api, monkeypatch, PICTURE_KB, "告示.png")
    at.toggle(key=f"chunk-preview-{doc['id']}-0").set_value(True).run()
    assert not at.exception, at.exception
    images = at.get("image")
    assert len(images) == 1
    assert images[0].proto.imgs[0].caption.startswith(TEXTS["preview.page"][0].format(page=1, pages=1))
    assert TEXTS["preview.not_found"][0] not in [c.value for c in at.caption]  # the words were found
    assert TEXTS["preview.ocr"][0] in [c.value for c in at.caption]


def test_a_spreadsheet_chunk_shows_as_a_table_with_its_rows_highlighted(
    served_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at, doc = _kb_page_chunks(served_api, monkeypatch, SHEET_KB, "员工.csv")
    chunks = _api(served_api, lambda api: api.chunks(SHEET_KB, doc["id"]))
    assert len(chunks) >= 4, chunks
    tables_before = len(at.dataframe)
    at.toggle(key=f"chunk-preview-{doc['id']}-1").set_value(True).run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == tables_before + 1
    shown = at.dataframe[-1]
    table = shown.value
    assert list(table.columns) == [TEXTS["preview.row"][0], "姓名", "部门", "工号"]
    names = list(table["姓名"])
    cited = [line.split(" | ")[0].removeprefix("姓名: ") for line in chunks[1]["text"].splitlines()]
    context = [
        n for c in chunks[:4] for n in (line.split(" | ")[0].removeprefix("姓名: ") for line in c["text"].splitlines())
    ]
    assert names == context and set(cited) < set(names)
    for name, number in zip(table["姓名"], table[TEXTS["preview.row"][0]], strict=True):
        assert number == str(2 + [row[0] for row in STAFF].index(name))  # the row's number in the file
    styles = shown.proto.arrow_data.styler.styles
    marked_rows = {  # the rows of the rules that tint a background ("#T_x_row2_col0, #T_x_row2_col1 { ... }")
        int(row)
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", styles)
        if "background-color" in body
        for row in re.findall(r"_row(\d+)_col", selectors)
    }
    assert marked_rows == {names.index(n) for n in cited}, styles
