"""What a call of the API can fail with: one ApiError (or a subclass a caller may catch on its own), carrying the
HTTP status and the API's machine-readable `code` (README's "Error codes")."""

from __future__ import annotations

import json
from typing import Any

import httpx

UNREACHABLE = "api_unreachable"
LLM_CODES = frozenset({"llm_unavailable", "llm_stream_broken"})


class ApiError(Exception):
    """`message` is for people; act on `code` (and `status`). `detail` is the body's detail as sent: a message, or
    for a request that failed validation, FastAPI's list of field errors."""

    def __init__(self, message: str, status: int | None = None, code: str = "", detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = message if detail is None else detail

    @property
    def unreachable(self) -> bool:
        return self.code == UNREACHABLE

    @property
    def llm_unavailable(self) -> bool:
        return self.code in LLM_CODES

    @property
    def detail_text(self) -> str:
        """`detail` as one line: the message, or the validation errors as JSON."""
        return self.detail if isinstance(self.detail, str) else json.dumps(self.detail)


class ApiUnreachable(ApiError):
    """No answer at all: the API is not running there, or the connection broke."""

    def __init__(self, base_url: str, exc: Exception) -> None:
        super().__init__(f"cannot reach the kbqa API at {base_url} ({type(exc).__name__}: {exc})", None, UNREACHABLE)


class Unauthorized(ApiError):
    """401: no API key, or not one of the server's api_keys."""


class NotFound(ApiError):
    """404: no such knowledge base, document, conversation, evaluation job or model; `code` says which
    (kb_not_found, document_not_found, conversation_not_found, eval_job_not_found, model_not_found; not_found for a
    path)."""


class LLMUnavailable(ApiError):
    """The API works but its LLM does not (down, too slow, broke off an answer)."""


def error_from_response(response: httpx.Response) -> ApiError:
    """The ApiError an error response stands for; its body must have been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail, code, message = body["detail"], str(body.get("code", "")), _readable(body["detail"])
    else:  # not the API's own answer (a proxy's page, say)
        detail, code, message = response.text, "", response.text[:300]
    kind = {401: Unauthorized, 404: NotFound}.get(response.status_code, ApiError)
    if code in LLM_CODES:
        kind = LLMUnavailable
    return kind(message or response.reason_phrase, response.status_code, code, detail)


def _readable(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(_field_error(item) for item in detail)
    return str(detail)


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    return f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg')}"
