"""Optional API keys: `Authorization: Bearer <key>` on every route but the health check, when keys are configured.

The check runs as ASGI middleware, before routing: no route can be added without it, and a request without a
valid key is refused before its body (an upload, say) is read. `ApiKeys` itself needs no HTTP.
/docs, /redoc and /openapi.json stay open: they describe the API and hold no data, and a browser that opens /docs
cannot send a bearer header until the user types the key into its "Authorize" button (see `bearer_scheme`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.responses import error_response, openai_error
from app.errors import KBQAError

# Declared on the routers only so that the OpenAPI schema shows the scheme and /docs an "Authorize" button;
# it never refuses anything (auto_error=False): the middleware below does the checking.
bearer_scheme = HTTPBearer(auto_error=False, description="One of the keys in the security.api_keys setting.")

MISSING_KEY = "缺少 API 密钥：请在请求头中发送 Authorization: Bearer <key> (missing API key)"
WRONG_KEY = "API 密钥不正确 (invalid API key)"
OPENAI_PREFIX = "/v1/"


class Unauthorized(KBQAError):
    status_code = 401
    code = "api_key_invalid"


def _digest(key: str) -> bytes:
    # Hashing first makes every comparison the same length, so the time taken says nothing about a key's length.
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The accepted keys; a presented key is compared with every one of them in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: str) -> bool:
        given = _digest(presented)
        found = False
        for digest in self._digests:  # no early exit: the time does not say which key (if any) matched
            found |= hmac.compare_digest(given, digest)
        return found

    def refusal(self, authorization: str | None) -> str | None:
        """None when an `Authorization` header value lets the request pass, else why not (missing or wrong key)."""
        scheme, key = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not key.strip():
            return MISSING_KEY
        return None if self.matches(key.strip()) else WRONG_KEY


class ApiKeyMiddleware:
    """Answers 401 (with `WWW-Authenticate: Bearer`) to any HTTP request outside `open_paths` without a valid key;
    OpenAI-compatible routes get the refusal in OpenAI's error shape, so OpenAI clients raise AuthenticationError."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.open_paths:
            await self.app(scope, receive, send)
            return
        reason = self.keys.refusal(Headers(scope=scope).get("authorization"))
        if reason is None:
            await self.app(scope, receive, send)
            return
        error = Unauthorized(reason, "api_key_missing" if reason == MISSING_KEY else None)
        response = openai_error(error) if path.startswith(OPENAI_PREFIX) else error_response(error)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
