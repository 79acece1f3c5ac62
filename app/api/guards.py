"""Checks every HTTP request passes before routing (ASGI middleware), against clients the API should not serve.

- Host: only the names the API is served as (`security.allowed_hosts` besides the local names and api.host). A web
  page that points its own DNS name at 127.0.0.1 (DNS rebinding) reaches the API with that name in Host and is
  refused (421).
- Origin: a page of any other origin may send a browser's "simple" requests (a form POST, a multipart upload)
  with no preflight. A state-changing request (POST, PUT, PATCH, DELETE) whose Origin is not the API's own, the
  web UI's or one of security.cors_origins is refused (403), as is one the browser marks `Sec-Fetch-Site: cross-site`
  without an allowed Origin. Clients that send no Origin (the CLI, httpx, the web UI's server-side client, the
  openai package) pass.
- Body: announced (Content-Length) over limits.max_request_mb, it is refused (413) before a byte of it is read; sent
  without a length, when it passes the limit; stalled (no data) for limits.request_body_timeout_s, 408. Either way the
  connection is closed.
`RequestGuard` itself needs no HTTP.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.responses import error_response, openai_error
from app.errors import KBQAError
from app.settings import Settings, setting_ref

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPENAI_PREFIX = "/v1/"
CLOSE = {"Connection": "close"}
_HOSTS, _ORIGINS = setting_ref("security.allowed_hosts"), setting_ref("security.cors_origins")
_REQUEST_MB, _BODY_TIMEOUT = setting_ref("limits.max_request_mb"), setting_ref("limits.request_body_timeout_s")

UNKNOWN_HOST = (
    f"拒绝请求：Host {{host!r}} 不是本 API 的名字，请把它加入 {_HOSTS} 设置 "
    f"(Host {{host!r}} is not a name this API is served as; add it to the {_HOSTS} setting)"
)
FOREIGN_ORIGIN = (
    f"拒绝跨站请求：来源 {{origin!r}} 不是本 API、Web 界面或 {_ORIGINS} 中的来源 "
    f"(cross-site request refused: origin {{origin!r}} is not the API's own, the web UI's or one of {_ORIGINS})"
)
CROSS_SITE = (
    "拒绝跨站请求：浏览器标明 Sec-Fetch-Site: cross-site，且没有允许的 Origin "
    "(cross-site request refused: Sec-Fetch-Site is cross-site and no allowed Origin was sent)"
)
TOO_LARGE = (
    f"请求体过大：{{size}} 字节，超过 {_REQUEST_MB} 上限 {{limit:g}} MB "
    f"(request body of {{size}} bytes is over the {_REQUEST_MB} limit of {{limit:g}} MB)"
)
TOO_LARGE_SENT = (
    f"请求体过大：超过 {_REQUEST_MB} 上限 {{limit:g}} MB "
    f"(request body is over the {_REQUEST_MB} limit of {{limit:g}} MB)"
)
STALLED = (
    "请求体中断：{seconds:g} 秒内没有收到数据 (the request body stalled: no data for {seconds:g} s, "
    f"the {_BODY_TIMEOUT} setting)"
)

Site = tuple[str, str, int]  # scheme, host name, port


def host_name(host: str) -> str:
    """The name in a Host header: '[::1]:7861' -> '::1', 'LocalHost.:80' -> 'localhost'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).rstrip(".")


