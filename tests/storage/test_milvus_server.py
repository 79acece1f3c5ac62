"""The backends themselves: each API instance really uses the Milvus and catalog its test id names, the whole
document cycle works on both, and Milvus going down gives 503.

The "server" Milvus is Milvus Lite's own server binary on a TCP port (see `MilvusOverTcp` in conftest), speaking
the same gRPC protocol as Milvus standalone, so the code path is the one a Milvus server or cluster gets.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pymilvus import MilvusClient

from app.api.main import create_app
from app.settings import Settings
from app.storage.vector_store import MilvusStore
from tests.conftest import Backend, MilvusOverTcp, create_kb, make_settings, upload_ready


def test_instance_uses_the_backend_its_id_names(client: TestClient, backend: Backend) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert services.store.is_lite is (backend.milvus == "lite")
    assert (services.settings.storage.data_dir / "milvus.db").exists() is (backend.milvus == "lite")
    assert services.catalog.engine.dialect.name == backend.catalog
    assert (services.settings.storage.data_dir / "catalog.db").exists() is (backend.catalog == "sqlite")


def test_ingest_search_replace_delete(client: TestClient) -> None:
    store = client.app.state.services.store  # type: ignore[attr-defined]
    kb = create_kb(client, "服务器库")
    assert store.has_collection(kb["collection_name"])
    doc = upload_ready(client, "服务器库", ("港口.txt", "北湾港的最大吃水深度为十四米。".encode()))[0]
    assert doc["status"] == "ready"
    for mode in ("dense", "bm25", "hybrid"):
        body = {"question": "北湾港吃水深度", "mode": mode}
        hits = client.post("/api/kbs/服务器库/search", json=body).json()["hits"]
        assert hits[0]["doc_id"] == doc["id"] and 0 <= hits[0]["score"] <= 1
    new = upload_ready(client, "服务器库", ("港口.txt", "北湾港的最大吃水深度为十六米。".encode()))[0]
    assert new["replaces_id"] == doc["id"]
    assert store.count_document_chunks(kb["collection_name"], doc["id"]) == 0
    assert client.delete(f"/api/kbs/服务器库/documents/{new['id']}").status_code == 204
    assert store.count(kb["collection_name"]) == 0
    assert client.delete("/api/kbs/服务器库").status_code == 204
    assert not store.has_collection(kb["collection_name"])


@pytest.mark.parametrize("milvus", ["lite", "server"])
def test_closing_one_store_leaves_another_on_the_same_milvus_working(
    request: pytest.FixtureRequest, tmp_path: Path, milvus: str
) -> None:
    """Two apps (or Services) in one process on one Milvus: one shutting down must not cut the other off."""
    uri = str(tmp_path / "milvus.db") if milvus == "lite" else request.getfixturevalue("milvus_server").uri
    first, second = MilvusStore(uri), MilvusStore(uri)
    name = f"kb_{uuid.uuid4().hex}"
    first.create_collection(name, 8)
    first.close()
    assert second.has_collection(name) and second.count(name) == 0
    second.drop_collection(name)
    second.close()


def own_milvus_server(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, name: str
) -> tuple[MilvusOverTcp, Settings]:
    """A started Milvus server for one test that stops or freezes it, and settings that give up on it after 3 s."""
    server = MilvusOverTcp(tmp_path_factory.mktemp(f"milvus-{name}"))
    server.start()
    settings = make_settings(
        tmp_path_factory.mktemp(f"{name}-data"),
        embedding_model_dir,
        storage__milvus_uri=server.uri,
        storage__milvus_timeout_s=3,
    )
    return server, settings


def test_milvus_down_is_503_and_catalog_untouched(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path
) -> None:
    """A Milvus server of its own, since this test stops it."""
    server, settings = own_milvus_server(tmp_path_factory, embedding_model_dir, "doomed")
    with TestClient(create_app(settings)) as client:
        create_kb(client, "断线")
        upload_ready(client, "断线", ("a.txt", "断线测试文档。".encode()))
        assert "断线" not in MilvusClient(uri=server.uri).list_collections()  # collections are named by id
        server.stop()
        response = client.post("/api/kbs/断线/search", json={"question": "断线"})
        assert response.status_code == 503
        assert "vector store unavailable at " + server.uri in response.json()["detail"]
        docs = client.get("/api/kbs/断线/documents").json()
        assert [d["status"] for d in docs] == ["ready"]


def test_a_milvus_that_stops_answering_is_503_not_500_and_searches_resume(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path
) -> None:
    """A Milvus that holds its port but answers nothing (frozen with SIGSTOP: what a server busy loading a
    1M-chunk collection looked like in bench_scale) times the gRPC call out; that must be a 503, not a 500."""
    server, settings = own_milvus_server(tmp_path_factory, embedding_model_dir, "frozen")
    try:
        with TestClient(create_app(settings)) as client:
            create_kb(client, "冻结")
            doc = upload_ready(client, "冻结", ("a.txt", "冻结测试文档：灯塔在岛的北端。".encode()))[0]
            os.kill(server.server._p.pid, signal.SIGSTOP)
            try:
                response = client.post("/api/kbs/冻结/search", json={"question": "灯塔在哪里"})
            finally:
                os.kill(server.server._p.pid, signal.SIGCONT)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "vector_store_unavailable"
            assert "vector store unavailable at " + server.uri in response.json()["detail"]
            hits = client.post("/api/kbs/冻结/search", json={"question": "灯塔在哪里"}).json()["hits"]
            assert hits[0]["doc_id"] == doc["id"]
    finally:
        server.stop()
