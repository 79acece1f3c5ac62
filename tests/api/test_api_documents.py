"""Uploading, indexing, replacing and deleting documents, and every kind of bad upload."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from tests.conftest import create_kb, upload, upload_ready, wait_documents

FACT_ZH = "紫藤湖水库的设计蓄水量为三千二百万立方米，于一九八七年建成。"
FACT_EN = "The Quillfeather bridge was painted teal in 1931 by the harbour board."


def _store(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.services.store  # type: ignore[attr-defined]


def _chunk_count_in_milvus(client: TestClient, kb: str, doc_id: str) -> int:
    collection = client.get(f"/api/kbs/{kb}").json()["collection_name"]
    return _store(client).count_document_chunks(collection, doc_id)


def _search(client: TestClient, kb: str, question: str, **extra: object) -> list[dict]:
    response = client.post(f"/api/kbs/{kb}/search", json={"question": question, **extra})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


@pytest.fixture(scope="module")
def kb(client: TestClient) -> str:
    create_kb(client, "文档库")
    return "文档库"


def test_upload_txt_and_markdown_then_inspect(client: TestClient, kb: str) -> None:
    body = ("前言。\n\n" + FACT_ZH + "\n\n" + "其他无关的段落内容。" * 30).encode("utf-8")
    markdown = f"# Bridges\n\n## Quillfeather\n\n{FACT_EN}\n".encode()
    docs = upload_ready(client, kb, ("水库.txt", body), ("bridges.md", markdown))
    assert [d["status"] for d in docs] == ["ready", "ready"]
    txt = next(d for d in docs if d["filename"] == "水库.txt")
    assert txt["sha256"] == hashlib.sha256(body).hexdigest()
    assert txt["size_bytes"] == len(body)
    assert txt["chunk_count"] >= 1 and txt["progress"] == 1.0 and txt["indexed_at"]
    assert _chunk_count_in_milvus(client, kb, txt["id"]) == txt["chunk_count"]

    chunks = client.get(f"/api/kbs/{kb}/documents/{txt['id']}/chunks").json()
    assert [c["chunk_index"] for c in chunks] == list(range(txt["chunk_count"]))
    assert any(FACT_ZH in c["text"] for c in chunks)

    md = next(d for d in docs if d["filename"] == "bridges.md")
    md_chunks = client.get(f"/api/kbs/{kb}/documents/{md['id']}/chunks").json()
    assert any("Quillfeather" in (c["heading"] or "") for c in md_chunks)

    hits = _search(client, kb, "紫藤湖水库的蓄水量是多少？", top_k=3)
    assert FACT_ZH in hits[0]["text"] and hits[0]["file_name"] == "水库.txt"
    info = client.get(f"/api/kbs/{kb}").json()
    assert info["document_count"] == 2 and info["chunk_count"] == txt["chunk_count"] + md["chunk_count"]


def test_same_content_is_not_indexed_twice(client: TestClient, kb: str) -> None:
    data = "重复上传测试：同一内容只索引一次。".encode()
    first = upload_ready(client, kb, ("dup.txt", data))[0]
    again = upload(client, kb, ("dup.txt", data))[0]
    renamed = upload(client, kb, ("dup-copy.txt", data))[0]
    assert again["duplicate"] and renamed["duplicate"]
    assert again["document"]["id"] == renamed["document"]["id"] == first["id"]
    names = [d["filename"] for d in client.get(f"/api/kbs/{kb}/documents").json()]
    assert names.count("dup.txt") == 1 and "dup-copy.txt" not in names


def test_changed_file_with_same_name_replaces_old_chunks(client: TestClient, kb: str) -> None:
    old = upload_ready(client, kb, ("policy.txt", "旧版政策：报销上限为五百元。".encode()))[0]
    new = upload_ready(client, kb, ("policy.txt", "新版政策：报销上限为八百元。".encode()))[0]
    assert new["status"] == "ready" and new["replaces_id"] == old["id"]
    docs = [d for d in client.get(f"/api/kbs/{kb}/documents").json() if d["filename"] == "policy.txt"]
    assert [d["id"] for d in docs] == [new["id"]]
    assert _chunk_count_in_milvus(client, kb, old["id"]) == 0
    texts = [h["text"] for h in _search(client, kb, "报销上限", top_k=10)]
    assert any("八百元" in t for t in texts) and not any("五百元" in t for t in texts)


def test_delete_document_removes_its_vectors(client: TestClient, kb: str) -> None:
    doc = upload_ready(client, kb, ("gone.txt", "即将删除的文档：蓝鲸灯塔位于北岬角。".encode()))[0]
    assert _chunk_count_in_milvus(client, kb, doc["id"]) > 0
    assert client.delete(f"/api/kbs/{kb}/documents/{doc['id']}").status_code == 204
    assert _chunk_count_in_milvus(client, kb, doc["id"]) == 0
    assert client.get(f"/api/kbs/{kb}/documents/{doc['id']}").status_code == 404
    assert client.delete(f"/api/kbs/{kb}/documents/{doc['id']}").status_code == 404
    assert all(h["doc_id"] != doc["id"] for h in _search(client, kb, "蓝鲸灯塔在哪里", top_k=20))


def test_same_file_name_in_two_knowledge_bases_never_collides(client: TestClient) -> None:
    create_kb(client, "库A")
    create_kb(client, "库B")
    a = upload_ready(client, "库A", ("同名.txt", "A库的内容：红色气球。".encode()))[0]
    b = upload_ready(client, "库B", ("同名.txt", "B库的内容：绿色风筝。".encode()))[0]
    assert a["id"] != b["id"]
    assert "红色气球" in _search(client, "库A", "气球")[0]["text"]
    assert all("红色气球" not in h["text"] for h in _search(client, "库B", "气球", top_k=10))
    client.delete(f"/api/kbs/库A/documents/{a['id']}")
    assert client.get(f"/api/kbs/库B/documents/{b['id']}").json()["status"] == "ready"
    assert "绿色风筝" in _search(client, "库B", "风筝")[0]["text"]


def test_unsupported_type_is_415_listing_supported(client: TestClient, kb: str) -> None:
    before = client.get(f"/api/kbs/{kb}/documents").json()
    response = client.post(f"/api/kbs/{kb}/documents", files=[("files", ("virus.exe", b"MZ\x90\x00"))])
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert ".exe" in detail and ".pdf" in detail and ".docx" in detail
    response = client.post(f"/api/kbs/{kb}/documents", files=[("files", ("noext", b"text"))])
    assert response.status_code == 415
    assert client.get(f"/api/kbs/{kb}/documents").json() == before


def test_one_unsupported_file_rejects_the_whole_request(client: TestClient, kb: str) -> None:
    before = client.get(f"/api/kbs/{kb}/documents").json()
    files = [("files", ("fine.txt", "本来可以接受的文件。".encode())), ("files", ("bad.exe", b"MZ"))]
    response = client.post(f"/api/kbs/{kb}/documents", files=files)
    assert response.status_code == 415 and "bad.exe" in response.json()["detail"]
    assert client.get(f"/api/kbs/{kb}/documents").json() == before


def test_empty_file_is_rejected(client: TestClient, kb: str) -> None:
    response = client.post(f"/api/kbs/{kb}/documents", files=[("files", ("empty.txt", b""))])
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_whitespace_only_file_fails_with_reason(client: TestClient, kb: str) -> None:
    doc = upload(client, kb, ("blank.txt", b"   \n\n \t \n"))[0]["document"]
    doc = wait_documents(client, kb, [doc["id"]])[0]
    assert doc["status"] == "failed" and doc["error"]
    assert _chunk_count_in_milvus(client, kb, doc["id"]) == 0


def _listed(client: TestClient, kb: str, **filters: object) -> list[str]:
    response = client.get(f"/api/kbs/{kb}/documents", params=filters)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


def test_the_list_narrows_to_given_ids_and_statuses(client: TestClient, kb: str) -> None:
    """What `kbqa doc upload` polls while it follows its uploads: only those documents, only those states."""
    narrow = "筛选季度报告"
    create_kb(client, narrow)
    files = ("一.txt", "筛选测试：第一份。".encode()), ("二.md", "# 二\n\n第二份。".encode())
    first, second = upload_ready(client, narrow, *files)
    blank = upload_ready(client, narrow, ("空白.txt", b" \n\t\n"))[0]
    elsewhere = upload_ready(client, kb, ("别处.txt", "另一个知识库里的文件。".encode()))[0]
    assert (first["status"], second["status"], blank["status"]) == ("ready", "ready", "failed")

    assert _listed(client, narrow, ids=[blank["id"], first["id"]]) == [first["id"], blank["id"]]  # oldest first
    assert _listed(client, narrow, ids=[first["id"], "0" * 32, elsewhere["id"]]) == [first["id"]]
    assert _listed(client, narrow, status="ready") == [first["id"], second["id"]]
    assert _listed(client, narrow, status=["failed", "queued"]) == [blank["id"]]
    assert _listed(client, narrow, ids=[first["id"], blank["id"]], status="failed") == [blank["id"]]
    assert _listed(client, narrow, ids=[first["id"]], status="processing") == []
    assert _listed(client, narrow) == [first["id"], second["id"], blank["id"]]
    assert len(_listed(client, narrow, ids=[first["id"]] * 1000)) == 1


def test_a_bad_status_or_too_many_ids_is_a_422_that_says_what_is_allowed(client: TestClient, kb: str) -> None:
    bad = client.get(f"/api/kbs/{kb}/documents", params={"status": ["ready", "indexing"]})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")
    [error] = bad.json()["detail"]
    assert error["loc"] == ["query", "status", 1] and error["input"] == "indexing"
    assert all(f"'{state}'" in error["msg"] for state in ("queued", "processing", "ready", "failed")), error

    many = client.get(f"/api/kbs/{kb}/documents", params={"ids": [f"{i:032x}" for i in range(1001)]})
    assert (many.status_code, many.json()["code"]) == (422, "validation_error")
    [error] = many.json()["detail"]
    assert error["loc"] == ["query", "ids"] and "at most 1000 items" in error["msg"], error
    assert client.get("/api/kbs/没有这个库/documents", params={"ids": ["x"]}).json()["code"] == "kb_not_found"


def test_file_over_size_limit_is_413(client: TestClient, kb: str) -> None:
    settings = client.app.state.services.settings  # type: ignore[attr-defined]
    limit = settings.ingest.max_upload_mb
    settings.ingest.max_upload_mb = 0.01
    try:
        response = client.post(f"/api/kbs/{kb}/documents", files=[("files", ("big.txt", b"a" * 20000))])
    finally:
        settings.ingest.max_upload_mb = limit
    assert response.status_code == 413
    assert "0.01 MB" in response.json()["detail"]
    incoming = settings.storage.files_dir / "_incoming"
    assert not incoming.exists() or not any(incoming.iterdir())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\报告.txt", "报告.txt"),
        ("/abs/path/notes.md", "notes.md"),
        # Browsers and httpx send a double quote in a multipart file name as %22 (WHATWG form encoding).
        ("quo\"te's.txt", "quo%22te's.txt"),
        ('x" or doc_id != "y.txt', "x%22 or doc_id != %22y.txt"),
        ("it's && x || y.txt", "it's && x || y.txt"),
        ("..hidden.txt", "hidden.txt"),
    ],
)
def test_hostile_file_names_are_neutralised(client: TestClient, kb: str, raw: str, expected: str) -> None:
    content = f"hostile name test {raw} 内容".encode()
    doc = upload_ready(client, kb, (raw, content))[0]
    assert doc["status"] == "ready" and doc["filename"] == expected
    files_dir = client.app.state.services.settings.storage.files_dir  # type: ignore[attr-defined]
    stored = [p for p in files_dir.rglob("*") if p.is_file() and p.read_bytes() == content]
    assert len(stored) == 1 and files_dir in stored[0].resolve().parents
    chunks = client.get(f"/api/kbs/{kb}/documents/{doc['id']}/chunks").json()
    assert chunks and all(c["file_name"] == expected for c in chunks)


def test_very_long_file_name_is_shortened_keeping_extension(client: TestClient, kb: str) -> None:
    doc = upload_ready(client, kb, ("很长" * 300 + ".txt", "长文件名测试".encode()))[0]
    assert doc["filename"].endswith(".txt") and len(doc["filename"]) <= 200


def test_unusable_file_names(client: TestClient, kb: str) -> None:
    for raw in ["..", "../", "\x00\x01"]:
        response = client.post(f"/api/kbs/{kb}/documents", files=[("files", (raw, b"data"))])
        assert response.status_code in {415, 422}, raw


def test_rebuild_reindexes_stored_files(client: TestClient) -> None:
    create_kb(client, "rebuild")
    doc = upload_ready(client, "rebuild", ("r.txt", "重建测试：银杏大道有一百二十棵树。".encode()))[0]
    response = client.post("/api/kbs/rebuild/rebuild")
    assert response.status_code == 202
    docs = wait_documents(client, "rebuild")
    assert [d["status"] for d in docs] == ["ready"] and docs[0]["id"] == doc["id"]
    assert _chunk_count_in_milvus(client, "rebuild", doc["id"]) == doc["chunk_count"]
    assert "银杏大道" in _search(client, "rebuild", "银杏大道有多少棵树")[0]["text"]


def test_knowledge_base_from_another_embedding_model_asks_for_rebuild(client: TestClient) -> None:
    """A knowledge base indexed with a model of another dimension (recorded so in the catalog, as after a
    model change) cannot be searched until it is rebuilt with the configured model."""
    from app.storage.catalog import KnowledgeBase, kb_by_name

    create_kb(client, "换模型")
    upload_ready(client, "换模型", ("m.txt", "模型更换测试：松鼠储存橡果过冬。".encode()))
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.catalog.session() as session:
        kb: KnowledgeBase = kb_by_name(session, "换模型")  # type: ignore[assignment]
        kb.embedding_dim, kb.embedding_model = 768, "some-768-d-model"
    response = client.post("/api/kbs/换模型/search", json={"question": "松鼠"})
    assert response.status_code == 409
    assert "some-768-d-model" in response.json()["detail"] and "rebuild" in response.json()["detail"]
    assert client.post("/api/kbs/换模型/rebuild").status_code == 202
    wait_documents(client, "换模型")
    hits = client.post("/api/kbs/换模型/search", json={"question": "松鼠"}).json()["hits"]
    assert "松鼠" in hits[0]["text"]
