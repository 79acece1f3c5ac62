"""The catalog on SQLite and on a real PostgreSQL server: the same behaviour on both, and a PostgreSQL that goes
down answers 503 (not a 500 with a traceback) until it is back."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from app.api.main import create_app
from app.errors import InvalidInput
from app.kb.ingestion import DocumentIndexer
from app.kb.views import DocumentInfo
from app.storage.catalog import Catalog, Document, DocumentStatus, KnowledgeBase, documents_of, kb_by_name
from tests.conftest import PostgresServer, create_kb, make_settings, running_postgres, upload_ready


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
        database = None
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        database = postgres.create_database()
        url = postgres.url(database)
    built = Catalog(url)
    yield built
    built.dispose()
    if database is not None:
        postgres.drop_database(database)


def _kb(name: str) -> KnowledgeBase:
    kb_id = uuid.uuid4().hex
    return KnowledgeBase(
        id=kb_id, name=name, description="", collection_name=f"kb_{kb_id}", embedding_model="e5",
        embedding_dim=384, chunk_size=500, chunk_overlap=50,
    )


def _doc(kb: KnowledgeBase, filename: str = "a.txt") -> Document:
    return Document(
        id=uuid.uuid4().hex, kb_id=kb.id, filename=filename, file_type="txt", stored_path="x", sha256="0" * 64,
        size_bytes=1,
    )


def test_times_come_back_utc_aware(catalog: Catalog) -> None:
    """The PostgreSQL test server runs in Asia/Shanghai; SQLite keeps no zone at all."""
    before = datetime.now(UTC)
    with catalog.session() as session:
        kb = _kb("时间")
        session.add(kb)
        session.add(_doc(kb))
    with catalog.session() as session:
        stored = session.scalar(select(Document))
        assert stored is not None
        created = stored.created_at
    assert created.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC) + timedelta(seconds=1)


def test_long_chinese_names_fit_and_names_are_case_sensitive(catalog: Catalog) -> None:
    long_name, long_file = "知" * 255, "文" * 251 + ".txt"
    with catalog.session() as session:
        kb = _kb(long_name)
        session.add_all([kb, _kb("Contracts"), _kb("contracts")])
        session.add(_doc(kb, long_file))
    with catalog.session() as session:
        found = kb_by_name(session, long_name)
        assert found is not None and [d.filename for d in found.documents] == [long_file]
        assert kb_by_name(session, "Contracts") is not None and kb_by_name(session, "contracts") is not None
        assert kb_by_name(session, "CONTRACTS") is None


def test_duplicate_names_are_refused_by_the_database(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.add(_kb("同名"))
    with pytest.raises(IntegrityError), catalog.session() as session:
        session.add(_kb("同名"))


def test_deleting_a_knowledge_base_deletes_its_documents(catalog: Catalog) -> None:
    with catalog.session() as session:
        kb = _kb("级联")
        session.add(kb)
        session.add_all([_doc(kb, "1.txt"), _doc(kb, "2.txt")])
    with catalog.session() as session:
        session.delete(kb_by_name(session, "级联"))
    with catalog.session() as session:
        assert session.scalars(select(Document)).all() == []


def test_nul_characters_are_refused_on_every_database(catalog: Catalog) -> None:
    kb = _kb("空字符")
    kb.description = "a\x00b"
    with pytest.raises(InvalidInput, match="description must not contain NUL"), catalog.session() as session:
        session.add(kb)
    with catalog.session() as session:
        assert kb_by_name(session, "空字符") is None


def test_one_of_two_processes_claims_a_document(catalog: Catalog, tmp_path: Path) -> None:
    """Two indexers (as in two API processes) race for the same documents: each document goes to exactly one;
    a claim whose lease ran out (its process died) is taken over."""
    with catalog.session() as session:
        kb = _kb("认领")
        session.add(kb)
        docs = [_doc(kb, f"{i}.txt") for i in range(4)]
        session.add_all(docs)
    ids = [d.id for d in docs]
    first = DocumentIndexer(catalog, None, None, tmp_path, lease_s=60)  # type: ignore[arg-type]
    second = DocumentIndexer(catalog, None, None, tmp_path, lease_s=60)  # type: ignore[arg-type]
    assert first.claim(ids[:3]) == ids[:3]
    assert second.claim(ids) == ids[3:]
    assert second.claimable_ids() == [] and first.claimable_ids() == []
    with catalog.session() as session:  # the first process dies: its leases run out
        for doc in session.scalars(select(Document).where(Document.claimed_by == first.owner)):
            doc.lease_until = datetime.now(UTC) - timedelta(seconds=1)
    assert sorted(second.claimable_ids()) == sorted(ids[:3])
    assert second.claim(ids) == ids
    assert first.claim(ids) == []


@contextmanager
def _statements(catalog: Catalog) -> Iterator[list[tuple[str, Any]]]:
    """The statements the catalog's engine sends inside the block, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def record(_connection: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        sent.append((sql, params))

    event.listen(catalog.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(catalog.engine, "before_cursor_execute", record)


def _plan(catalog: Catalog, sql: str, params: Any) -> str:
    """The database's plan for a statement: SQLite's query plan, PostgreSQL's EXPLAIN after ANALYZE."""
    with catalog.engine.connect() as connection:
        if catalog.engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            return "\n".join(row[-1] for row in rows)
        connection.exec_driver_sql("ANALYZE documents")
        return "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}", params).all())


