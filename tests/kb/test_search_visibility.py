"""A search never returns a chunk of a document that is not ready, at any step of indexing, replacing and deleting,
and it learns which documents to leave out without reading the ready ones (app/kb/visibility.py).

The windows between a step in Milvus and the catalog's change (vectors inserted, not yet marked ready; a row gone,
its vectors not yet deleted) last milliseconds, too short to hit for real: `HeldIndexer` holds each one open on a
real threading.Event while the test searches, and the transitions themselves run for real."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from app.kb.ingestion import DocumentIndexer
from app.services import Services
from app.settings import Settings
from app.storage.catalog import Catalog, Document, DocumentStatus, VectorDeletion, new_id
from tests.conftest import doc_state, wait_doc_state, wait_until

KB = "可见性"
MODES = ["dense", "bm25", "hybrid"]
PHRASE = "翡翠湾灯塔的守夜人每晚点灯三次"
BACKGROUND = {
    f"背景{i}.txt": f"第{i}份背景资料：{place}的{thing}每周开放五天。"
    for i, (place, thing) in enumerate([("东港", "图书馆"), ("西山", "游泳馆"), ("南湖", "菜市场"), ("北岭", "体育场")])
}
HOLD_TIMEOUT_S = 300  # bounds a hang only


@dataclass
class Gate:
    """Where indexing waits until the test lets it go."""

    reached: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)

    def wait_reached(self) -> None:
        assert self.reached.wait(HOLD_TIMEOUT_S), "indexing never reached the held step"


class HeldIndexer(DocumentIndexer):
    """A real indexer that waits at two steps for the documents a test names: before marking a group ready (its
    vectors are in Milvus), and before deleting vectors (a retired or deleted document's row is already gone)."""

    gates: dict[tuple[str, str], Gate]

    def hold_at(self, step: str, key: str) -> Gate:
        """`step` "finish" (key: a file name) or "remove" (key: a document id)."""
        if not hasattr(self, "gates"):
            self.gates = {}
        self.gates[(step, key)] = gate = Gate()
        return gate

    def _pause(self, step: str, keys: set[str]) -> None:
        for (held_step, key), gate in list(getattr(self, "gates", {}).items()):
            if held_step == step and key in keys:
                del self.gates[(held_step, key)]
                gate.reached.set()
                assert gate.go.wait(HOLD_TIMEOUT_S), "the test never let indexing go on"

    def _finish(self, jobs: list) -> None:  # type: ignore[type-arg]
        self._pause("finish", {job.filename for job in jobs})
        super()._finish(jobs)

    def remove_vectors(self, targets: list[tuple[str, str]], release: bool = True) -> None:
        self._pause("remove", {doc_id for _, doc_id in targets})
        super().remove_vectors(targets, release)


@pytest.fixture(scope="module")
def services(module_settings: Settings) -> Iterator[Services]:
    services = Services(module_settings, indexer_type=HeldIndexer)
    kbs = services.knowledge_bases
    kbs.create(KB)
    outcomes = kbs.upload_many(KB, [(name, BytesIO(body.encode())) for name, body in BACKGROUND.items()])
    for outcome in outcomes:
        wait_doc_state(services.catalog, outcome.document.id, _ready, {"queued", "processing"})
    yield services
    services.close()


def _ready(state: object) -> bool:
    return getattr(state, "status", None) == "ready"


def _indexer(services: Services) -> HeldIndexer:
    assert isinstance(services.indexer, HeldIndexer)
    return services.indexer


def _found(services: Services, question: str = PHRASE) -> dict[str, set[str]]:
    """The documents each mode returns for the question (top 20: every document of this small base)."""
    return {
        mode: {hit.doc_id for hit in services.search.search(KB, question, top_k=20, mode=mode).hits} for mode in MODES
    }


def _chunks_in_milvus(services: Services, doc_id: str) -> int:
    return services.store.count_document_chunks(services.knowledge_bases.get(KB).collection_name, doc_id)


def _held(catalog: Catalog, doc_id: str) -> bool:
    with catalog.session() as session:
        return session.scalar(select(VectorDeletion).where(VectorDeletion.doc_id == doc_id)) is not None


def _upload(services: Services, name: str, body: str) -> str:
    return services.knowledge_bases.upload(KB, name, BytesIO(body.encode())).document.id


def test_a_document_whose_vectors_are_inserted_is_not_found_until_it_is_ready(services: Services) -> None:
    gate = _indexer(services).hold_at("finish", "插入中.txt")
    doc_id = _upload(services, "插入中.txt", f"{PHRASE}，这是正在索引的文档。")
    gate.wait_reached()
    try:
        assert doc_state(services.catalog, doc_id).status == "processing"
        assert _chunks_in_milvus(services, doc_id) > 0
        assert all(doc_id not in found for found in _found(services).values())
    finally:
        gate.go.set()
    wait_doc_state(services.catalog, doc_id, _ready, {"processing"})
    assert all(doc_id in found for found in _found(services).values())


def test_a_replaced_version_is_found_until_the_new_one_is_ready_and_never_after(services: Services) -> None:
    indexer = _indexer(services)
    old_id = _upload(services, "版本.txt", f"{PHRASE}。第一版：每晚点灯三次。")
    wait_doc_state(services.catalog, old_id, _ready, {"queued", "processing"})
    inserted = indexer.hold_at("finish", "版本.txt")
    retiring = indexer.hold_at("remove", old_id)
    new_id_ = _upload(services, "版本.txt", f"{PHRASE}。第二版：改为每晚点灯四次。")
    inserted.wait_reached()
    try:
        assert _chunks_in_milvus(services, new_id_) > 0 and _chunks_in_milvus(services, old_id) > 0
        for found in _found(services).values():
            assert old_id in found and new_id_ not in found
    finally:
        inserted.go.set()
    retiring.wait_reached()  # the new version is ready and the old row gone; the old vectors are still in Milvus
    try:
        assert doc_state(services.catalog, new_id_).status == "ready"
        assert _chunks_in_milvus(services, old_id) > 0 and _held(services.catalog, old_id)
        for found in _found(services).values():
            assert new_id_ in found and old_id not in found
    finally:
        retiring.go.set()
    wait_until(lambda: not _held(services.catalog, old_id), "the retired version's hold to be released")
    assert _chunks_in_milvus(services, old_id) == 0
    assert all(new_id_ in found and old_id not in found for found in _found(services).values())


def test_a_deleted_document_is_not_found_while_its_vectors_are_removed(services: Services) -> None:
    doc_id = _upload(services, "删除.txt", f"{PHRASE}，这份文档将被删除。")
    wait_doc_state(services.catalog, doc_id, _ready, {"queued", "processing"})
    assert all(doc_id in found for found in _found(services).values())
    removing = _indexer(services).hold_at("remove", doc_id)
    deleting = threading.Thread(target=services.knowledge_bases.delete_document, args=(KB, doc_id))
    deleting.start()
    removing.wait_reached()
    try:
        assert _chunks_in_milvus(services, doc_id) > 0 and _held(services.catalog, doc_id)
        assert all(doc_id not in found for found in _found(services).values())
    finally:
        removing.go.set()
        deleting.join(HOLD_TIMEOUT_S)
    assert _chunks_in_milvus(services, doc_id) == 0 and not _held(services.catalog, doc_id)


def test_a_document_deleted_while_indexed_stays_hidden_until_its_indexer_lets_go(services: Services) -> None:
    """The indexer may still insert vectors of a document deleted under it, so the delete keeps the hold and the
    indexer releases it when it drops the work."""
    gate = _indexer(services).hold_at("finish", "中途删除.txt")
    doc_id = _upload(services, "中途删除.txt", f"{PHRASE}，索引途中被删除。")
    gate.wait_reached()
    try:
        services.knowledge_bases.delete_document(KB, doc_id)
        assert _held(services.catalog, doc_id)
        assert all(doc_id not in found for found in _found(services).values())
    finally:
        gate.go.set()
    wait_until(lambda: not _held(services.catalog, doc_id), "the indexer to release the hold")
    assert _chunks_in_milvus(services, doc_id) == 0


class Statements:
    """The SQL a block of code sends to the catalog, with its parameters."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.sent: list[tuple[str, object]] = []

    def _record(self, _conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        self.sent.append((statement, parameters))

    def __enter__(self) -> Statements:
        event.listen(self.catalog.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.catalog.engine, "before_cursor_execute", self._record)

    def rows_each_returns(self) -> list[int]:
        """Each SELECT sent, run again: how many rows it returns."""
        counts = []
        with self.catalog.engine.connect() as connection:
            for statement, parameters in self.sent:
                if statement.lstrip().upper().startswith("SELECT"):
                    counts.append(len(connection.exec_driver_sql(statement, parameters).fetchall()))  # type: ignore[arg-type]
        return counts


def test_a_search_reads_only_the_documents_that_are_not_ready(services: Services) -> None:
    """With every document ready, no catalog statement of a search returns more than one row (the knowledge
    base, whether it has a ready document); with one document mid-indexing, the one that lists documents returns
    exactly that one."""
    catalog = services.catalog
    with Statements(catalog) as quiet:
        services.search.search(KB, PHRASE)
    assert quiet.sent and max(quiet.rows_each_returns()) <= 1
    assert not any("ready" in str(parameters) for statement, parameters in quiet.sent if "UNION" in statement)

    gate = _indexer(services).hold_at("finish", "统计.txt")
    doc_id = _upload(services, "统计.txt", f"{PHRASE}，统计用。")
    gate.wait_reached()
    try:
        with Statements(catalog) as busy:
            services.search.search(KB, PHRASE)
        listing = [(s, p) for s, p in busy.sent if "UNION" in s]
        assert len(listing) == 1
        with catalog.engine.connect() as connection:
            assert [r[0] for r in connection.exec_driver_sql(*listing[0]).fetchall()] == [doc_id]  # type: ignore[arg-type]
    finally:
        gate.go.set()
    wait_doc_state(catalog, doc_id, _ready, {"processing"})


def _add_ready_rows(catalog: Catalog, kb_id: str, count: int) -> None:
    rows = [
        {
            "id": new_id(),
            "kb_id": kb_id,
            "filename": f"f{i}.txt",
            "file_type": "txt",
            "stored_path": "",
            "sha256": f"{i:064x}",
            "size_bytes": 1,
            "status": DocumentStatus.ready.name,
            "chunk_count": 1,
            "chunks_embedded": 1,
            "index_attempts": 0,
        }
        for i in range(count)
    ]
    with catalog.engine.begin() as connection:
        connection.execute(Document.__table__.insert(), rows)


def test_the_catalog_work_of_a_search_does_not_grow_with_ready_documents(services: Services) -> None:
    """SQLite counts the virtual-machine steps of the search's catalog statements: a knowledge base with 20,000
    more ready documents costs the same steps (give or take the index's depth), and no statement scans the
    documents table."""
    catalog = services.catalog
    if catalog.engine.dialect.name != "sqlite":
        pytest.skip("counts SQLite's virtual-machine steps")
    kbs = services.knowledge_bases
    small, large = kbs.create("步数小库"), kbs.create("步数大库")
    _add_ready_rows(catalog, small.id, 10)
    _add_ready_rows(catalog, large.id, 20_000)

    def steps(name: str) -> int:
        counted, counting = [0], []

        def count() -> int:
            counted[0] += 1
            return 0

        def install(conn, *_args) -> None:  # type: ignore[no-untyped-def]
            counting.append(sqlite := conn.connection.driver_connection)
            sqlite.set_progress_handler(count, 1)

        event.listen(catalog.engine, "before_cursor_execute", install)
        try:
            kbs.search_scope(name)
        finally:
            event.remove(catalog.engine, "before_cursor_execute", install)
            for sqlite in counting:
                sqlite.set_progress_handler(None, 1)
        return counted[0]

    steps(large.name)  # warm the statement cache
    assert abs(steps(large.name) - steps(small.name)) < 200  # reading the 20,000 would take over 20,000 steps
    with Statements(catalog) as sent:
        kbs.search_scope(large.name)
    with catalog.engine.connect() as connection:
        for statement, parameters in sent.sent:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()  # type: ignore[arg-type]
            assert not any("SCAN documents" in str(row) for row in plan), plan


def test_an_existing_catalog_gets_the_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Catalog(url).dispose()
    engine_catalog = Catalog(url)
    with engine_catalog.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_documents_kb_status_attempts"))
    engine_catalog.dispose()
    reopened = Catalog(url)
    with reopened.engine.connect() as connection:
        names = {row[1] for row in connection.exec_driver_sql("PRAGMA index_list(documents)")}
    reopened.dispose()
    assert "ix_documents_kb_status_attempts" in names
