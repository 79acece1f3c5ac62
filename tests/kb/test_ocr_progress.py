"""How each document was read, kept and shown, and OCR's progress while it reads: pages from the text layer, by OCR
(with OCR's confidence) and with nothing readable, in the catalog and the API; each chunk's OCR flag through the
splitter, Milvus, chunk listings and search hits, and collections made before the flag still written, read and
searched; the pages read recorded at most every load_ocr_progress_interval_s; deleting a document while OCR reads
it stops the reading between two pages, and the worker goes on with the next document."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pymilvus import DataType, Function, FunctionType
from sqlalchemy import delete, event

from app.kb.documents import LoadedDocument, Section
from app.kb.splitter import split_document
from app.settings import Settings
from app.storage.catalog import Document
from app.storage.vector_store import NAME_MAX_BYTES, TEXT_MAX_BYTES, MilvusStore
from tests import fixtures_ocr as fo
from tests.conftest import create_kb, make_settings, upload, upload_ready, wait_documents, wait_until
from tests.fixtures_docs import FONT_HINT, cjk_fonts

pytestmark = [
    pytest.mark.skipif(cjk_fonts() is None, reason=f"the pictures are drawn with CJK fonts: {FONT_HINT}"),
    pytest.mark.skipif(shutil.which("tesseract") is None, reason="OCR needs Tesseract: bash scripts/setup.sh"),
]
KB = "读取方式"
SCAN_PAGES = 12  # OCR takes about a second a page here: long enough to delete the document halfway


@pytest.fixture(scope="module")
def module_settings(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, backend_settings: dict[str, str]
) -> Settings:
    """Every page read is recorded (no interval), so a test sees the progress at once."""
    folder = tmp_path_factory.mktemp("kbqa-data")
    return make_settings(folder, embedding_model_dir, ocr__progress_interval_s=0, **backend_settings)


@pytest.fixture(scope="module")
def kb(client: TestClient) -> str:
    create_kb(client, KB)
    return KB


def _search(client: TestClient, kb: str, question: str) -> list[dict]:
    response = client.post(f"/api/kbs/{kb}/search", json={"question": question, "top_k": 3, "mode": "hybrid"})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def test_the_splitter_keeps_whether_ocr_read_a_section() -> None:
    """A slide's short title joins the text OCR read from the slide's picture: that chunk is OCR's."""
    doc = LoadedDocument(
        sections=[
            Section("仓库", page=2),
            Section(fo.ZH_PARAGRAPHS[0] * 2, page=2, ocr=True),
            Section(fo.ZH_PARAGRAPHS[1] * 2, page=3),
            Section(fo.ZH_PARAGRAPHS[2] * 2, page=4, ocr=True),
        ]
    )
    chunks = split_document(doc)
    assert [(c.page, c.ocr) for c in chunks] == [(2, True), (3, False), (4, True)]
    assert chunks[0].text.startswith("仓库\n")


def test_how_a_mixed_pdf_was_read_is_kept_and_each_chunk_says_whether_ocr_read_it(
    client: TestClient, kb: str, tmp_path: Path
) -> None:
    scan = fo.render_text([fo.ZH_MIXED_SENTENCE]).image
    blank = Image.new("L", scan.size, 255)
    path = fo.pages_pdf(["第一页有文字层：" + fo.ZH_PARAGRAPHS[4], scan, blank], tmp_path / "三页.pdf")
    doc = upload_ready(client, kb, (path.name, path.read_bytes()))[0]
    assert doc["status"] == "ready", doc["error"]
    reading = doc["reading"]
    assert (reading["text_pages"], reading["ocr_pages"], reading["empty_pages"]) == (1, 1, [3])
    assert 0.8 < reading["ocr_confidence"] <= 1
    assert (reading["ocr_pictures"], reading["skipped_pictures"]) == (0, 0)
    assert (doc["pages"], doc["pages_done"], doc["pages_total"]) == (3, 3, 3)
    assert client.get(f"/api/kbs/{kb}/documents/{doc['id']}").json()["reading"] == reading

    chunks = client.get(f"/api/kbs/{kb}/documents/{doc['id']}/chunks").json()
    assert [(c["page"], c["ocr"]) for c in chunks] == [(1, False), (2, True)]
    top = _search(client, kb, fo.ZH_MIXED_SENTENCE)[0]
    assert (top["doc_id"], top["page"], top["ocr"]) == (doc["id"], 2, True)
    text_top = _search(client, kb, fo.ZH_PARAGRAPHS[4])[0]
    assert (text_top["doc_id"], text_top["page"], text_top["ocr"]) == (doc["id"], 1, False)


def test_a_text_file_is_reported_read_from_its_text(client: TestClient, kb: str) -> None:
    doc = upload_ready(client, kb, ("纯文本.txt", "没有图片的文档：海鸥在码头上空盘旋。".encode()))[0]
    assert doc["reading"] == {
        "text_pages": 0,
        "ocr_pages": 0,
        "ocr_confidence": None,
        "empty_pages": [],
        "ocr_pictures": 0,
        "skipped_pictures": 0,
    }
    assert (doc["pages_done"], doc["pages_total"]) == (None, None)


# ------------------------------------------------------------------------------------------------ old collections


def _collection_before_the_ocr_flag(store: MilvusStore, name: str, dim: int) -> None:
    """A knowledge base's collection with the schema it had before chunks carried their OCR flag."""
    schema = store.client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=80)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=32)
    schema.add_field(
        "text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True, analyzer_params={"type": "chinese"}
    )
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("file_name", DataType.VARCHAR, max_length=NAME_MAX_BYTES)
    schema.add_field("page", DataType.INT64)
    schema.add_field("chunk_index", DataType.INT64)
    schema.add_field("heading", DataType.VARCHAR, max_length=NAME_MAX_BYTES)
    schema.add_function(
        Function(
            name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=["sparse"]
        )
    )
    index_params = store.client.prepare_index_params()
    index_params.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
    index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    store.client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")


