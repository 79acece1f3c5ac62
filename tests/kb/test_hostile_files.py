"""Hostile and careless files: zip bombs, streams that inflate to gigabytes, oversized text, and documents whose
indexing keeps killing the server. Each ends `failed` with a reason naming the limit, the process's memory stays
bounded, and nothing else in the knowledge base is touched.

The bombs are generated here, fast and small on disk: one deflate block of a megabyte of blanks is compressed once
and repeated (each block ends with a full flush, so copies chain), giving a ~1 MB file that inflates to a gigabyte.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docx
import httpx
import psutil
import pytest
from sqlalchemy import inspect

from app.kb.documents import CorruptDocument, DocumentLoadError
from app.kb.ingestion import DocumentIndexer
from app.kb.loaders import LoadLimits, load_document
from app.storage.catalog import Catalog, Document, KnowledgeBase
from tests.conftest import Backend, Served, api_env, backend_overrides, doc_state, kbqa_serve, wait_doc_state
from tests.fixtures_docs import make_docx, make_numbered_chinese_text, make_simple_pdf

MIB = 1 << 20
BLANKS = b" " * MIB
DEFAULTS = LoadLimits.from_settings()
# What one hostile file may add to a process's memory. Without the limits the 1 GiB bomb below needs several GB.
MEMORY_BOUND = 1 << 30


# ----------------------------------------------------------------------------------------------- zip packages


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes  # as stored: a raw deflate stream, or the bytes themselves when not compressed
    crc: int
    size: int  # the uncompressed size the zip declares
    deflated: bool = True


def member(name: str, content: bytes, deflated: bool = True) -> Member:
    data = content
    if deflated:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = packer.compress(content) + packer.flush()
    return Member(name, data, zlib.crc32(content), len(content), deflated)


def bomb_member(name: str, head: bytes, mib: int, tail: bytes) -> Member:
    """`head`, `mib` MiB of blanks and `tail`, deflated into about mib KiB in a fraction of a second."""
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"".join(
        [
            first.compress(head) + first.flush(zlib.Z_FULL_FLUSH),
            (block.compress(BLANKS) + block.flush(zlib.Z_FULL_FLUSH)) * mib,
            last.compress(tail) + last.flush(),
        ]
    )
    crc = zlib.crc32(head)
    for _ in range(mib):
        crc = zlib.crc32(BLANKS, crc)
    return Member(name, data, zlib.crc32(tail, crc), len(head) + mib * MIB + len(tail))


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip written field by field, so the sizes it declares are whatever the members say (zipfile would check)."""
    body, directory = bytearray(), bytearray()
    for m in members:
        name = m.name.encode()
        method = 8 if m.deflated else 0
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, m.crc, len(m.data), m.size, len(name), 0)
        directory += struct.pack("<IH", 0x02014B50, 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, len(body)) + name
        body += struct.pack("<I", 0x04034B50) + fields + name + m.data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))
    return path


def docx_members(text: str = "正常的段落。") -> dict[str, bytes]:
    """The parts of a real .docx written by python-docx, holding one paragraph."""
    buffer = io.BytesIO()
    document = docx.Document()
    document.add_paragraph(text)
    document.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_docx(path: Path, parts: dict[str, bytes], extra: Sequence[Member] = ()) -> Path:
    return write_zip(path, [member(name, data) for name, data in parts.items()] + list(extra))


def docx_bomb(path: Path, mib: int = 1024) -> Path:
    """A valid .docx whose word/document.xml inflates to `mib` MiB: blanks between the body's elements."""
    parts = docx_members("炸弹文档的正文。")
    xml = parts.pop("word/document.xml")
    cut = xml.index(b"<w:body>") + len(b"<w:body>")
    return write_docx(path, parts, [bomb_member("word/document.xml", xml[:cut], mib, xml[cut:])])


# ------------------------------------------------------------------------------------------------------- PDF


