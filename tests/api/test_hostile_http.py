"""Hostile HTTP: what an adversarial client (or a web page in the user's browser) sends, answered with a precise 4xx
that changes nothing. Bodies are sent raw where a well-behaved client could not send them (NaN, lone surrogates);
header and body limits are checked with raw sockets against a real `kbqa serve`; cross-site requests with real
headers, and once with the real Chromium."""

from __future__ import annotations

import http.server
import json
import select
import socket
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Served, api_env, create_kb, free_port, kbqa_serve, upload

JSON = {"content-type": "application/json"}
SURROGATE = "含有孤立的 UTF-16 代理字符"
NOT_FINITE = "必须是有限的数"
UI_PORT = free_port()
EVIL = "http://evil.example"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def kb(client: TestClient) -> str:
    create_kb(client, "敌意库")
    return "敌意库"


def post_raw(client: TestClient, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode("utf-8", "surrogatepass"), headers=JSON)


def names(client: TestClient) -> list[str]:
    return [kb["name"] for kb in client.get("/api/kbs").json()]


def refused_field(response: httpx.Response) -> tuple[str, str]:
    """The 422's first error: where (the field path, dots between) and its message."""
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    return ".".join(str(part) for part in error["loc"][1:]), error["msg"]


def assert_refused_unchanged(client: TestClient, path: str, body: str, field: str, reason: str) -> None:
    """The raw JSON body is refused with a 422 naming the field and the reason, and no knowledge base changed."""
    before = names(client)
    where, message = refused_field(post_raw(client, path, body))
    assert where == field and reason in message
    assert names(client) == before


