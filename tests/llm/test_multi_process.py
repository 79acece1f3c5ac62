"""Several API processes (real `kbqa serve` subprocesses, each its own uvicorn) sharing one Milvus server over TCP,
one PostgreSQL catalog and one data folder for the uploaded files (a shared volume), as behind a load balancer.

What one process changes, the others see at once: nothing is cached per process but the embedding model. A
document is indexed by exactly one process: a process starting up leaves the documents other live processes are
indexing alone, and takes over those of a process that died once its lease ran out.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.storage.catalog import Catalog, Document
from app.storage.vector_store import MilvusStore
from tests.conftest import (
    POSTGRES_ABSENT,
    Backend,
    api_env,
    backend_overrides,
    doc_state,
    kbqa_serve,
    postgres_bin_dir,
    wait_doc_state,
)
from tests.fixtures_docs import make_numbered_chinese_text

pytestmark = pytest.mark.skipif(postgres_bin_dir() is None, reason=POSTGRES_ABSENT)

# Short leases, so a takeover after a crash happens within seconds (renewed every 1.25 s, swept every 5 s).
LEASE_S = 5


@dataclass
class Cluster:
    a: httpx.Client
    b: httpx.Client
    data_dir: Path
    model_dir: Path
    overrides: dict[str, str]
    logs: Path
    catalog: Catalog  # the test's own view of the shared catalog and Milvus
    store: MilvusStore

    def new_env(self) -> dict[str, str]:
        return api_env(self.data_dir, self.model_dir, self.overrides)


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path
) -> Iterator[Cluster]:
    data_dir, logs = tmp_path_factory.mktemp("shared-data"), tmp_path_factory.mktemp("api-logs")
    with backend_overrides(request, Backend("server", "postgresql")) as storage, ExitStack() as stack:
        overrides = {**storage, "ingest__lease_s": str(LEASE_S)}
        served = [
            stack.enter_context(kbqa_serve(api_env(data_dir, embedding_model_dir, overrides), logs / f"{name}.log"))
            for name in ("a", "b")
        ]
        a, b = (stack.enter_context(httpx.Client(base_url=s.url, timeout=60)) for s in served)
        catalog = Catalog(storage["storage__catalog_url"])
        stack.callback(catalog.dispose)
        store = MilvusStore(storage["storage__milvus_uri"])
        stack.callback(store.close)
        yield Cluster(a, b, data_dir, embedding_model_dir, overrides, logs, catalog, store)


def wait_ready(http: httpx.Client, kb: str, doc_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = http.get(f"/api/kbs/{kb}/documents/{doc_id}").json()
        if doc["status"] in {"ready", "failed"}:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)


def upload(http: httpx.Client, kb: str, name: str, data: bytes) -> dict:
    response = http.post(f"/api/kbs/{kb}/documents", files=[("files", (name, data))])
    assert response.status_code == 202, response.text
    return response.json()[0]["document"]


def search(http: httpx.Client, kb: str, question: str, top_k: int = 5) -> list[dict]:
    response = http.post(f"/api/kbs/{kb}/search", json={"question": question, "top_k": top_k})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def test_a_document_uploaded_through_one_is_listed_searched_and_deleted_through_the_other(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    assert a.post("/api/kbs", json={"name": "共享库"}).status_code == 201
    assert "共享库" in [kb["name"] for kb in b.get("/api/kbs").json()]
    fact = "共享测试：灰鲸每年十二月经过石屿海峡。".encode()
    doc = upload(a, "共享库", "海港.txt", fact)
    ready = wait_ready(b, "共享库", doc["id"])
    assert ready["status"] == "ready" and ready["chunk_count"] == 1
    assert [d["id"] for d in b.get("/api/kbs/共享库/documents").json()] == [doc["id"]]
    assert search(b, "共享库", "灰鲸什么时候经过海峡")[0]["doc_id"] == doc["id"]
    chunks = b.get(f"/api/kbs/共享库/documents/{doc['id']}/chunks").json()
    assert "灰鲸" in chunks[0]["text"]
    # The same content through the other process is recognised as a duplicate: one catalog.
    again = b.post("/api/kbs/共享库/documents", files=[("files", ("copy.txt", fact))])
    assert again.json()[0]["duplicate"] is True

    assert b.delete(f"/api/kbs/共享库/documents/{doc['id']}").status_code == 204
    assert a.get(f"/api/kbs/共享库/documents/{doc['id']}").status_code == 404
    assert a.get("/api/kbs/共享库/documents").json() == []
    assert search(a, "共享库", "灰鲸什么时候经过海峡") == []
    collection = a.get("/api/kbs/共享库").json()["collection_name"]
    assert cluster.store.count_document_chunks(collection, doc["id"]) == 0


def test_deleting_a_knowledge_base_through_one_shows_through_the_other(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    assert a.post("/api/kbs", json={"name": "临时库"}).status_code == 201
    doc = upload(b, "临时库", "a.txt", "临时库的内容：红树林在潮间带生长。".encode())
    wait_ready(b, "临时库", doc["id"])
    assert search(a, "临时库", "红树林")[0]["doc_id"] == doc["id"]
    collection = b.get("/api/kbs/临时库").json()["collection_name"]

    assert a.delete("/api/kbs/临时库").status_code == 204
    assert not cluster.store.has_collection(collection)
    assert "临时库" not in [kb["name"] for kb in b.get("/api/kbs").json()]
    for response in (
        b.get("/api/kbs/临时库"),
        b.post("/api/kbs/临时库/search", json={"question": "红树林"}),
        b.post("/api/kbs/临时库/documents", files=[("files", ("b.txt", "新内容".encode()))]),
    ):
        assert response.status_code == 404, response.text
    # The same name again, through the other process: a new, empty knowledge base that both see.
    assert b.post("/api/kbs", json={"name": "临时库"}).status_code == 201
    assert search(a, "临时库", "红树林") == []
    doc = upload(a, "临时库", "c.txt", "重建后的内容：丹顶鹤在湿地越冬。".encode())
    wait_ready(a, "临时库", doc["id"])
    assert search(b, "临时库", "丹顶鹤")[0]["doc_id"] == doc["id"]


def test_the_same_name_created_through_both_at_once_exists_once(cluster: Cluster) -> None:
    """Both processes check that the name is free, then insert: the database's unique name decides, and the
    loser answers 409 like any duplicate (not a 500 from the constraint)."""
    names = [f"并发库{i}" for i in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            (name, which): pool.submit(http.post, "/api/kbs", json={"name": name})
            for name in names
            for which, http in (("a", cluster.a), ("b", cluster.b))
        }
        statuses = {key: future.result().status_code for key, future in futures.items()}
    for name in names:
        assert sorted([statuses[(name, "a")], statuses[(name, "b")]]) == [201, 409], statuses
    listed = [kb["name"] for kb in cluster.a.get("/api/kbs").json()]
    assert all(listed.count(name) == 1 for name in names)
    collections = {cluster.a.get(f"/api/kbs/{name}").json()["collection_name"] for name in names}
    assert all(cluster.store.has_collection(c) for c in collections)


def test_rebuild_through_one_then_upload_and_search_through_the_other(cluster: Cluster) -> None:
    """A rebuild drops and recreates the collection under the same name; the other process must not keep using
    what it knew of the old one."""
    a, b = cluster.a, cluster.b
    assert a.post("/api/kbs", json={"name": "重建库"}).status_code == 201
    first = upload(b, "重建库", "1.txt", "重建前：雪松的树龄超过三百年。".encode())
    wait_ready(b, "重建库", first["id"])
    assert a.post("/api/kbs/重建库/rebuild").status_code == 202
    wait_ready(a, "重建库", first["id"])
    second = upload(b, "重建库", "2.txt", "重建后：银杏叶在十一月变黄。".encode())
    assert wait_ready(b, "重建库", second["id"])["status"] == "ready"
    assert search(b, "重建库", "银杏叶什么时候变黄")[0]["doc_id"] == second["id"]
    assert search(a, "重建库", "雪松的树龄")[0]["doc_id"] == first["id"]


def test_in_flight_documents_are_not_stolen_and_a_dead_process_is_taken_over(cluster: Cluster) -> None:
    """A third process uploads a large file and starts indexing it; it is then frozen (SIGSTOP) mid-indexing, its
    claim still valid (its lease is long). A fourth process starting meanwhile leaves the document alone (before
    claims, it re-queued it: progress back to 0, indexed twice). The frozen process is then killed; its lease
    running out is simulated by moving it into the past instead of waiting ten minutes, and a surviving process
    finishes the document, without duplicate chunks in Milvus."""
    assert cluster.a.post("/api/kbs", json={"name": "接管库"}).status_code == 201
    with ExitStack() as stack:
        victim_env = {**cluster.new_env(), "KBQA_INGEST__LEASE_S": "600"}
        served = stack.enter_context(kbqa_serve(victim_env, cluster.logs / "victim.log"))
        victim = stack.enter_context(httpx.Client(base_url=served.url, timeout=60))
        doc = upload(victim, "接管库", "长文.txt", make_numbered_chinese_text(600, "多进程索引"))
        wait_doc_state(cluster.catalog, doc["id"], lambda s: s.chunks_embedded > 0, passing={"queued", "processing"})
        os.kill(served.process.pid, signal.SIGSTOP)
        frozen = doc_state(cluster.catalog, doc["id"])
        assert frozen.status == "processing", "the document was indexed before the process was frozen: make it bigger"
        assert frozen.held_by(served.process.pid)

        stack.enter_context(kbqa_serve(cluster.new_env(), cluster.logs / "latecomer.log"))  # resumes on startup
        assert doc_state(cluster.catalog, doc["id"]) == frozen, "the latecomer took a document a live process holds"

        os.kill(served.process.pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        with cluster.catalog.session() as session:
            row = session.get(Document, doc["id"])
            assert row is not None
            row.lease_until = killed_at - timedelta(seconds=1)
        wait_doc_state(cluster.catalog, doc["id"], lambda s: s.status == "ready", passing={"processing"})
    final = cluster.b.get(f"/api/kbs/接管库/documents/{doc['id']}").json()
    assert final["status"] == "ready" and final["chunk_count"] >= 100
    assert datetime.fromisoformat(final["indexed_at"]) > killed_at
    collection = cluster.b.get("/api/kbs/接管库").json()["collection_name"]
    assert cluster.store.count_document_chunks(collection, doc["id"]) == final["chunk_count"]
    assert search(cluster.a, "接管库", "港口城市的码头停靠着什么")[0]["doc_id"] == doc["id"]
