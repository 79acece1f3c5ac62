"""Knowledge-base lifecycle and name validation through the REST API, against Milvus Lite and SQLite."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import create_kb


def _milvus(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.services.store  # type: ignore[attr-defined]


def test_create_list_show_delete_chinese_name(client: TestClient) -> None:
    kb = create_kb(client, "合同库")
    assert kb["name"] == "合同库"
    assert kb["collection_name"].isascii() and kb["collection_name"].startswith("kb_")
    assert _milvus(client).has_collection(kb["collection_name"])

    names = [k["name"] for k in client.get("/api/kbs").json()]
    assert "合同库" in names
    shown = client.get("/api/kbs/合同库").json()
    assert shown["id"] == kb["id"] and shown["document_count"] == 0

    assert client.delete("/api/kbs/合同库").status_code == 204
    assert client.get("/api/kbs/合同库").status_code == 404
    assert not _milvus(client).has_collection(kb["collection_name"])


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_searching_an_empty_knowledge_base_finds_nothing(client: TestClient, mode: str) -> None:
    """Milvus itself fails a BM25 search of an empty collection; the API answers with no hits."""
    name = f"空库-{mode}"
    create_kb(client, name)
    response = client.post(f"/api/kbs/{name}/search", json={"question": "红树林在哪里生长", "mode": mode})
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == []


def test_nul_in_a_description_is_422_on_every_catalog(client: TestClient) -> None:
    """PostgreSQL cannot store NUL in text (SQLite can); both refuse it the same way."""
    response = client.post("/api/kbs", json={"name": "空字符", "description": "a\x00b"})
    assert response.status_code == 422
    assert "description must not contain NUL" in response.json()["detail"]
    assert client.get("/api/kbs/空字符").status_code == 404


def test_duplicate_name_conflicts(client: TestClient) -> None:
    create_kb(client, "dup kb")
    response = client.post("/api/kbs", json={"name": "dup kb"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 65, "limit is 64"),
        ("a/b", "'/'"),
        ("a\\b", "'/'"),
        ("bad\x00name", "control"),
        ("tab\tname", "control"),
    ],
)
def test_unusable_names_are_rejected(client: TestClient, name: str, reason: str) -> None:
    before = client.get("/api/kbs").json()
    response = client.post("/api/kbs", json={"name": name})
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert client.get("/api/kbs").json() == before


@pytest.mark.parametrize("name", ['引号"库', "it's", 'x" or doc_id != "', "a && b || c", "《预算》2024（草案）"])
def test_names_milvus_would_reject_map_to_safe_collections(client: TestClient, name: str) -> None:
    kb = create_kb(client, name)
    assert kb["name"] == name
    assert _milvus(client).has_collection(kb["collection_name"])
    assert client.get(f"/api/kbs/{name}").json()["id"] == kb["id"]
    assert client.delete(f"/api/kbs/{name}").status_code == 204


def test_missing_knowledge_base_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/kbs/nope"),
        ("DELETE", "/api/kbs/nope"),
        ("POST", "/api/kbs/nope/rebuild"),
        ("GET", "/api/kbs/nope/documents"),
        ("GET", "/api/kbs/nope/documents/0123456789abcdef0123456789abcdef"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "nope" in response.json()["detail"]
    response = client.post("/api/kbs/nope/search", json={"question": "hi"})
    assert response.status_code == 404
    response = client.post("/api/kbs/nope/documents", files=[("files", ("a.txt", b"hello"))])
    assert response.status_code == 404


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/kbs/{kb_name}/search" in paths
    assert "/api/kbs/{kb_name}/documents" in paths


def test_evaluation_copies_have_reserved_names_and_stay_out_of_listings(client: TestClient) -> None:
    refused = client.post("/api/kbs", json={"name": "评测临时-mine"})
    assert refused.status_code == 422 and "reserved" in refused.json()["detail"]
    kbs = client.app.state.services.knowledge_bases  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="reserved"):
        kbs.create("plain name", temporary=True)
    kbs.create("评测临时-0000-300", chunk_size=300, temporary=True)
    try:
        assert client.get("/api/kbs/评测临时-0000-300").json()["chunk_size"] == 300
        assert "评测临时-0000-300" not in [k["name"] for k in client.get("/api/kbs").json()]
        assert "kb:评测临时-0000-300" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    finally:
        assert client.delete("/api/kbs/评测临时-0000-300").status_code == 204