# -- 1. NaN and infinities ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/kbs/{kb}/search", '{"question": "x", "top_k": NaN}', "top_k"),
        ("/api/chat", '{"question": "x", "mode": "llm", "temperature": NaN}', "temperature"),
        ("/api/chat", '{"question": "x", "mode": "kb_test", "kb_names": ["{kb}"], "top_k": Infinity}', "top_k"),
        ("/api/chat", '{"question": "x", "mode": "kb_test", "kb_names": ["{kb}"], "score_threshold": -Infinity}',
         "score_threshold"),
        ("/api/kbs", '{"name": "无穷库", "chunk_size": Infinity}', "chunk_size"),
        ("/api/kbs/{kb}/rebuild", '{"chunk_overlap": NaN}', "chunk_overlap"),
        ("/api/kbs/{kb}/eval/json", '{"questions": [{"question": "q", "doc_id": "d"}], "answer_sample": NaN}',
         "answer_sample"),
        ("/api/kbs/{kb}/eval/json", '{"questions": [{"question": "q", "doc_id": "d"}], "chunk_sizes": [Infinity]}',
         "chunk_sizes"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(
    client: TestClient, kb: str, path: str, body: str, field: str
) -> None:
    assert_refused_unchanged(client, path.format(kb=kb), body.replace("{kb}", kb), field, NOT_FINITE)


# -- 2. Lone UTF-16 surrogates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/kbs/{kb}/search", '{"question": "水库\\ud800"}', "question"),
        ("/api/kbs/{kb}/search", '{"question": "\\udfff", "mode": "bm25"}', "question"),
        ("/api/kbs", '{"name": "代理库", "description": "说明\\ud83d"}', "description"),
        ("/api/conversations", '{"title": "标题\\ud800"}', "title"),
        ("/api/chat", '{"question": "问\\ud800", "mode": "llm"}', "question"),
        ("/api/chat", '{"question": "q", "mode": "kb_test", "kb_names": ["{kb}\\ud800"]}', "kb_names"),
        ("/api/chat", '{"question": "q", "mode": "llm", "history": [{"role": "user", "content": "\\ud800"}, '
         '{"role": "assistant", "content": "a"}]}', "history"),
        ("/api/kbs/{kb}/eval/json", '{"questions": [{"question": "\\ud800", "doc_id": "d"}]}', "questions"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(
    client: TestClient, kb: str, path: str, body: str, field: str
) -> None:
    assert_refused_unchanged(client, path.format(kb=kb), body.replace("{kb}", kb), field, SURROGATE)


# -- 4. Unicode normalisation of knowledge-base names -----------------------------------------------------------------


def test_a_knowledge_base_is_found_under_any_normalisation_of_its_name(client: TestClient) -> None:
    nfc = "Café 资料"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    create_kb(client, nfc)
    assert client.post("/api/kbs", json={"name": nfd}).status_code == 409
    got = client.get(f"/api/kbs/{quote(nfd)}")
    assert got.status_code == 200, got.text
    assert got.json()["name"] == nfc
    outcome = upload(client, nfd, ("note.txt", "规范化测试。".encode()))[0]
    assert [d["id"] for d in client.get(f"/api/kbs/{quote(nfc)}/documents").json()] == [outcome["document"]["id"]]
    search = client.post(f"/api/kbs/{quote(nfd)}/search", json={"question": "测试"})
    assert search.status_code == 200, search.text
    kb_test = client.post("/api/chat", json={"question": "测试", "mode": "kb_test", "kb_names": [nfd], "stream": False})
    assert kb_test.status_code == 200, kb_test.text
    assert client.delete(f"/api/kbs/{quote(nfd)}").status_code == 204
    assert client.get(f"/api/kbs/{quote(nfc)}").status_code == 404


# -- 5. A file name too long for the multipart parser ---------------------------------------------------------------


def test_a_file_name_too_long_to_parse_is_a_422_naming_the_limit(client: TestClient, kb: str) -> None:
    before = client.get(f"/api/kbs/{kb}/documents").json()
    response = client.post(f"/api/kbs/{kb}/documents", files=[("files", ("长" * 5000 + ".txt", b"content"))])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("文件名过长") and "4224 bytes" in detail
    assert client.get(f"/api/kbs/{kb}/documents").json() == before


# -- 7. A knowledge base deleted while its upload is being stored ----------------------------------------------------


class DeletingSource:
    """An upload's file that, on its first read, has the knowledge base deleted through the API (a real delete, run
    to completion) and only then gives its content: the delete lands between the upload's look-up of the knowledge
    base and the storing of its file, where a large file's copy leaves time for it. The hook only times the delete."""

    def __init__(self, client: TestClient, kb: str, content: bytes) -> None:
        self.client, self.kb, self.content = client, kb, content
        self.delete_status: int | None = None

    def read(self, _size: int = -1) -> bytes:
        if self.delete_status is None:
            self.delete_status = self.client.delete(f"/api/kbs/{quote(self.kb)}").status_code
        content, self.content = self.content, b""
        return content


def test_an_upload_into_a_knowledge_base_deleted_meanwhile_is_a_404_leaving_nothing(client: TestClient) -> None:
    from app.errors import NotFound

    kb = create_kb(client, "中途删除库")
    services = client.app.state.services  # type: ignore[attr-defined]
    source = DeletingSource(client, kb["name"], "删除竞态测试。".encode())
    with pytest.raises(NotFound, match="deleted during the upload"):
        services.knowledge_bases.upload_many(kb["name"], [("race.txt", source)])  # type: ignore[list-item]
    assert source.delete_status == 204
    assert not (services.settings.storage.files_dir / kb["id"]).exists()
    assert list((services.settings.storage.files_dir / "_incoming").iterdir()) == []
    from sqlalchemy import func, select

    from app.storage.catalog import Document

    with services.catalog.session() as session:
        assert session.scalar(select(func.count()).where(Document.kb_id == kb["id"])) == 0


# -- 10. A refused multi-file upload stores nothing -----------------------------------------------------------------


def test_a_multi_file_upload_with_an_empty_file_stores_none_of_them(client: TestClient, kb: str) -> None:
    files_dir = client.app.state.services.settings.storage.files_dir  # type: ignore[attr-defined]
    stored_before = sorted(p for p in files_dir.rglob("*") if p.is_file())
    docs_before = client.get(f"/api/kbs/{kb}/documents").json()
    response = client.post(
        f"/api/kbs/{kb}/documents",
        files=[("files", ("first.txt", "第一个文件。".encode())), ("files", ("empty.txt", b""))],
    )
    assert response.status_code == 422 and response.json()["detail"] == "'empty.txt' is empty (0 bytes)"
    assert client.get(f"/api/kbs/{kb}/documents").json() == docs_before
    assert sorted(p for p in files_dir.rglob("*") if p.is_file()) == stored_before


# -- 8, 9, 10 against a real `kbqa serve` ---------------------------------------------------------------------------

MAX_UPLOAD_MB, MAX_REQUEST_MB, BODY_TIMEOUT_S = 1, 2, 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[Served]:
    overrides = {
        "ingest__max_upload_mb": MAX_UPLOAD_MB,
        "limits__max_request_mb": MAX_REQUEST_MB,
        "limits__request_body_timeout_s": BODY_TIMEOUT_S,
        "ui__port": UI_PORT,
        "security__allowed_hosts": "",  # the defaults only (conftest lets Starlette's TestClient in)
    }
    env = api_env(tmp_path_factory.mktemp("hostile-data"), embedding_model_dir, overrides)
    with kbqa_serve(env, tmp_path_factory.mktemp("hostile-log") / "serve.log") as server:
        yield server


def exchange(url: str, head: str, body_parts: Sequence[bytes] = (), deadline_s: float = 120) -> tuple[int, bytes]:
    """Send a request head and body parts over a raw socket, stopping early once the server answers; then read the
    answer until the server closes (the deadline only bounds a server that never does). (status, body); status 0
    if the server reset the connection before an answer could be read."""
    parts = urlsplit(url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=deadline_s) as sock:
        try:
            sock.sendall(head.encode("latin-1"))
            for part in body_parts:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(part)
        except OSError:  # the server answered and closed while the rest was on its way
            pass
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    if not received:
        return 0, b""
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def head(url: str, method: str, path: str, *lines: str) -> str:
    netloc = urlsplit(url).netloc
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {netloc}", *lines, "", ""])


def kb_names(server: Served) -> list[str]:
    return [kb["name"] for kb in httpx.get(f"{server.url}/api/kbs").json()]


def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(served: Served) -> None:
    ten_gb = 10 * 1024**3
    status, body = exchange(
        served.url,
        head(served.url, "POST", "/api/kbs/x/documents", f"Content-Length: {ten_gb}",
             "Content-Type: multipart/form-data; boundary=b"),
    )
    assert status == 413
    assert json.loads(body)["detail"].startswith(f"请求体过大：{ten_gb} 字节")
    assert httpx.get(f"{served.url}/health").status_code == 200


def test_a_body_sent_over_the_limit_without_length_is_refused(served: Served) -> None:
    piece = b" " * (256 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    name = "分块超限库"
    opening = json.dumps({"name": name}).encode()[:-1]
    parts = [f"{len(opening):x}\r\n".encode() + opening + b"\r\n"] + [chunk] * (MAX_REQUEST_MB * 4 + 4)
    parts.append(b"1\r\n}\r\n0\r\n\r\n")
    status, body = exchange(
        served.url,
        head(served.url, "POST", "/api/kbs", "Content-Type: application/json", "Transfer-Encoding: chunked"),
        parts,
    )
    assert status in (413, 0), body  # 0: reset while the rest of the body was still arriving
    if status:
        assert "max_request_mb" in json.loads(body)["detail"] and json.loads(body)["code"] == "request_too_large"
    assert name not in kb_names(served)


def test_a_stalled_body_is_answered_408_and_closed(served: Served) -> None:
    status, body = exchange(
        served.url,
        head(served.url, "POST", "/api/kbs", "Content-Type: application/json", "Content-Length: 100"),
        [b'{"name": "'],
    )
    assert status == 408
    assert json.loads(body)["detail"].startswith("请求体中断")
    assert json.loads(body)["code"] == "request_body_stalled"


def test_oversized_headers_are_refused(served: Served) -> None:
    padding = "x" * (200 * 1024)
    status, _ = exchange(served.url, head(served.url, "GET", "/api/kbs", f"X-Padding: {padding}"))
    assert status in (400, 0)  # uvicorn's 400, or a reset while the rest of the headers was still arriving
    assert httpx.get(f"{served.url}/api/kbs", headers={"X-Padding": "x" * 8000}).status_code == 200


def test_a_refused_multi_file_upload_over_the_size_limit_stores_nothing(served: Served) -> None:
    assert httpx.post(f"{served.url}/api/kbs", json={"name": "超限库"}).status_code == 201
    small = ("small.txt", "先存的小文件。".encode())
    big = ("big.txt", b"a" * (MAX_UPLOAD_MB * 1024 * 1024 + 1))
    response = httpx.post(f"{served.url}/api/kbs/超限库/documents", files=[("files", small), ("files", big)])
    assert response.status_code == 413, response.text
    assert httpx.get(f"{served.url}/api/kbs/超限库/documents").json() == []


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "127.0.0.1.nip.io:{port}"])
def test_a_host_the_api_is_not_served_as_is_refused(served: Served, host: str) -> None:
    host = host.format(port=urlsplit(served.url).port)
    response = httpx.get(f"{served.url}/api/kbs", headers={"Host": host})
    assert response.status_code == 421
    assert repr(host) in response.json()["detail"] and "allowed_hosts" in response.json()["detail"]


def test_the_local_names_are_served(served: Served) -> None:
    port = urlsplit(served.url).port
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"]:
        assert httpx.get(f"{served.url}/api/kbs", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": f"http://127.0.0.1:{free_port()}"},  # a page served from another local port
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_state_changing_requests_from_other_sites_are_refused(served: Served, headers: dict[str, str]) -> None:
    name = "跨站库"
    created = httpx.post(f"{served.url}/api/kbs", json={"name": name}, headers=headers)
    assert created.status_code == 403
    assert created.json()["detail"].startswith("拒绝跨站请求")
    assert name not in kb_names(served)


def test_a_cross_site_multipart_upload_stores_nothing(served: Served) -> None:
    assert httpx.post(f"{served.url}/api/kbs", json={"name": "表单库"}).status_code == 201
    refused = httpx.post(
        f"{served.url}/api/kbs/表单库/documents", files=[("files", ("x.txt", b"planted"))], headers={"Origin": EVIL}
    )
    assert refused.status_code == 403
    assert httpx.get(f"{served.url}/api/kbs/表单库/documents").json() == []
    assert httpx.get(f"{served.url}/api/kbs/表单库", headers={"Origin": EVIL}).status_code == 200  # reads: CORS's job


@pytest.mark.parametrize(
    ("origin", "name"),
    [(f"http://127.0.0.1:{UI_PORT}", "界面库一"), (f"http://localhost:{UI_PORT}", "界面库二"), ("own", "同源库")],
)
def test_the_web_ui_and_the_api_itself_may_change_state(served: Served, origin: str, name: str) -> None:
    origin = served.url if origin == "own" else origin  # the API's own pages (/docs)
    assert httpx.post(f"{served.url}/api/kbs", json={"name": name}, headers={"Origin": origin}).status_code == 201
    assert httpx.delete(f"{served.url}/api/kbs/{name}", headers={"Origin": origin}).status_code == 204


@pytest.mark.parametrize(("published_as", "refused"), [("", "kb.example.com"), ("kb.example.com", "evil.example")])
def test_the_compose_api_answers_to_the_names_it_is_reached_by(
    monkeypatch: pytest.MonkeyPatch, published_as: str, refused: str
) -> None:
    from starlette.datastructures import Headers

    from app.api.guards import RequestGuard
    from tests.test_deploy import compose_config, settings_from

    services = compose_config("docker-compose.yml", KBQA_ALLOWED_HOSTS=published_as)["services"]
    guard = RequestGuard(settings_from(services["api"]["environment"], monkeypatch))
    ui_reaches = urlsplit(services["ui"]["environment"]["KBQA_API_URL"]).netloc
    for host in [ui_reaches, "127.0.0.1:7861", published_as or "localhost"]:
        assert guard.refusal("POST", Headers({"host": host})) is None, host
    refusal = guard.refusal("GET", Headers({"host": refused}))
    assert refusal is not None and refusal.status_code == 421


# -- 9 in a real browser ----------------------------------------------------------------------------------------------

# What any page can send without a preflight: a multipart form, posted into a frame. (A JSON body needs its
# Content-Type, which only a preflighted request may set: CORS keeps those out.)
ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>page</title>
<form id="f" method="post" enctype="multipart/form-data" action="{api}/api/kbs/{kb}/documents" target="sink">
<input type="file" name="files"></form><iframe name="sink"></iframe>"""


@contextmanager
def page_server(port: int, html: str) -> Iterator[str]:
    """A static page on 127.0.0.1:`port`: an origin of its own."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        server.server_close()


def browse(page: object, served: Served, port: int, kb: str, planted: Path) -> int:
    """Open a page on 127.0.0.1:`port` whose form uploads `planted` into `kb`; the upload's status."""
    with page_server(port, ATTACK_PAGE.format(api=served.url, kb=quote(kb))) as page_url:
        page.goto(page_url)  # type: ignore[attr-defined]
        page.set_input_files("input[name=files]", str(planted))  # type: ignore[attr-defined]
        with page.expect_response(lambda r: "/documents" in r.url) as answer:  # type: ignore[attr-defined]
            page.eval_on_selector("#f", "form => form.submit()")  # type: ignore[attr-defined]
        return answer.value.status


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is absent: scripts/setup.sh installs it")
def test_a_page_in_the_browser_cannot_change_or_read_the_api(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    kb = "浏览器库"
    assert httpx.post(f"{served.url}/api/kbs", json={"name": kb}).status_code == 201
    planted = tmp_path / "planted.txt"
    planted.write_text("网页偷偷上传的文件。", encoding="utf-8")
    rebinding = "--host-resolver-rules=MAP rebind.example 127.0.0.1"  # the attacker's name, our address
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, rebinding]
        )
        try:
            page = browser.new_page()
            assert browse(page, served, free_port(), kb, planted) == 403  # a page on another local port
            assert httpx.get(f"{served.url}/api/kbs/{kb}/documents").json() == []

            assert browse(page, served, UI_PORT, kb, planted) == 202  # the web UI's origin may
            documents = httpx.get(f"{served.url}/api/kbs/{kb}/documents").json()
            assert [d["filename"] for d in documents] == ["planted.txt"]

            rebound = page.goto(f"http://rebind.example:{urlsplit(served.url).port}/api/kbs")
            assert rebound is not None and rebound.status == 421
            assert kb not in page.content()
        finally:
            browser.close()