def site(origin: str) -> Site | None:
    """An origin (or URL) as scheme, host name and port (the scheme's default filled in); None if unusable."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or (443 if parts.scheme == "https" else 80)


def _url(scheme: str, name: str, port: int) -> str:
    return f"{scheme}://[{name}]:{port}" if ":" in name else f"{scheme}://{name}:{port}"


class Refused(KBQAError):
    def __init__(self, status_code: int, message: str, code: str) -> None:
        super().__init__(message, code)
        self.status_code = status_code


class BodyRefused(HTTPException):
    """Raised while the app reads the body; an HTTPException, so FastAPI answers it as it is (not as a 400)."""

    def __init__(self, status_code: int, message: str, code: str) -> None:
        super().__init__(status_code, message, headers=CLOSE)
        self.code = code


class RequestGuard:
    """What the settings allow: the Host names, the Origins of state-changing requests, the body's size and pace."""

    def __init__(self, settings: Settings) -> None:
        self.any_host = "*" in settings.security.allowed_hosts
        self.hosts = frozenset(
            host_name(h) for h in [*LOCAL_NAMES, settings.api.host, *settings.security.allowed_hosts]
        )
        ui_sites = {site(_url("http", name, settings.ui.port)) for name in {*LOCAL_NAMES, settings.ui.host}}
        self.origins = frozenset(ui_sites | {site(origin) for origin in settings.security.cors_origins}) - {None}
        self.max_request_mb = settings.limits.max_request_mb
        self.max_body_bytes = int(settings.limits.max_request_mb * 1024 * 1024)
        self.body_timeout_s = settings.limits.request_body_timeout_s

    def refusal(self, method: str, headers: Headers) -> Refused | None:
        """Why a request is refused before its body is read, or None."""
        host = headers.get("host")
        if host is not None and not self.any_host and host_name(host) not in self.hosts:
            return Refused(421, UNKNOWN_HOST.format(host=host), "host_not_allowed")
        if method.upper() in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None and not self.allowed_origin(origin, host):
                return Refused(403, FOREIGN_ORIGIN.format(origin=origin), "cross_site_refused")
            if origin is None and headers.get("sec-fetch-site", "").lower() == "cross-site":
                return Refused(403, CROSS_SITE, "cross_site_refused")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return Refused(413, TOO_LARGE.format(size=int(length), limit=self.max_request_mb), "request_too_large")
        return None

    def allowed_origin(self, origin: str, host: str | None) -> bool:
        """The web UI's origins, cors_origins, and the API's own: the origin of the Host the request came to."""
        parsed = site(origin)
        if parsed is None:  # "null" (a sandboxed frame, a file:// page) or garbage
            return False
        return parsed in self.origins or (host is not None and parsed == site(f"{parsed[0]}://{host}"))


class GuardMiddleware:
    """Answers a refused request before routing; hands the app a `receive` that bounds the body's size and pace."""

    def __init__(self, app: ASGIApp, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.guard.refusal(scope["method"], Headers(scope=scope))
        if refused is not None:
            await _response(scope, refused)(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, BoundedBody(receive, self.guard), tracking_send)
        except BodyRefused as exc:  # read outside a route (where FastAPI answers it itself)
            if started:
                raise
            await _response(scope, Refused(exc.status_code, str(exc.detail), exc.code))(scope, receive, send)


def _response(scope: Scope, refused: Refused) -> JSONResponse:
    response = openai_error(refused) if scope.get("path", "").startswith(OPENAI_PREFIX) else error_response(refused)
    response.headers.update(CLOSE)
    return response


class BoundedBody:
    """`receive` for the app: counts the body against max_request_mb and waits at most request_body_timeout_s for
    each piece of it. Once the body is complete it only passes messages on (a streamed answer waits on `receive`
    for the client's disconnect as long as it streams)."""

    def __init__(self, receive: Receive, guard: RequestGuard) -> None:
        self.receive = receive
        self.guard = guard
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        if self.complete:
            return await self.receive()
        try:
            message = await asyncio.wait_for(self.receive(), self.guard.body_timeout_s)
        except TimeoutError:
            raise BodyRefused(408, STALLED.format(seconds=self.guard.body_timeout_s), "request_body_stalled") from None
        if message["type"] != "http.request":
            self.complete = True
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.guard.max_body_bytes:
            raise BodyRefused(413, TOO_LARGE_SENT.format(limit=self.guard.max_request_mb), "request_too_large")
        self.complete = not message.get("more_body", False)
        return message
