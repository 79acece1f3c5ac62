"""The backend's one way to the LLM: any OpenAI-compatible server (FastChat by default), through `openai`.

Base URL, model, key, temperature, max tokens and timeouts come from settings. Failures become the project's
errors with the URL that was tried: a server that is down or too slow -> LLMUnavailable (503), a request the
server rejects (too long for the context, bad parameters) -> LLMRequestRejected (422), an error in the middle
of a stream -> LLMStreamError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from app.errors import InvalidInput, ServiceUnavailable
from app.settings import Settings


class LLMUnavailable(ServiceUnavailable):
    """The LLM server is not running, not ready, too slow or failing."""

    code = "llm_unavailable"


class LLMRequestRejected(InvalidInput):
    """The LLM server refused the request itself (context length, parameters)."""

    code = "llm_rejected"


class LLMStreamError(ServiceUnavailable):
    """The answer broke off mid-stream (a worker died, the server failed)."""

    code = "llm_stream_broken"


@dataclass
class ChatDelta:
    """One piece of a streamed answer; the last one has `finish_reason` set, and `usage` where the server counts
    tokens (our FastChat stack does, on that last piece)."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    model: str
    usage: dict[str, int] = field(default_factory=dict)


Message = dict[str, str]


class LLMClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.resolved_llm_base_url
        timeout = httpx.Timeout(settings.llm.timeout_s, connect=settings.llm.connect_timeout_s)
        # No retries: a down server must be reported in seconds, and a retried chat would be generated twice.
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": settings.llm.api_key or "EMPTY",
            "timeout": timeout,
            "max_retries": 0,
        }
        self._sync = openai.OpenAI(**options)
        self._async = openai.AsyncOpenAI(**options)

    def request(self, messages: list[Message], **overrides: Any) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {
            "model": overrides.pop("model", None) or s.llm.model,
            "messages": messages,
            "temperature": s.llm.temperature,
            "max_tokens": s.llm.max_tokens,
        }
        params.update({key: value for key, value in overrides.items() if value is not None})
        return params

    def chat(self, messages: list[Message], **overrides: Any) -> ChatResult:
        params = self.request(messages, **overrides)
        try:
            response = self._sync.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc
        return _result(response)

    def stream(self, messages: list[Message], **overrides: Any) -> Iterator[ChatDelta]:
        params = self.request(messages, **overrides)
        try:
            chunks = self._sync.chat.completions.create(**params, stream=True)
            with chunks:
                for chunk in chunks:
                    if delta := _delta(chunk):
                        yield delta
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc

    async def achat(self, messages: list[Message], **overrides: Any) -> ChatResult:
        params = self.request(messages, **overrides)
        try:
            response = await self._async.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc
        return _result(response)

    async def aopen_stream(self, messages: list[Message], **overrides: Any) -> AsyncIterator[ChatDelta]:
        """Open the stream now (a down server or a refused request raises here, before anything is sent on),
        and return its pieces. Closing the iterator (a client that went away) closes the connection, which
        stops the generation."""
        params = self.request(messages, **overrides)
        try:
            chunks = await self._async.chat.completions.create(**params, stream=True)
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc
        return self._deltas(chunks)

    async def _deltas(self, chunks: openai.AsyncStream[Any]) -> AsyncIterator[ChatDelta]:
        try:
            async with chunks:
                async for chunk in chunks:
                    if delta := _delta(chunk):
                        yield delta
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc

    def list_models(self) -> list[str]:
        try:
            return sorted(model.id for model in self._sync.models.list())
        except openai.OpenAIError as exc:
            raise self.translate(exc) from exc

    def translate(self, exc: openai.OpenAIError) -> Exception:
        where = f"LLM server at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return LLMUnavailable(f"{where} did not answer within {self.settings.llm.timeout_s:g} s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMUnavailable(
                f"{where} is not reachable ({type(cause).__name__}); start it with `kbqa llm up` "
                "or point llm.base_url at a running OpenAI-compatible server"
            )
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc)
            if exc.status_code in (400, 413, 422):
                return LLMRequestRejected(f"{where} rejected the request: {message}")
            if exc.status_code == 404:
                return LLMUnavailable(f"{where} does not serve the requested model: {message}")
            if exc.status_code in (401, 403):
                return LLMUnavailable(f"{where} refused the API key (llm.api_key): {message}")
            return LLMUnavailable(f"{where} failed ({exc.status_code}): {message}")
        return LLMStreamError(f"{where} broke off the answer: {exc}")


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return exc.message


def _result(response: Any) -> ChatResult:
    choice = response.choices[0]
    usage = response.usage.model_dump() if response.usage else {}
    return ChatResult(choice.message.content or "", choice.finish_reason, response.model, usage)


def _delta(chunk: Any) -> ChatDelta | None:
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    text = choice.delta.content or "" if choice.delta else ""
    if not text and choice.finish_reason is None:
        return None
    usage = chunk.usage.model_dump(exclude_none=True) if getattr(chunk, "usage", None) else None
    return ChatDelta(text, choice.finish_reason, usage)