def pdf_bomb(path: Path, mib: int = 1024) -> Path:
    """A one-page PDF whose content stream (FlateDecode) inflates to `mib` MiB."""
    raw = bomb_member("", b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n", mib, b"\n")
    adler = zlib.adler32(b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n")
    for _ in range(mib):
        adler = zlib.adler32(BLANKS, adler)
    stream = b"\x78\xda" + raw.data + zlib.adler32(b"\n", adler).to_bytes(4, "big")
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Resources<</Font<</F1 5 0 R>>>>/Contents 4 0 R>>",
        b"<</Length %d/Filter/FlateDecode>>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>",
    ]
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


# ------------------------------------------------------------------------------------------------- memory


class PeakRss:
    """Samples a process's resident memory every few milliseconds while in use; `growth` is the peak over the
    resident memory at the start."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def refused(load: Callable[[], object], setting: str) -> str:
    """The reason a load is refused with, checking it names `setting`, is Chinese first, and kept memory bounded."""
    with PeakRss() as rss, pytest.raises(DocumentLoadError) as caught:
        load()
    message = str(caught.value)
    assert setting in message, message
    assert "上限" in message.split("(")[0], message
    assert rss.growth < MEMORY_BOUND, f"reading grew memory by {rss.growth / MIB:.0f} MiB"
    return message


# ------------------------------------------------------------------------------------- loaders, one limit each


def test_docx_zip_bomb_is_refused_before_anything_inflates(tmp_path: Path) -> None:
    path = docx_bomb(tmp_path / "bomb.docx")
    assert path.stat().st_size < 2 * MIB
    message = refused(lambda: load_document(path), "limits.max_xml_mb")
    assert "word/document.xml" in message and "1,024.0 MB" in message


@pytest.mark.parametrize(
    ("checked_bytes", "reason"),
    [(MIB, "cannot be inflated"), (MIB + 1, r"inflates past the 1\.0 MB it declares")],
    ids=["checksum-of-declared-size", "checksum-of-one-byte-more"],
)
def test_a_docx_part_that_understates_its_size_is_refused_as_it_inflates(
    tmp_path: Path, checked_bytes: int, reason: str
) -> None:
    """Declared sizes can lie: this document.xml declares 1 MiB but its stream holds a gigabyte, and reading a
    member whole inflates all of it before cutting it to the declared size. Its checksum covers the first MiB (so
    zipfile's own checks pass) or one byte more (so a check that reads one byte past the declared size, and relies
    on the checksum to object, passes too)."""
    parts = docx_members()
    xml = parts.pop("word/document.xml")
    cut = xml.index(b"<w:body>") + len(b"<w:body>")
    bomb = bomb_member("word/document.xml", xml[:cut], 1024, xml[cut:])
    checked = zlib.crc32(xml[:cut] + BLANKS[: checked_bytes - cut])
    path = write_docx(tmp_path / "liar.docx", parts, [replace(bomb, size=MIB, crc=checked)])
    with PeakRss() as rss, pytest.raises(CorruptDocument, match=reason) as caught:
        load_document(path)
    assert "已损坏" in str(caught.value)
    assert rss.growth < MEMORY_BOUND


def test_docx_with_too_many_parts_is_refused(tmp_path: Path) -> None:
    parts = docx_members()
    extra = [member(f"word/media/image{i}.png", b"x") for i in range(30)]
    path = write_docx(tmp_path / "many.docx", parts, extra)
    limits = replace(DEFAULTS, max_zip_members=len(parts) + 29)
    message = refused(lambda: load_document(path, limits=limits), "limits.max_zip_members")
    assert f"{len(parts) + 30} 个部件" in message


def test_docx_whose_parts_inflate_too_much_in_all_is_refused(tmp_path: Path) -> None:
    images = [member(f"word/media/photo{i}.jpg", os.urandom(MIB), deflated=False) for i in range(3)]
    path = write_docx(tmp_path / "photos.docx", docx_members(), images)
    limits = replace(DEFAULTS, max_zip_total_mb=2)
    refused(lambda: load_document(path, limits=limits), "limits.max_zip_total_mb")


def test_docx_with_one_oversized_part_is_refused(tmp_path: Path) -> None:
    video = member("word/media/video.mp4", os.urandom(2 * MIB), deflated=False)
    path = write_docx(tmp_path / "video.docx", docx_members(), [video])
    limits = replace(DEFAULTS, max_zip_member_mb=1)
    message = refused(lambda: load_document(path, limits=limits), "limits.max_zip_member_mb")
    assert "word/media/video.mp4" in message


def test_docx_part_compressed_far_past_real_documents_is_refused(tmp_path: Path) -> None:
    """Within every size limit, but 8 MiB packed into a few KiB: real Word parts compress 5-30:1."""
    blank = bomb_member("word/media/blank.bin", b"", 8, b"")
    path = write_docx(tmp_path / "ratio.docx", docx_members(), [blank])
    message = refused(lambda: load_document(path), "limits.max_zip_ratio")
    assert "word/media/blank.bin" in message


def test_docx_text_past_the_text_limit_is_refused(tmp_path: Path) -> None:
    limits = replace(DEFAULTS, max_text_chars=50)
    refused(lambda: load_document(make_docx(tmp_path), limits=limits), "limits.max_text_chars")


def test_an_ordinary_docx_within_the_limits_still_loads(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "plain.docx", docx_members("普通文档的一段话。"))
    assert load_document(path).sections[0].text == "普通文档的一段话。"


@pytest.mark.parametrize("suffix", [".txt", ".md"])
def test_text_past_the_limit_is_refused_once_decoded(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"long{suffix}"
    path.write_text("长" * 1500, encoding="utf-8")  # 4,500 bytes: 1,500 characters
    limits = replace(DEFAULTS, max_text_chars=1200)  # 4,500 bytes could hold 1,200 characters: it is decoded
    message = refused(lambda: load_document(path, limits=limits), "limits.max_text_chars")
    assert "1,500 个字符" in message
    assert load_document(path, limits=replace(DEFAULTS, max_text_chars=1500)).sections


def test_text_that_cannot_fit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_bytes(b"a" * 5000)
    message = refused(
        lambda: load_document(path, limits=replace(DEFAULTS, max_text_chars=1000)), "limits.max_text_chars"
    )
    assert "at least 1,250 characters" in message


def test_html_with_too_many_elements_is_refused_before_its_tree_is_built(tmp_path: Path) -> None:
    """BeautifulSoup spends about 1 KB per tag: 400,000 tags (3 MB of HTML) would take ~400 MB."""
    path = tmp_path / "tags.html"
    path.write_bytes(b"<html><body>" + b"<b>x</b>" * 400_000 + b"</body></html>")
    message = refused(lambda: load_document(path), "limits.max_html_elements")
    assert "200,000" in message
    small = tmp_path / "small.html"
    small.write_bytes(b"<html><body>" + b"<b>x</b>" * 1000 + b"</body></html>")
    assert load_document(small).sections


def test_pdf_with_too_many_pages_is_refused(tmp_path: Path) -> None:
    path = make_simple_pdf(tmp_path, pages=3)
    message = refused(lambda: load_document(path, limits=replace(DEFAULTS, max_pdf_pages=2)), "limits.max_pdf_pages")
    assert "3 页" in message
    assert load_document(path, limits=replace(DEFAULTS, max_pdf_pages=3)).pages == 3


def test_pdf_stream_bomb_is_refused_at_pypdf_s_limit(tmp_path: Path) -> None:
    """pypdf stops inflating a stream at its own limit; the loader reports that as the reason instead of calling
    the PDF damaged."""
    path = pdf_bomb(tmp_path / "bomb.pdf")
    assert path.stat().st_size < 2 * MIB
    with PeakRss() as rss, pytest.raises(DocumentLoadError) as caught:
        load_document(path)
    assert "pypdf" in str(caught.value) and "安全上限" in str(caught.value), caught.value
    assert rss.growth < MEMORY_BOUND


def test_pdf_text_past_the_text_limit_is_refused(tmp_path: Path) -> None:
    path = make_simple_pdf(tmp_path, pages=3)
    refused(lambda: load_document(path, limits=replace(DEFAULTS, max_text_chars=20)), "limits.max_text_chars")


# ---------------------------------------------------------------------------------- through a real server


@pytest.fixture(scope="module")
def storage(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Milvus over TCP (a killed `kbqa serve` leaves no Milvus Lite file lock behind) and each test's own SQLite
    catalog in its data folder."""
    with backend_overrides(request, Backend("server", "sqlite")) as overrides:
        yield overrides


@dataclass
class Api:
    http: httpx.Client
    served: Served

    def upload(self, kb: str, name: str, data: bytes) -> dict:
        response = self.http.post(f"/api/kbs/{kb}/documents", files=[("files", (name, data))])
        assert response.status_code == 202, response.text
        return response.json()[0]["document"]

    def document(self, kb: str, doc_id: str) -> dict:
        return self.http.get(f"/api/kbs/{kb}/documents/{doc_id}").json()

    def wait_done(self, kb: str, doc_id: str, watch: PeakRss | None = None, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while (doc := self.document(kb, doc_id))["status"] not in {"ready", "failed"}:
            if watch is not None and watch.growth > MEMORY_BOUND:
                self.served.process.kill()  # no need to let the machine run out of memory to see the test fail
                pytest.fail(f"the server grew by {watch.growth / MIB:.0f} MiB reading {doc['filename']}")
            assert time.monotonic() < deadline, doc
            time.sleep(0.05)
        return doc

    def top_hit(self, kb: str, question: str) -> dict:
        response = self.http.post(f"/api/kbs/{kb}/search", json={"question": question, "top_k": 3})
        assert response.status_code == 200, response.text
        return response.json()["hits"][0]

    def chunk_count(self, kb: str, doc_id: str) -> int:
        return len(self.http.get(f"/api/kbs/{kb}/documents/{doc_id}/chunks", params={"limit": 1000}).json())


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[Api]:
    with kbqa_serve(env, log) as served, httpx.Client(base_url=served.url, timeout=60) as http:
        yield Api(http, served)


NEIGHBOUR = "邻居文档：信天翁一生中大部分时间在海上滑翔。".encode()


def test_bombs_uploaded_to_a_server_fail_with_the_limit_and_leave_the_rest_alone(
    tmp_path: Path, embedding_model_dir: Path, storage: dict[str, str]
) -> None:
    env = api_env(tmp_path / "data", embedding_model_dir, storage)
    with serving(env, tmp_path / "serve.log") as api:
        assert api.http.post("/api/kbs", json={"name": "炸弹库"}).status_code == 201
        neighbour = api.wait_done("炸弹库", api.upload("炸弹库", "邻居.txt", NEIGHBOUR)["id"])
        assert neighbour["status"] == "ready"
        bombs = {
            "炸弹.docx": (docx_bomb(tmp_path / "bomb.docx"), "limits.max_xml_mb"),
            "炸弹.pdf": (pdf_bomb(tmp_path / "bomb.pdf"), "pypdf"),
        }
        for name, (path, limit) in bombs.items():
            with PeakRss(api.served.process.pid) as rss:
                doc = api.wait_done("炸弹库", api.upload("炸弹库", name, path.read_bytes())["id"], watch=rss)
            assert doc["status"] == "failed", doc
            assert limit in doc["error"] and "上限" in doc["error"], doc["error"]
            assert rss.growth < MEMORY_BOUND
            assert api.chunk_count("炸弹库", doc["id"]) == 0
        assert api.document("炸弹库", neighbour["id"])["status"] == "ready"
        assert api.chunk_count("炸弹库", neighbour["id"]) == neighbour["chunk_count"]
        assert api.top_hit("炸弹库", "信天翁在哪里滑翔")["doc_id"] == neighbour["id"]


def _kill_while_processing(api: Api, catalog: Catalog, doc_id: str, attempt: int) -> None:
    """SIGKILL the server once it is indexing the document for the `attempt`-th time, as the out-of-memory killer
    would; then let the dead owner's lease run out (moved into the past, rather than waited for)."""
    pid = api.served.process.pid
    wait_doc_state(
        catalog,
        doc_id,
        lambda s: s.status == "processing" and s.held_by(pid) and s.index_attempts == attempt,
        passing={"queued", "processing"},
    )
    os.kill(pid, signal.SIGKILL)
    api.served.process.wait()
    assert doc_state(catalog, doc_id).status == "processing", "indexed before the kill: make the document bigger"
    with catalog.session() as session:
        row = session.get(Document, doc_id)
        assert row is not None
        row.lease_until = datetime.now(UTC) - timedelta(seconds=1)


def test_a_document_that_keeps_killing_the_server_ends_failed_after_its_attempts(
    tmp_path: Path, embedding_model_dir: Path, storage: dict[str, str]
) -> None:
    """Each restart resumes unfinished documents; a document whose indexing was interrupted max_index_attempts
    times is failed with that reason instead of being started again, and the rest of the knowledge base works."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = api_env(data_dir, embedding_model_dir, {**storage, "ingest__max_index_attempts": "2"})
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.db'}")
    try:
        with serving(env, tmp_path / "serve-1.log") as api:
            assert api.http.post("/api/kbs", json={"name": "崩溃库"}).status_code == 201
            neighbour = api.wait_done("崩溃库", api.upload("崩溃库", "邻居.txt", NEIGHBOUR)["id"])
            assert neighbour["status"] == "ready"
            doc_id = api.upload("崩溃库", "长文.txt", make_numbered_chinese_text(600, "崩溃"))["id"]
            _kill_while_processing(api, catalog, doc_id, attempt=1)
        with serving(env, tmp_path / "serve-2.log") as api:  # resumes it: the second attempt
            _kill_while_processing(api, catalog, doc_id, attempt=2)
        with serving(env, tmp_path / "serve-3.log") as api:
            doc = api.wait_done("崩溃库", doc_id)
            assert doc["status"] == "failed", doc
            assert "索引中断了 2 次" in doc["error"] and "interrupted 2 times" in doc["error"], doc["error"]
            assert api.chunk_count("崩溃库", doc_id) == 0  # what the interrupted runs stored is gone
            assert api.document("崩溃库", neighbour["id"])["status"] == "ready"
            assert api.chunk_count("崩溃库", neighbour["id"]) == neighbour["chunk_count"]
            assert api.top_hit("崩溃库", "信天翁在哪里滑翔")["doc_id"] == neighbour["id"]
            # The failure is final: a later sweep or restart does not pick the document up again.
            assert doc_state(catalog, doc_id).status == "failed"
    finally:
        catalog.dispose()


def test_an_older_catalog_counts_attempts_from_its_first_start(tmp_path: Path) -> None:
    """A catalog created before the attempt counter gets the column in place (NULL in existing rows); the count
    starts from there, and a document at the limit is failed rather than handed back for indexing."""
    path = tmp_path / "old.db"
    old = Catalog(f"sqlite:///{path}")
    old.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP INDEX ix_documents_kb_status_attempts")  # newer than the counter, on it
        connection.execute("ALTER TABLE documents DROP COLUMN index_attempts")
        connection.execute(
            "INSERT INTO knowledge_bases (id, name, description, collection_name, embedding_model, embedding_dim, "
            "chunk_size, chunk_overlap, created_at) VALUES "
            "('k', '旧库', '', 'kb_k', 'e5', 384, 500, 50, '2024-01-01 00:00:00')"
        )
        connection.execute(
            "INSERT INTO documents (id, kb_id, filename, file_type, stored_path, sha256, size_bytes, status, "
            "chunk_count, chunks_embedded, created_at, updated_at) VALUES "
            "('d', 'k', 'a.txt', 'txt', 'x', '', 1, 'processing', 0, 0, '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
    catalog = Catalog(f"sqlite:///{path}")
    try:
        assert "index_attempts" in {c["name"] for c in inspect(catalog.engine).get_columns("documents")}
        indexer = DocumentIndexer(catalog, None, None, tmp_path, max_attempts=2)  # type: ignore[arg-type]
        for attempt in (1, 2):
            assert indexer.give_up_interrupted(["d"]) == ["d"]
            assert [job.doc_id for job in indexer._start(["d"])] == ["d"]
            assert doc_state(catalog, "d").index_attempts == attempt
        assert indexer.give_up_interrupted(["d"]) == []
        with catalog.session() as session:
            doc = session.get(Document, "d")
            assert doc is not None and doc.status.value == "failed" and "索引中断了 2 次" in (doc.error or "")
            assert session.get(KnowledgeBase, "k") is not None
    finally:
        catalog.dispose()
