"""Every error body of /api carries a machine-readable `code` beside its message (the web UI and the CLI act on the
code, never on the text); /v1 keeps OpenAI's own error shape. Real services, real LLM client (pointed at a port
where nothing listens)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.settings import PROJECT_ROOT
from tests.conftest import free_port, make_settings

MB = 1024 * 1024


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("error-codes"),
        embedding_model_dir,
        llm__base_url=f"http://127.0.0.1:{free_port()}/v1",
        ingest__max_upload_mb=1,
        limits__max_request_mb=2,
    )
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/api/kbs", json={"name": "已有库"}).status_code == 201
        yield test_client


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("error-codes-keys"), embedding_model_dir, security__api_keys=["k-1"]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def documented_codes() -> set[str]:
    section = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").split("### Error codes", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section.split("\n## ", 1)[0], re.MULTILINE))


def upload(name: str, data: bytes) -> dict:
    return {"method": "POST", "url": "/api/kbs/已有库/documents", "files": [("files", (name, data))]}


CASES = {
    "unknown knowledge base": (404, "kb_not_found", {"method": "GET", "url": "/api/kbs/没有这个库"}),
    "unknown document": (404, "document_not_found", {"method": "GET", "url": "/api/kbs/已有库/documents/nope/chunks"}),
    "unknown conversation": (404, "conversation_not_found", {"method": "GET", "url": "/api/conversations/" + "0" * 32}),
    "unknown evaluation job": (404, "eval_job_not_found", {"method": "GET", "url": "/api/eval/jobs/nope"}),
    "unknown path": (404, "not_found", {"method": "GET", "url": "/api/nothing"}),
    "wrong method": (405, "method_not_allowed", {"method": "PUT", "url": "/api/kbs"}),
    "existing name": (409, "conflict", {"method": "POST", "url": "/api/kbs", "json": {"name": "已有库"}}),
    "reserved name": (422, "invalid_input", {"method": "POST", "url": "/api/kbs", "json": {"name": "评测临时-x"}}),
    "missing field": (422, "validation_error", {"method": "POST", "url": "/api/kbs", "json": {}}),
    "unsupported type": (415, "unsupported_file_type", upload("tool.exe", b"MZ")),
    "file over max_upload_mb": (413, "too_large", upload("big.txt", b"a" * (MB + 1))),
    "unparsable file name": (422, "file_name_too_long", upload("长" * 5000 + ".txt", b"x")),
    "body over max_request_mb": (
        413, "request_too_large", {"method": "POST", "url": "/api/kbs", "content": b" " * (2 * MB + 1)},
    ),
    "foreign Host": (421, "host_not_allowed", {"method": "GET", "url": "/api/kbs", "headers": {"Host": "evil.test"}}),
    "foreign Origin": (
        403, "cross_site_refused",
        {"method": "POST", "url": "/api/kbs", "json": {"name": "x"}, "headers": {"Origin": "http://evil.test"}},
    ),
    "LLM down": (
        503, "llm_unavailable", {"method": "POST", "url": "/api/chat", "json": {"question": "你好", "mode": "llm"}},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_error_kind_has_its_code_beside_the_unchanged_message(client: TestClient, case: str) -> None:
    status, code, request = CASES[case]
    response = client.request(**request)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"], body
    assert code in documented_codes()


def test_a_missing_and_a_wrong_api_key_have_their_own_codes(keyed: TestClient) -> None:
    missing = keyed.get("/api/kbs")
    wrong = keyed.get("/api/kbs", headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["code"]) == (401, "api_key_missing")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "api_key_invalid")
    assert {"api_key_missing", "api_key_invalid"} <= documented_codes()


def test_openai_routes_keep_openai_error_shape(client: TestClient, keyed: TestClient) -> None:
    question = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    unknown = client.post("/v1/chat/completions", json=question)
    refused = keyed.get("/v1/models")
    for response, status in ((unknown, 404), (refused, 401)):
        assert response.status_code == status
        assert set(response.json()) == {"error"} and response.json()["error"]["code"] == status
