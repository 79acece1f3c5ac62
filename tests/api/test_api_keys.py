"""API keys, CORS and bind addresses against a real `kbqa serve` process (and the key check without HTTP)."""

from __future__ import annotations

import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from fastapi.testclient import TestClient

from app.api.auth import MISSING_KEY, WRONG_KEY, ApiKeys
from app.api.main import create_app
from app.llm.llamacpp_worker import parse_args as worker_args
from app.llm.stack import LLMStack
from app.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port

KBQA = [sys.executable, "-m", "app.cli"]
KEYS = ["key-one-7f3a", "key-two-9c4d"]
ALLOWED_ORIGIN = "https://kb.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[dict[str, str]]:
    """`kbqa serve` with two keys and one CORS origin, on the default bind address and a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"KBQA_API__HOST", "KBQA_CLIENT_API_KEY"}}
    env |= {
        "KBQA_STORAGE__DATA_DIR": str(tmp_path_factory.mktemp("keys-data")),
        "KBQA_EMBEDDING__MODEL": str(embedding_model_dir),
        "KBQA_API__PORT": str(port),
        "KBQA_SECURITY__API_KEYS": ",".join(KEYS[:1]) + " , " + KEYS[1],  # comma-separated, spaces around ignored
        "KBQA_SECURITY__CORS_ORIGINS": ALLOWED_ORIGIN,
        "KBQA_API_URL": f"http://127.0.0.1:{port}",
    }
    log_path = tmp_path_factory.mktemp("keys-log") / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([*KBQA, "serve"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{env['KBQA_API_URL']}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            process.kill()
            pytest.fail(f"kbqa serve did not come up in 120 s: {log_path.read_text()[-2000:]}")
        env["PID"] = str(process.pid)
        yield env
        process.terminate()
        process.wait(timeout=30)


def api(server: dict[str, str], key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=server["KBQA_API_URL"], headers=headers, timeout=30)


def assert_refused(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    code = "api_key_missing" if detail == MISSING_KEY else "api_key_invalid"
    assert response.json() == {"detail": detail, "code": code}


def test_health_is_open_and_everything_else_needs_a_key(server: dict[str, str]) -> None:
    assert api(server).get("/health").json() == {"status": "ok"}
    assert_refused(api(server).get("/api/kbs"), MISSING_KEY)
    assert_refused(api(server, "key-three").get("/api/kbs"), WRONG_KEY)
    assert_refused(api(server, KEYS[0][:-1]).get("/api/kbs"), WRONG_KEY)  # a prefix of a real key
    for header in ["Bearer", f"Basic {KEYS[0]}", KEYS[0]]:  # no key, or a key but not as a bearer token
        response = httpx.get(f"{server['KBQA_API_URL']}/api/kbs", headers={"Authorization": header})
        assert_refused(response, MISSING_KEY)


def test_every_route_but_health_refuses_a_request_without_key(server: dict[str, str]) -> None:
    """Walks every operation the API describes, so a router added later without the key fails here."""
    client = api(server)
    operations = [
        (method.upper(), re.sub(r"{[^}]+}", "x", path))
        for path, item in client.get("/openapi.json").json()["paths"].items()
        for method in item
        if path != "/health"
    ]
    assert len(operations) >= 15 and ("POST", "/v1/chat/completions") in operations
    for method, path in operations:
        response = client.request(method, path, json={"question": "q"}, headers={"Origin": ALLOWED_ORIGIN})
        assert response.status_code == 401, f"{method} {path}: {response.status_code} {response.text}"
        # The browser at an allowed origin can read why it was refused.
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_upload_without_key_is_refused_and_stores_nothing(server: dict[str, str]) -> None:
    with api(server, KEYS[0]) as client:
        assert client.post("/api/kbs", json={"name": "上传库"}).status_code == 201
    refused = api(server).post("/api/kbs/上传库/documents", files=[("files", ("a.txt", b"secret" * 1000))])
    assert_refused(refused, MISSING_KEY)
    with api(server, KEYS[1]) as client:
        assert client.get("/api/kbs/上传库/documents").json() == []


def test_either_key_works_for_reads_and_writes(server: dict[str, str]) -> None:
    with api(server, KEYS[0]) as first, api(server, KEYS[1]) as second:
        created = first.post("/api/kbs", json={"name": "密钥库"})
        assert created.status_code == 201, created.text
        assert "密钥库" in [kb["name"] for kb in second.get("/api/kbs").json()]
        assert second.delete("/api/kbs/密钥库").status_code == 204
        assert first.get("/api/kbs/密钥库").status_code == 404


def test_openapi_docs_stay_open_and_declare_the_bearer_scheme(server: dict[str, str]) -> None:
    client = api(server)
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "One of the keys in the security.api_keys setting."
    }
    assert schema["paths"]["/api/kbs"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]
    assert client.get("/docs").status_code == 200


def test_openai_client_uses_the_same_key(server: dict[str, str]) -> None:
    base_url = f"{server['KBQA_API_URL']}/v1"
    with api(server, KEYS[0]) as client:
        assert client.post("/api/kbs", json={"name": "开放库"}).status_code == 201
    models = [m.id for m in openai.OpenAI(base_url=base_url, api_key=KEYS[1]).models.list()]
    assert "kb:开放库" in models
    # Past the key check a request meets the next error, not a 401.
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        openai.OpenAI(base_url=base_url, api_key=KEYS[0]).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        openai.OpenAI(base_url=base_url, api_key="sk-wrong").models.list()

    raw = httpx.post(f"{base_url}/chat/completions", json={"model": "x", "messages": []})
    assert raw.status_code == 401 and raw.headers["www-authenticate"] == "Bearer"
    assert raw.json() == {"error": {"message": MISSING_KEY, "type": "invalid_request_error", "code": 401}}


def kbqa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KBQA, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_sends_the_key_from_the_environment(server: dict[str, str]) -> None:
    # The server's own environment has KBQA_API_KEYS: the CLI sends the first of them.
    assert kbqa(server, "kb", "create", "命令行密钥库").returncode == 0
    with_client_key = {**server, "KBQA_SECURITY__API_KEYS": "", "KBQA_CLIENT_API_KEY": KEYS[1]}
    listed = kbqa(with_client_key, "kb", "list", "--json")
    assert listed.returncode == 0, listed.stderr + listed.stdout
    assert "命令行密钥库" in [kb["name"] for kb in json.loads(listed.stdout)]

    refused = kbqa({**server, "KBQA_SECURITY__API_KEYS": "", "KBQA_CLIENT_API_KEY": ""}, "kb", "list")
    assert refused.returncode == 1
    assert "401" in refused.stdout and "missing API key" in refused.stdout and "KBQA_CLIENT_API_KEY" in refused.stdout
    wrong = kbqa({**server, "KBQA_CLIENT_API_KEY": "nope"}, "kb", "list")
    assert wrong.returncode == 1 and "invalid API key" in wrong.stdout


def test_cors_preflight_allows_the_configured_origin_only(server: dict[str, str]) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{server['KBQA_API_URL']}/api/kbs", headers={"Origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = httpx.options(
        f"{server['KBQA_API_URL']}/api/kbs", headers={"Origin": "https://evil.example.net", **preflight}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

    with api(server, KEYS[0]) as client:
        simple = client.get("/api/kbs", headers={"Origin": "https://evil.example.net"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_the_api_listens_on_127_0_0_1_by_default(server: dict[str, str]) -> None:
    process = psutil.Process(int(server["PID"]))
    listening = [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening


def test_fastchat_processes_bind_to_127_0_0_1_by_default(tmp_path: Path) -> None:
    settings = Settings(storage__data_dir=tmp_path)
    assert settings.api.host == "127.0.0.1"
    hosts = {spec.name: spec.argv[spec.argv.index("--host") + 1] for spec in LLMStack(settings).plan()}
    assert set(hosts) >= {"controller", "openai_api_server", "worker-20002"}
    assert set(hosts.values()) == {"127.0.0.1"}, hosts
    assert worker_args(["--model-path", "m.gguf"]).host == "127.0.0.1"  # the worker run by hand


def test_running_fastchat_processes_listen_on_127_0_0_1_only(llm_stack: LLMStack) -> None:
    assert llm_stack.settings.fastchat.host == "127.0.0.1"  # the default: llm_settings() leaves it alone
    for running in llm_stack.processes:
        process = psutil.Process(running.popen.pid)
        listening = [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, (running.spec.name, listening)


def test_without_keys_the_api_is_open_as_before(tmp_path: Path, embedding_model_dir: Path) -> None:
    settings = Settings(
        storage__data_dir=tmp_path,
        embedding__model=str(embedding_model_dir),
        security__api_keys=[],
        security__cors_origins=[],
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/kbs").status_code == 200
        assert client.post("/api/kbs", json={"name": "开放"}).status_code == 201
        assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
        preflight = client.options(
            "/api/kbs", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers  # no CORS unless origins are set


def test_key_check_compares_with_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the first key matching costs as many comparisons as no key matching."""
    keys = ApiKeys(["alpha", "beta", "gamma"])
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented, expected in [("alpha", True), ("gamma", True), ("delta", False), ("alph", False)]:
        calls.clear()
        assert keys.matches(presented) is expected
        assert len(calls) == 3
    assert keys.refusal(None) == MISSING_KEY
    assert keys.refusal("Bearer beta") is None and keys.refusal("bearer  beta ") is None
    assert keys.refusal("Bearer BETA") == WRONG_KEY
    assert not ApiKeys([])


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("a,b", ["a", "b"]), (' ["x", "y"] ', ["x", "y"]), (" a , ,b ", ["a", "b"]), ("", []), ("solo", ["solo"])],
)
def test_key_and_origin_lists_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]
) -> None:
    monkeypatch.setenv("KBQA_SECURITY__API_KEYS", raw)
    monkeypatch.setenv("KBQA_SECURITY__CORS_ORIGINS", raw)
    monkeypatch.delenv("KBQA_CLIENT_API_KEY", raising=False)
    settings = Settings()
    assert settings.security.api_keys == parsed and settings.security.cors_origins == parsed
    assert settings.security.resolved_client_api_key == (parsed[0] if parsed else "")
    monkeypatch.setenv("KBQA_CLIENT_API_KEY", "mine")
    assert Settings().security.resolved_client_api_key == "mine"


@pytest.mark.parametrize("key", ["密钥", "two words", "tab\there"])
def test_a_key_no_client_could_send_is_refused_at_startup(key: str) -> None:
    with pytest.raises(ValueError, match="visible ASCII"):
        Settings(security__api_keys=["fine", key])
    with pytest.raises(ValueError, match="visible ASCII"):
        Settings(security__client_api_key=key)
