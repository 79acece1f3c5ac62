"""An OpenAI-compatible door: any OpenAI client can chat with the LLM or with a knowledge base.

The model name picks the mode: `kb:<knowledge base>` answers from that knowledge base (知识库问答), any other
name is plain LLM chat. Sources come back in an extra `sources` field (on the first chunk when streamed).
Errors use OpenAI's shape, `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from app.api.deps import chat_service, knowledge_bases
from app.api.routes.chat import SSE_HEADERS
from app.chat.models import ChatMode, ChatRequest, HistoryMessage
from app.chat.service import ChatService, ChatSession
from app.errors import InvalidInput, KBQAError, NotFound
from app.kb.service import KnowledgeBaseService

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
KB_PREFIX = "kb:"


class OpenAIMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class OpenAIChatRequest(BaseModel):
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    # Extensions for knowledge-base models:
    top_k: int | None = None
    score_threshold: float | None = Field(None, ge=0, le=1)


def openai_error(exc: KBQAError) -> JSONResponse:
    """OpenAI's error shape; a request it would call invalid is a 400 there, not our 422."""
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    status = 400 if exc.status_code == 422 else exc.status_code
    body = {"error": {"message": exc.message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status)


@router.get("/models")
def list_models(
    service: Annotated[ChatService, Depends(chat_service)],
    kbs: Annotated[KnowledgeBaseService, Depends(knowledge_bases)],
) -> dict[str, Any]:
    """The LLM, and one `kb:<name>` model per knowledge base."""
    names = [service.settings.llm_model] + [f"{KB_PREFIX}{kb.name}" for kb in kbs.list()]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "kbqa"} for n in names]}


def to_chat_request(body: OpenAIChatRequest, llm_model: str) -> ChatRequest:
    turns = [m for m in body.messages if m.role != "system"]
    system = "\n\n".join(m.content for m in body.messages if m.role == "system") or None
    if not turns or turns[-1].role != "user":
        raise InvalidInput("the last message must come from the user")
    if body.model.startswith(KB_PREFIX):
        mode, kb_names = ChatMode.kb, [body.model.removeprefix(KB_PREFIX)]
    elif body.model == llm_model:
        mode, kb_names = ChatMode.llm, []
    else:
        raise NotFound(f"unknown model {body.model!r}: use {llm_model!r} or kb:<knowledge base> (see /v1/models)")
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
        session = await service.start(to_chat_request(body, service.settings.llm_model))
        if not body.stream:
            answer = await session.collect()
    except KBQAError as exc:
        return openai_error(exc)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return StreamingResponse(
            _chunks(session, completion_id, body.model), media_type="text/event-stream", headers=SSE_HEADERS
        )
    usage = {"prompt_tokens": 0, "completion_tokens": answer.usage.completion_tokens}
    usage["total_tokens"] = usage["completion_tokens"]
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
        if event["type"] == "sources":
            yield chunk({"role": "assistant", "content": ""}, sources=event["sources"],
                        rewritten_question=event["rewritten_question"])
        elif event["type"] == "delta":
            yield chunk({"content": event["text"]})
        elif event["type"] == "done":
            yield chunk({}, event["finish_reason"] or "stop")
        else:
            error = {"message": event["message"], "type": "server_error", "code": event["status"]}
            yield f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
