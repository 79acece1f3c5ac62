"""kbqa_client against the real API served over HTTP (uvicorn, Milvus Lite, the real embedding model): every path
segment escaped on the wire, streamed answers parsed, failures raised as typed errors with the API's code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kbqa_client import ApiError, ApiUnreachable, KbqaClient, LLMUnavailable, NotFound, Unauthorized, api_path
from kbqa_client.client import IDS_PER_REQUEST
from tests.conftest import free_port, make_settings, wait_until
from tests.fixtures_docs import make_pages_pdf
from tests.live_api import serving

HOSTILE = "质量?#%报告 & <b>"
ESCAPED = "%E8%B4%A8%E9%87%8F%3F%23%25%E6%8A%A5%E5%91%8A%20%26%20%3Cb%3E"
FACT = "第三季度质量报告：产品合格率为百分之九十八。"


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[str]:
    settings = make_settings(
        tmp_path_factory.mktemp("client-api"), embedding_model_dir, llm__base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    with serving(settings) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> Iterator[KbqaClient]:
    client = KbqaClient(api_url)
    yield client
    client.close()


def wait_ready(client: KbqaClient, kb: str, doc_id: str) -> dict:
    wait_until(lambda: client.document(kb, doc_id)["status"] in {"ready", "failed"}, f"{doc_id} to be indexed")
    return client.document(kb, doc_id)


def test_api_path_escapes_every_segment() -> None:
    assert api_path("kbs", HOSTILE, "documents", "a/b") == f"/api/kbs/{ESCAPED}/documents/a%2Fb"


def test_a_knowledge_base_named_with_url_characters_round_trips(client: KbqaClient) -> None:
    paths: list[str] = []
    client.http.event_hooks["request"].append(lambda request: paths.append(request.url.raw_path.decode()))
    assert client.create_knowledge_base(HOSTILE)["name"] == HOSTILE
    assert paths[-1] == "/api/kbs"
    assert client.knowledge_base(HOSTILE)["name"] == HOSTILE
    assert paths[-1] == f"/api/kbs/{ESCAPED}"
    outcome = client.upload(HOSTILE, f"{HOSTILE}.md", FACT.encode())
    doc = wait_ready(client, HOSTILE, outcome["document"]["id"])
    assert (doc["filename"], doc["status"]) == (f"{HOSTILE}.md", "ready")
    assert [d["id"] for d in client.documents(HOSTILE)] == [doc["id"]]
    assert "合格率" in client.chunks(HOSTILE, doc["id"])[0]["text"]
    assert client.search(HOSTILE, "合格率是多少", top_k=1)["hits"][0]["file_name"] == f"{HOSTILE}.md"
    client.delete_document(HOSTILE, doc["id"])
    assert client.documents(HOSTILE) == []
    client.delete_knowledge_base(HOSTILE)
    assert {f"/api/kbs/{ESCAPED}/documents", f"/api/kbs/{ESCAPED}/search"} <= set(paths)
    with pytest.raises(NotFound) as missing:
        client.knowledge_base(HOSTILE)
    assert (missing.value.status, missing.value.code) == (404, "kb_not_found") and HOSTILE in missing.value.message


def test_a_source_opens_in_the_original(client: KbqaClient, tmp_path: Path) -> None:
    kb, name = "原文预览", "季度 报告.pdf"
    client.create_knowledge_base(kb)
    data = make_pages_pdf(tmp_path, "q.pdf", ["第一页。" * 5, FACT]).read_bytes()
    doc = wait_ready(client, kb, client.upload(kb, name, data)["document"]["id"])
    hit = client.search(kb, "产品合格率", top_k=1)["hits"][0]
    context = client.preview(hit["preview_url"], before=1, after=0)
    assert context["chunk"]["text"] == hit["text"] and context["kind"] == "pdf_page"
    assert client.chunk_context(kb, doc["id"], hit["chunk_index"]) == client.preview(hit["preview_url"])
    image = client.page_image(kb, doc["id"], hit["page"], hit["chunk_index"])
    assert image.png.startswith(b"\x89PNG") and image.highlight == "text_layer"
    assert client.page_image(kb, doc["id"], 1).highlight is None
    downloaded = client.document_file(kb, doc["id"])
    assert (downloaded.filename, downloaded.media_type, downloaded.content) == (name, "application/pdf", data)
    with pytest.raises(NotFound):
        client.page_image(kb, doc["id"], 3)
    client.delete_knowledge_base(kb)


def test_documents_narrowed_by_ids_and_status(client: KbqaClient) -> None:
    """Each id and status goes as its own repeated query parameter; an empty filter matches nothing without a call."""
    kb = "筛选 & 跟踪?"
    client.create_knowledge_base(kb)
    ready = wait_ready(client, kb, client.upload(kb, "报告.md", FACT.encode())["document"]["id"])
    failed = wait_ready(client, kb, client.upload(kb, "空白.txt", b" \n\n")["document"]["id"])
    assert (ready["status"], failed["status"]) == ("ready", "failed")
    queries: list[str] = []
    client.http.event_hooks["request"].append(lambda request: queries.append(request.url.query.decode()))
    unknown = "f" * 32

    def listed(**filters: object) -> list[str]:
        return [d["id"] for d in client.documents(kb, **filters)]  # type: ignore[arg-type]

    assert listed(ids=[failed["id"], unknown, ready["id"]]) == [ready["id"], failed["id"]]
    assert queries[-1] == f"ids={failed['id']}&ids={unknown}&ids={ready['id']}"
    assert listed(status=["failed", "queued"]) == [failed["id"]]
    assert queries[-1] == "status=failed&status=queued"
    assert listed(ids=iter([ready["id"], failed["id"]]), status=("ready",)) == [ready["id"]]
    assert client.documents(kb, ids=[]) == [] and client.documents(kb, status=[]) == [] and len(queries) == 3
    assert len(client.documents(kb)) == 2 and queries[-1] == ""
    with pytest.raises(ApiError) as bad:
        client.documents(kb, status=["done"])
    assert (bad.value.status, bad.value.code) == (422, "validation_error") and "'processing'" in bad.value.message
    with pytest.raises(ApiError) as many:
        client.documents(kb, ids=[f"{i:032x}" for i in range(1001)])
    assert many.value.status == 422 and "at most 1000" in many.value.message
    asked = len(queries)
    unknown_ids = [f"{i:032x}" for i in range(1001)]
    found = client.documents_by_id(kb, [*unknown_ids, ready["id"], failed["id"], ready["id"]])
    assert found.keys() == {ready["id"], failed["id"]} and found[failed["id"]]["status"] == "failed"
    assert len(queries) - asked == -(-1003 // IDS_PER_REQUEST)  # in slices the server accepts, each id once
    client.delete_knowledge_base(kb)


def test_streamed_answers_are_parsed_into_events(client: KbqaClient) -> None:
    client.create_knowledge_base("流式库")
    wait_ready(client, "流式库", client.upload("流式库", "报告.md", FACT.encode())["document"]["id"])
    body = {"question": "产品合格率是多少？", "mode": "kb_test", "kb_names": ["流式库"]}
    events = list(client.chat_events(body))
    assert [e["type"] for e in events] == ["sources", "done"]
    assert events[0]["sources"][0]["file_name"] == "报告.md" and "合格率" in events[0]["sources"][0]["text"]
    # Nothing passes the threshold: the knowledge-base answer is the fixed refusal, streamed without the LLM.
    refused = list(client.chat_events(body | {"mode": "kb", "score_threshold": 1.0}))
    assert [e["type"] for e in refused] == ["sources", "delta", "done"]
    assert "无法回答" in refused[1]["text"] and refused[0]["sources"] == []


def test_failures_raise_typed_errors_with_the_api_code(client: KbqaClient) -> None:
    with pytest.raises(LLMUnavailable) as down:
        list(client.chat_events({"question": "你好", "mode": "llm"}))
    assert (down.value.status, down.value.code) == (503, "llm_unavailable") and down.value.llm_unavailable
    with pytest.raises(NotFound) as missing:
        client.search("没有这个库", "问题")
    assert (missing.value.status, missing.value.code) == (404, "kb_not_found")
    with pytest.raises(ApiError) as schema:
        client.request("POST", api_path("kbs"), json={})
    assert (schema.value.status, schema.value.code) == (422, "validation_error")
    assert schema.value.message.startswith("body.name: ") and isinstance(schema.value.detail, list)
    nowhere = KbqaClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ApiUnreachable) as unreachable:
        nowhere.knowledge_bases()
    assert unreachable.value.unreachable and unreachable.value.status is None
    assert "cannot reach the kbqa API at" in unreachable.value.message


def test_a_refused_key_is_unauthorized(tmp_path: Path, embedding_model_dir: Path) -> None:
    settings = make_settings(tmp_path, embedding_model_dir, security__api_keys=["k-1"])
    with serving(settings) as url:
        with pytest.raises(Unauthorized) as refused:
            KbqaClient(url, "wrong").knowledge_bases()
        assert (refused.value.status, refused.value.code) == (401, "api_key_invalid")
        assert KbqaClient(url, "k-1").knowledge_bases() == []
