"""Background indexing: the API keeps answering during a large upload, progress shows, failures leave nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.kb import ingestion
from tests.conftest import create_kb, upload, upload_ready, wait_documents
from tests.fixtures_docs import make_numbered_chinese_text


def test_api_answers_while_a_large_upload_is_indexed(client: TestClient) -> None:
    create_kb(client, "后台")
    upload_ready(client, "后台", ("small.txt", "小文件：长颈鹿的脖子有七节颈椎。".encode()))
    doc = upload(client, "后台", ("big.txt", make_numbered_chinese_text(600)))[0]["document"]
    seen_processing = []
    progress = []
    for _ in range(200):
        current = client.get(f"/api/kbs/后台/documents/{doc['id']}").json()
        if current["status"] == "ready":
            break
        if current["status"] == "processing" and current["chunk_count"]:
            assert client.get("/health").status_code == 200
            hits = client.post("/api/kbs/后台/search", json={"question": "长颈鹿有几节颈椎"}).json()["hits"]
            still = client.get(f"/api/kbs/后台/documents/{doc['id']}").json()
            seen_processing.append(still["status"] == "processing" and "长颈鹿" in hits[0]["text"])
            progress.append(still["chunks_embedded"])
    assert any(seen_processing), "no request was answered while the big document was being indexed"
    assert progress == sorted(progress)
    final = wait_documents(client, "后台", [doc["id"]])[0]
    assert final["status"] == "ready" and final["chunk_count"] > 100
    assert final["chunks_embedded"] == final["chunk_count"]
    page = client.get(f"/api/kbs/后台/documents/{doc['id']}/chunks", params={"offset": 100, "limit": 5}).json()
    assert [c["chunk_index"] for c in page] == [100, 101, 102, 103, 104]
    last = client.get(f"/api/kbs/后台/documents/{doc['id']}/chunks", params={"offset": final["chunk_count"] - 1}).json()
    assert [c["chunk_index"] for c in last] == [final["chunk_count"] - 1]


def test_failure_midway_leaves_no_partial_chunks(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus refusing the second insert batch cannot be caused on demand, so that one call is faked:
    the first batch really reaches Milvus, and must be gone afterwards."""
    create_kb(client, "半途失败")
    keep = upload_ready(client, "半途失败", ("keep.txt", "保留的文档：海豚用回声定位。".encode()))[0]
    store = client.app.state.services.store  # type: ignore[attr-defined]
    real_insert = store.insert
    calls = {"n": 0}

    def failing_insert(name: str, rows: list) -> int:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated Milvus failure on the second batch")
        return real_insert(name, rows)

    monkeypatch.setattr(ingestion, "INSERT_BATCH", 8)
    monkeypatch.setattr(store, "insert", failing_insert)
    doc = upload(client, "半途失败", ("fails.txt", make_numbered_chinese_text(200)))[0]["document"]
    doc = wait_documents(client, "半途失败", [doc["id"]])[0]
    monkeypatch.undo()

    assert calls["n"] == 2
    assert doc["status"] == "failed" and "simulated Milvus failure" in doc["error"]
    collection = client.get("/api/kbs/半途失败").json()["collection_name"]
    assert store.count_document_chunks(collection, doc["id"]) == 0
    assert store.count_document_chunks(collection, keep["id"]) == keep["chunk_count"]
    hits = client.post("/api/kbs/半途失败/search", json={"question": "海豚"}).json()["hits"]
    assert hits[0]["doc_id"] == keep["id"]


def test_unfinished_documents_resume_after_restart(module_settings, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    """A document left 'processing' by a crash (with some vectors already in Milvus) is indexed again."""
    from app.storage.catalog import Document, DocumentStatus

    create_kb(client, "重启")
    doc = upload_ready(client, "重启", ("r.txt", "重启恢复测试：灯塔每晚十点亮灯。".encode()))[0]
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.catalog.session() as session:
        row = session.get(Document, doc["id"])
        row.status = DocumentStatus.processing
    assert services.queue.resume_unfinished() == 1
    services.queue.wait_idle(120)
    again = client.get(f"/api/kbs/重启/documents/{doc['id']}").json()
    assert again["status"] == "ready"
    collection = client.get("/api/kbs/重启").json()["collection_name"]
    assert services.store.count_document_chunks(collection, doc["id"]) == doc["chunk_count"]
