"""Response shapes shared by the middleware and the routers: error bodies (ours and OpenAI's) and the headers of a
Server-Sent Events stream. Kept apart so that neither the middleware nor one router imports another router."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from app.errors import KBQAError

# No proxy may buffer or cache a stream of events.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_response(exc: KBQAError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The body of every error of /api: `detail` (the message) and `code` (README's "Error codes")."""
    return error_body(exc.status_code, exc.message, exc.code, headers)


def error_body(status: int, detail: Any, code: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`detail` is a message, or for a request that fails validation, FastAPI's list of errors."""
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def openai_error(exc: KBQAError) -> JSONResponse:
    """OpenAI's error shape; a request it would call invalid is a 400 there, not our 422."""
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    status = 400 if exc.status_code == 422 else exc.status_code
    body = {"error": {"message": exc.message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status)
