"""An OpenAI-compatible door: any OpenAI client can chat with the LLM or with a knowledge base.

The model name picks the mode: `kb:<knowledge base>` answers from that knowledge base (知识库问答), any other
name is plain LLM chat. Sources come back in an extra `sources` field (on the first chunk when streamed).
`/v1/embeddings` serves the product's own embedding model; `/v1/completions` (OpenAI's legacy text completions)
is not served and says so. Errors use OpenAI's shape, `{"error": {"message", "type", "code"}}`, with 400 for
any request OpenAI would call invalid.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from app.api.deps import chat_service, embedding_service, knowledge_bases
from app.api.responses import SSE_HEADERS, openai_error
from app.chat.models import ChatMode, ChatRequest, DeltaEvent, DoneEvent, ErrorEvent, HistoryMessage, SourcesEvent
from app.chat.service import ChatService, ChatSession
from app.errors import InvalidInput, KBQAError, ModelNotFound, NotFound
from app.kb.service import KnowledgeBaseService
from app.retrieval.text_embeddings import EmbeddingService
from app.validation import RequestModel

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
KB_PREFIX = "kb:"


class TextPart(BaseModel):
    type: str
    text: str | None = None


_TEXT_PARTS = TypeAdapter(list[TextPart])


class OpenAIMessage(RequestModel):
    """A message; `content` may be a list of parts, as current OpenAI clients send it: text parts are joined,
    any other kind (an image, audio, a file) is refused."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        if content is None:
            return ""
        if not isinstance(content, list):
            return content
        parts = _TEXT_PARTS.validate_python(content)
        kinds = sorted({part.type for part in parts if part.type != "text"})
        if kinds:
            raise ValueError(f"only text content parts are supported, not {', '.join(kinds)}")
        return "\n".join(part.text or "" for part in parts)

    @property
    def is_system(self) -> bool:
        return self.role in ("system", "developer")


class OpenAIChatRequest(RequestModel):
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    # Extensions for knowledge-base models:
    top_k: int | None = None
    score_threshold: float | None = Field(None, ge=0, le=1)


def validation_message(errors: list[Any]) -> str:
    """Pydantic's errors as one line naming each field, e.g. `messages.0.content: only text content parts…`."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts)


class OpenAIEmbeddingsRequest(RequestModel):
    model: str
    input: str | list[str] = Field(description="A text or a list of texts (token arrays are not accepted)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Must be the model's own dimension if given")
    user: str | None = None


@router.get("/models")
def list_models(
    service: Annotated[ChatService, Depends(chat_service)],
    kbs: Annotated[KnowledgeBaseService, Depends(knowledge_bases)],
    embeddings: Annotated[EmbeddingService, Depends(embedding_service)],
) -> dict[str, Any]:
    """The LLM, one `kb:<name>` model per knowledge base, then the embedding model (for /v1/embeddings only)."""
    names = [service.settings.llm.model] + [f"{KB_PREFIX}{kb.name}" for kb in kbs.list()] + [embeddings.model_id]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "kbqa"} for n in names]}


@router.post("/embeddings")
def create_embeddings(
    body: OpenAIEmbeddingsRequest, service: Annotated[EmbeddingService, Depends(embedding_service)]
) -> Any:
    """OpenAI's embeddings from the product's embedding model (unit-length vectors), float or base64."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    try:
        result = service.embed(body.model, texts)
        if body.dimensions is not None and body.dimensions != result.vectors.shape[1]:
            raise InvalidInput(f"dimensions: {service.model_id} gives {result.vectors.shape[1]}, not {body.dimensions}")
    except KBQAError as exc:
        return openai_error(exc)
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return {"object": "list", "data": data, "model": service.model_id, "usage": usage}


def _encoded(vector: Any, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, what the openai package asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/completions")
def legacy_completions() -> JSONResponse:
    """OpenAI's legacy text completions are not served: use /v1/chat/completions."""
    message = (
        "/v1/completions (legacy text completions) is not served here; use /v1/chat/completions. "
        "The LLM's own FastChat server (kbqa llm up, fastchat.api_port) serves plain completions."
    )
    return openai_error(NotFound(message))


def to_chat_request(body: OpenAIChatRequest, llm_model: str) -> ChatRequest:
    turns = [m for m in body.messages if not m.is_system]
    system = "\n\n".join(m.content for m in body.messages if m.is_system) or None
    if not turns or turns[-1].role != "user":
        raise InvalidInput("the last message must come from the user")
    if body.model.startswith(KB_PREFIX):
        mode, kb_names = ChatMode.kb, [body.model.removeprefix(KB_PREFIX)]
    elif body.model == llm_model:
        mode, kb_names = ChatMode.llm, []
    else:
        raise ModelNotFound(f"unknown model {body.model!r}: use {llm_model!r} or kb:<knowledge base> (see /v1/models)")
    try:
        return _chat_request(body, mode, kb_names, turns, system)
    except ValidationError as exc:  # a limit of ChatRequest's (the system message's or a turn's length)
        raise InvalidInput(validation_message(exc.errors())) from exc


def _chat_request(
    body: OpenAIChatRequest, mode: ChatMode, kb_names: list[str], turns: list[OpenAIMessage], system: str | None
) -> ChatRequest:
    return ChatRequest(
        question=turns[-1].content,
        system=system,
        mode=mode,
        kb_names=kb_names,
        history=[HistoryMessage(role=m.role, content=m.content) for m in turns[:-1]],  # type: ignore[arg-type]
        top_k=body.top_k,
        score_threshold=body.score_threshold,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        stream=body.stream,
    )


@router.post("/chat/completions")
async def chat_completions(
    body: OpenAIChatRequest, service: Annotated[ChatService, Depends(chat_service)]
):
    """OpenAI's chat completions, streamed or not, with `sources` and `rewritten_question` as extra fields."""
    try:
        session = await service.start(to_chat_request(body, service.settings.llm.model))
        if not body.stream:
            answer = await session.collect()
    except KBQAError as exc:
        return openai_error(exc)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return StreamingResponse(
            _chunks(session, completion_id, body.model), media_type="text/event-stream", headers=SSE_HEADERS
        )
    usage = _openai_usage(answer.usage.model_dump())
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer.answer},
             "finish_reason": answer.finish_reason or "stop"}
        ],
        "usage": usage,
        "sources": [s.model_dump() for s in answer.sources],
        "rewritten_question": answer.rewritten_question,
    }


def _openai_usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt_tokens = usage.get("prompt_tokens") or 0  # none only where the LLM was not asked (a refusal)
    completion_tokens = usage.get("completion_tokens") or 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def _chunks(session: ChatSession, completion_id: str, model: str) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async for event in session.events():
        match event:
            case SourcesEvent():
                yield chunk({"role": "assistant", "content": ""}, sources=[s.model_dump() for s in event.sources],
                            rewritten_question=event.rewritten_question)
            case DeltaEvent():
                yield chunk({"content": event.text})
            case DoneEvent():
                yield chunk({}, event.finish_reason or "stop", usage=_openai_usage(event.usage.model_dump()))
            case ErrorEvent():
                error = {"message": event.message, "type": "server_error", "code": event.status}
                yield f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