def test_a_collection_made_before_the_ocr_flag_is_still_written_listed_and_searched(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    collection = create_kb(client, "旧集合")["collection_name"]
    services.store.drop_collection(collection)
    _collection_before_the_ocr_flag(services.store, collection, services.query_embedder().dim)
    assert not services.store.has_ocr_field(collection)

    fact = "旧集合里的文档：灯塔看守人每晚八点点亮灯塔。"
    doc = upload_ready(client, "旧集合", ("灯塔.txt", fact.encode()))[0]
    assert doc["status"] == "ready", doc["error"]
    chunks = client.get(f"/api/kbs/旧集合/documents/{doc['id']}/chunks").json()
    assert [(c["text"], c["ocr"]) for c in chunks] == [(fact, False)]
    for mode in ("dense", "bm25", "hybrid"):
        response = client.post("/api/kbs/旧集合/search", json={"question": "灯塔几点点亮", "mode": mode})
        assert response.status_code == 200, response.text
        top = response.json()["hits"][0]
        assert (top["doc_id"], top["ocr"]) == (doc["id"], False)


# ------------------------------------------------------------------------------------------------ progress


def _scanned_pdf(folder: Path, pages: int, name: str) -> Path:
    """An image-only PDF of `pages` pages, a paragraph of Chinese on each: every page costs OCR its time."""
    images = [fo.render_text([fo.ZH_PARAGRAPHS[n % len(fo.ZH_PARAGRAPHS)]]).image for n in range(pages)]
    return fo.image_only_pdf(images, folder / name)


def _is_progress_write(statement: str) -> bool:
    """What recording the pages read writes, and nothing else does: an UPDATE of those two columns alone (and the
    row's time), in SQLite's and PostgreSQL's parameter styles alike."""
    head, _, rest = statement.partition(" SET ")
    columns = set(re.findall(r"(\w+)=", rest.partition(" WHERE ")[0]))
    return head == "UPDATE documents" and columns == {"updated_at", "pages_done", "pages_total"}


@pytest.mark.parametrize(("interval_s", "writes"), [(0.0, 3), (3600.0, 0)])
def test_the_pages_read_are_recorded_at_most_every_interval(
    client: TestClient, kb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval_s: float, writes: int
) -> None:
    """With no interval every page read is recorded while the document is read; within a long interval none is
    (a document read faster than the interval costs the catalog no write until its chunks are counted)."""
    services = client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services.indexer, "progress_interval_s", interval_s)
    recorded: list[object] = []

    def on_statement(_conn, _cursor, statement: str, parameters: object, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if _is_progress_write(statement):
            recorded.append(parameters)

    path = _scanned_pdf(tmp_path, 3, f"每隔{interval_s:g}秒.pdf")
    event.listen(services.catalog.engine, "before_cursor_execute", on_statement)
    try:
        doc = upload_ready(client, kb, (path.name, path.read_bytes()))[0]
    finally:
        event.remove(services.catalog.engine, "before_cursor_execute", on_statement)
    assert doc["status"] == "ready", doc["error"]
    assert (doc["pages_done"], doc["pages_total"], doc["reading"]["ocr_pages"]) == (3, 3, 3)
    assert len(recorded) == writes, recorded


@pytest.mark.parametrize("deleted_through", ["the API", "another process"])
def test_deleting_a_document_while_ocr_reads_it_stops_between_pages_and_the_next_one_is_indexed(
    client: TestClient, kb: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, deleted_through: str
) -> None:
    """Deleted here, the reading stops at the next page; deleted through another process (its catalog row gone),
    at the next page recorded."""
    caplog.set_level(logging.INFO, logger="app.kb.ingestion")
    services = client.app.state.services  # type: ignore[attr-defined]
    collection = client.get(f"/api/kbs/{kb}").json()["collection_name"]
    path = _scanned_pdf(tmp_path, SCAN_PAGES, "长扫描件.pdf")
    scan = upload(client, kb, (path.name, path.read_bytes()))[0]["document"]
    url = f"/api/kbs/{kb}/documents/{scan['id']}"
    seen: list[dict] = []

    def reading_started() -> bool:
        seen.append(state := client.get(url).json())
        return bool(state["pages_done"])

    wait_until(reading_started, "OCR to read the scan's first page")
    assert seen[-1]["status"] == "processing" and seen[-1]["pages_total"] == SCAN_PAGES
    assert seen[-1]["pages_done"] < SCAN_PAGES and seen[-1]["reading"] is None
    behind = (f"排队-{deleted_through}.txt", f"删除时排在后面的文档（{deleted_through}）：信天翁一生大多在海上度过。")
    queued = upload(client, kb, (behind[0], behind[1].encode()))[0]
    assert not queued["duplicate"]
    queued = queued["document"]
    if deleted_through == "the API":
        assert client.delete(url).status_code == 204
    else:
        with services.catalog.session() as session:
            session.execute(delete(Document).where(Document.id == scan["id"]))

    assert wait_documents(client, kb, [queued["id"]])[0]["status"] == "ready"
    assert client.get(url).status_code == 404
    assert services.store.count_document_chunks(collection, scan["id"]) == 0
    stops = [r for r in caplog.records if r.getMessage().startswith(f"reading {scan['id']}")]
    assert len(stops) == 1, [r.getMessage() for r in caplog.records]
    _, _, done, total = stops[0].args  # type: ignore[misc]
    assert done < total == SCAN_PAGES