BY_ID = ("ix_documents_kb_id_id", "sqlite_autoindex_documents_1", "documents_pkey")


def _assert_reads_through(catalog: Catalog, statement: tuple[str, Any], indexes: tuple[str, ...]) -> None:
    plan = _plan(catalog, *statement)
    assert any(index in plan for index in indexes), plan
    assert "SCAN documents" not in plan and "Seq Scan" not in plan, plan


def test_a_filtered_document_list_is_one_indexed_query(catalog: Catalog) -> None:
    """Following a few uploads in a large knowledge base reads those documents, not the knowledge base: one query,
    through the primary key (ids) or the status index, never a scan of the table."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    in_flight = {0: DocumentStatus.queued, 1: DocumentStatus.processing, 50: DocumentStatus.failed}
    with catalog.session() as session:
        kb, other = _kb("过滤"), _kb("别的库")
        session.add_all([kb, other])
        docs = [_doc(kb, f"{i}.txt") for i in range(3000)]
        for i, doc in enumerate(docs):
            doc.created_at = start + timedelta(seconds=i)
            doc.status = in_flight.get(i % 100, DocumentStatus.ready)
        session.add_all(reversed(docs))
        session.add(stranger := _doc(other))
    following = [docs[2500].id, docs[7].id, docs[1234].id]
    with _statements(catalog) as sent, catalog.session() as session:
        found = documents_of(session, kb.id, [*following, uuid.uuid4().hex, stranger.id])
    assert [d.id for d in found] == [docs[7].id, docs[1234].id, docs[2500].id]  # oldest first; the others absent
    assert len(sent) == 1
    _assert_reads_through(catalog, sent[0], BY_ID)

    with _statements(catalog) as sent, catalog.session() as session:
        waiting = documents_of(session, kb.id, statuses=[DocumentStatus.queued, DocumentStatus.failed])
        both = documents_of(session, kb.id, following, [DocumentStatus.ready])
    assert [d.id for d in waiting] == [d.id for i, d in enumerate(docs) if i % 100 in (0, 50)]
    assert [d.id for d in both] == [docs[7].id, docs[1234].id]  # 2500 is queued
    assert len(sent) == 2
    _assert_reads_through(catalog, sent[0], ("ix_documents_kb_status_attempts",))
    _assert_reads_through(catalog, sent[1], BY_ID)
    with catalog.session() as session:
        assert documents_of(session, kb.id, []) == []
        assert [d.id for d in documents_of(session, kb.id)] == [d.id for d in docs]


def test_an_older_catalog_gets_the_new_columns(tmp_path: Path) -> None:
    """A catalog created before documents had claims (no claimed_by / lease_until) is completed in place."""
    path = tmp_path / "old.db"
    Catalog(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE documents DROP COLUMN claimed_by")
        connection.execute("ALTER TABLE documents DROP COLUMN lease_until")
    catalog = Catalog(f"sqlite:///{path}")
    with catalog.session() as session:
        kb = _kb("旧库")
        session.add(kb)
        session.add(_doc(kb))
    assert DocumentIndexer(catalog, None, None, tmp_path).claimable_ids()  # type: ignore[arg-type]
    catalog.dispose()


READING_COLUMNS = [
    "text_pages", "ocr_pages", "ocr_confidence", "empty_pages", "ocr_pictures", "skipped_pictures", "pages_done",
    "pages_total",
]


def test_an_older_catalog_gets_the_reading_columns_and_its_documents_read_as_not_yet_reported(tmp_path: Path) -> None:
    """A catalog from before documents kept how they were read and their pages read: its documents list with no
    reading, and the columns take values once the documents are read again."""
    path = tmp_path / "old.db"
    catalog = Catalog(f"sqlite:///{path}")
    with catalog.session() as session:
        kb = _kb("旧库")
        session.add(kb)
        doc = _doc(kb, "扫描件.pdf")
        session.add(doc)
    catalog.dispose()
    with sqlite3.connect(path) as connection:
        for column in READING_COLUMNS:
            connection.execute(f"ALTER TABLE documents DROP COLUMN {column}")
    catalog = Catalog(f"sqlite:///{path}")
    with catalog.session() as session:
        old = session.get(Document, doc.id)
        assert old is not None
        info = DocumentInfo.of(old, "旧库")
        assert (info.reading, info.pages_done, info.pages_total) == (None, None, None)
        old.text_pages, old.ocr_pages, old.ocr_confidence, old.empty_pages = 1, 2, 0.93, "4"
        old.ocr_pictures, old.skipped_pictures, old.pages_done, old.pages_total = 0, 0, 4, 4
    with catalog.session() as session:
        info = DocumentInfo.of(session.get(Document, doc.id), "旧库")  # type: ignore[arg-type]
    assert info.reading is not None and (info.reading.ocr_pages, info.reading.empty_pages) == (2, [4])
    assert (info.reading.ocr_confidence, info.pages_done) == (0.93, 4)
    catalog.dispose()


def test_postgresql_down_is_503_then_recovers(tmp_path: Path, embedding_model_dir: Path) -> None:
    with running_postgres() as postgres:
        database = postgres.create_database()
        settings = make_settings(tmp_path, embedding_model_dir, storage__catalog_url=postgres.url(database))
        with TestClient(create_app(settings)) as client:
            create_kb(client, "停机")
            upload_ready(client, "停机", ("a.txt", "数据库停机测试：白鹭在湿地筑巢。".encode()))
            postgres.stop()
            for method, path, body in [
                ("GET", "/api/kbs", None),
                ("GET", "/api/kbs/停机/documents", None),
                ("POST", "/api/kbs", {"name": "新库"}),
                ("POST", "/api/kbs/停机/search", {"question": "白鹭"}),
            ]:
                response = client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                detail = response.json()["detail"]
                assert detail.startswith(f"catalog database unavailable at postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/")
                assert "Traceback" not in detail
            postgres.start()
            assert [kb["name"] for kb in client.get("/api/kbs").json()] == ["停机"]
            hits = client.post("/api/kbs/停机/search", json={"question": "白鹭在哪里筑巢"}).json()["hits"]
            assert "白鹭" in hits[0]["text"]
