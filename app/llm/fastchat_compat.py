"""The fixes FastChat 0.2.36 (its last release) needs today, applied in one place at process start.

Never an edit of site-packages: `apply()` patches the imported modules before their servers start.
1. Streaming under pydantic 2: `openai_api_server` calls `chunk.json(exclude_unset=True, ensure_ascii=False)`,
   which pydantic 2 rejects ("dumps_kwargs keyword arguments are no longer supported", lm-sys/FastChat#3140,
   fixed on FastChat's main branch, never released). The protocol models get a `json` that accepts it.
2. A worker that dies mid-stream made the API server drop the connection without a word. The stream now ends
   with an error event in OpenAI's shape (`{"error": {...}}`), which OpenAI clients raise as an APIError.
3. `/v1/models` logged a pydantic serializer warning per call (ModelPermission.is_blocking is typed str
   but defaults to False); it is silenced.
4. Every FastChat error answered HTTP 400, and an unreachable worker or a model without workers was a bare 500.
   Server-side failures now answer 503 and an unknown model 404, with OpenAI-style bodies.
5. A streamed chat never said how many tokens it used (the worker counts them; the server dropped the count):
   the chunk that carries `finish_reason` now carries `usage` too, as OpenAI's own stream does on request.
   It rides on that chunk rather than on an extra one with no choices, which FastChat's own test script and
   other simple clients would fail to read.
The transformers 5 breakage of its model_worker (`KeyError: 'factor'`) is handled by the pin in pyproject.toml.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import aiohttp
import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from fastchat.constants import ErrorCode
from fastchat.protocol import api_protocol, openai_api_protocol
from fastchat.serve import openai_api_server
from pydantic import BaseModel

_applied = False
_ORIGINAL_STREAM = openai_api_server.generate_completion_stream
_ORIGINAL_CHAT_STREAM = openai_api_server.chat_completion_stream_generator
# The worker's last usage report, seen by the worker-stream wrapper and read by the chat-stream wrapper: both
# run in the task that streams the response, so a holder set in that task's context reaches both.
_STREAM_USAGE: ContextVar[dict[str, Any] | None] = ContextVar("kbqa_stream_usage", default=None)


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
    for module in (openai_api_protocol, api_protocol):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel:
                value.json = _json_with_dumps_kwargs
    openai_api_server.generate_completion_stream = _stream_with_error_event
    openai_api_server.chat_completion_stream_generator = _chat_stream_with_usage
    openai_api_server.create_error_response = _error_response
    openai_api_server.app.add_exception_handler(ValueError, _no_worker_handler)
    openai_api_server.app.add_exception_handler(aiohttp.ClientError, _worker_unreachable_handler)
    openai_api_server.app.add_exception_handler(httpx.HTTPError, _worker_unreachable_handler)


def _json_with_dumps_kwargs(self: BaseModel, *, ensure_ascii: bool = True, **dump_kwargs: Any) -> str:
    return json.dumps(self.model_dump(mode="json", **dump_kwargs), ensure_ascii=ensure_ascii)


def http_status_for(code: int) -> int:
    if code == ErrorCode.INVALID_MODEL:
        return 404
    if code >= 50000:
        return 503
    if code in (ErrorCode.INVALID_AUTH_KEY, ErrorCode.INCORRECT_AUTH_KEY):
        return 401
    return 400


def error_body(code: int, message: str) -> dict[str, Any]:
    """FastChat's own fields (object, message, code) plus OpenAI's `error` object, so both kinds of client read it."""
    kind = "server_error" if code >= 50000 else "invalid_request_error"
    return {
        "object": "error",
        "message": message,
        "code": int(code),
        "error": {"message": message, "type": kind, "code": int(code)},
    }


def _error_response(code: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=http_status_for(code))


async def _stream_with_error_event(payload: dict[str, Any], worker_addr: str) -> AsyncIterator[dict[str, Any]]:
    usage_holder = _STREAM_USAGE.get()
    try:
        async for content in _ORIGINAL_STREAM(payload, worker_addr):
            if content.get("error_code", 0) != 0:
                content = {**content, **error_body(content["error_code"], content.get("text", ""))}
            elif usage_holder is not None and isinstance(content.get("usage"), dict):
                usage_holder["usage"] = content["usage"]
            yield content
    except (httpx.HTTPError, OSError) as exc:
        message = f"the model worker at {worker_addr} stopped answering mid-stream ({type(exc).__name__})"
        yield {
            "text": message,
            "error_code": int(ErrorCode.CONTROLLER_WORKER_TIMEOUT),
            **error_body(ErrorCode.CONTROLLER_WORKER_TIMEOUT, message),
        }


async def _chat_stream_with_usage(
    model_name: str, gen_params: dict[str, Any], n: int, worker_addr: str
) -> AsyncIterator[str]:
    holder: dict[str, Any] = {}
    _STREAM_USAGE.set(holder)
    async for event in _ORIGINAL_CHAT_STREAM(model_name, gen_params, n, worker_addr):
        if holder.get("usage") and event.startswith("data: {") and '"finish_reason"' in event:
            event = _with_usage(event, holder["usage"])
        yield event


def _with_usage(event: str, usage: dict[str, Any]) -> str:
    chunk = json.loads(event.removeprefix("data: "))
    choices = chunk.get("choices") or []
    if not choices or choices[0].get("finish_reason") is None:
        return event
    chunk["usage"] = {key: int(usage.get(key) or 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


async def _no_worker_handler(_request: Request, exc: Exception) -> JSONResponse:
    return _error_response(ErrorCode.CONTROLLER_NO_WORKER, str(exc))


async def _worker_unreachable_handler(_request: Request, exc: Exception) -> JSONResponse:
    message = f"a model worker or the controller could not be reached ({type(exc).__name__}: {exc})"
    return _error_response(ErrorCode.CONTROLLER_WORKER_TIMEOUT, message)
