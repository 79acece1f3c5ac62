"""The same API against a Milvus server reached over TCP (http://host:port) instead of an embedded file.

Milvus Lite's own server binary listens on a TCP port here, speaking the same gRPC protocol as Milvus
standalone, so the code path is the one a Milvus server or cluster gets. Also: Milvus going down gives 503.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from milvus_lite.server import Server
from pymilvus import MilvusClient

from app.api.main import create_app
from tests.conftest import create_kb, free_port, make_settings, upload_ready


class MilvusOverTcp:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server = Server(str(folder / "server.db"), address=f"127.0.0.1:{self.port}")

    def start(self) -> None:
        assert self.server.init() and self.server.start(), "milvus-lite server did not start"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                MilvusClient(uri=self.uri, timeout=2).list_collections()
                return
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"Milvus at {self.uri} did not answer")

    def stop(self) -> None:
        if self.server._p is not None:
            self.server._p.terminate()
        self.server.stop()


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusOverTcp]:
    server = MilvusOverTcp(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tcp_client(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, milvus: MilvusOverTcp):
    settings = make_settings(tmp_path_factory.mktemp("tcp-data"), embedding_model_dir, milvus_uri=milvus.uri)
    with TestClient(create_app(settings)) as client:
        yield client


def test_store_is_a_server_not_a_file(tcp_client: TestClient, milvus: MilvusOverTcp) -> None:
    store = tcp_client.app.state.services.store  # type: ignore[attr-defined]
    assert not store.is_lite and store.uri == milvus.uri
    assert not (tcp_client.app.state.services.settings.data_dir / "milvus.db").exists()  # type: ignore[attr-defined]


def test_ingest_search_replace_delete_over_tcp(tcp_client: TestClient, milvus: MilvusOverTcp) -> None:
    kb = create_kb(tcp_client, "服务器库")
    assert kb["collection_name"] in MilvusClient(uri=milvus.uri).list_collections()
    doc = upload_ready(tcp_client, "服务器库", ("港口.txt", "北湾港的最大吃水深度为十四米。".encode()))[0]
    assert doc["status"] == "ready"
    for mode in ("dense", "bm25", "hybrid"):
        body = {"question": "北湾港吃水深度", "mode": mode}
        hits = tcp_client.post("/api/kbs/服务器库/search", json=body).json()["hits"]
        assert hits[0]["doc_id"] == doc["id"] and 0 <= hits[0]["score"] <= 1
    new = upload_ready(tcp_client, "服务器库", ("港口.txt", "北湾港的最大吃水深度为十六米。".encode()))[0]
    assert new["replaces_id"] == doc["id"]
    store = tcp_client.app.state.services.store  # type: ignore[attr-defined]
    assert store.count_document_chunks(kb["collection_name"], doc["id"]) == 0
    assert tcp_client.delete(f"/api/kbs/服务器库/documents/{new['id']}").status_code == 204
    assert store.count(kb["collection_name"]) == 0
    assert tcp_client.delete("/api/kbs/服务器库").status_code == 204
    assert kb["collection_name"] not in MilvusClient(uri=milvus.uri).list_collections()


def test_milvus_down_is_503_and_catalog_untouched(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path
) -> None:
    server = MilvusOverTcp(tmp_path_factory.mktemp("milvus-doomed"))
    server.start()
    settings = make_settings(
        tmp_path_factory.mktemp("doomed-data"), embedding_model_dir, milvus_uri=server.uri, milvus_timeout_s=3
    )
    with TestClient(create_app(settings)) as client:
        create_kb(client, "断线")
        upload_ready(client, "断线", ("a.txt", "断线测试文档。".encode()))
        server.stop()
        response = client.post("/api/kbs/断线/search", json={"question": "断线"})
        assert response.status_code == 503
        assert "vector store unavailable at " + server.uri in response.json()["detail"]
        docs = client.get("/api/kbs/断线/documents").json()
        assert [d["status"] for d in docs] == ["ready"]
