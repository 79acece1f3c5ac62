"""Chat: one endpoint for LLM 对话 (llm), 知识库问答 (kb) and 知识库测试 (kb_test), streamed or not;
and the conversations the server keeps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.api.deps import chat_service, conversations
from app.api.responses import SSE_HEADERS
from app.chat.conversations import ConversationStore, ConversationView
from app.chat.models import ChatAnswer, ChatEvent, ChatRequest
from app.chat.service import ChatService
from app.validation import RequestModel

router = APIRouter(prefix="/api", tags=["chat"])


async def server_sent_events(events: AsyncIterator[ChatEvent]) -> AsyncIterator[str]:
    async for event in events:
        yield f"event: {event.type}\ndata: {json.dumps(event.model_dump(mode='json'), ensure_ascii=False)}\n\n"


@router.post("/chat", response_model=ChatAnswer)
async def chat(body: ChatRequest, service: Annotated[ChatService, Depends(chat_service)]):
    """Ask a question. With `stream` (the default) the answer comes as Server-Sent Events:

    - `sources`: the numbered chunks [1]..[n] (file, page, text, score, knowledge base), the rewritten question;
    - `delta`: pieces of the answer;
    - `done`: finish reason, usage and timings (retrieval, first token, total), or `error` if the LLM fails
      mid-answer.

    Without `stream`, the same content as one JSON object. Bad input, unknown knowledge bases and a down LLM are
    answered with 422 / 404 / 503 before anything is streamed.
    """
    session = await service.start(body)
    if not body.stream:
        return await session.collect()
    return StreamingResponse(
        server_sent_events(session.events()), media_type="text/event-stream", headers=SSE_HEADERS
    )


class ConversationCreated(BaseModel):
    id: str


class ConversationCreate(RequestModel):
    title: str = ""


@router.post("/conversations", status_code=201)
def create_conversation(
    body: ConversationCreate, store: Annotated[ConversationStore, Depends(conversations)]
) -> ConversationCreated:
    """Start a conversation the server keeps; send its id with each question instead of the history."""
    return ConversationCreated(id=store.create(body.title))


@router.get("/conversations/{conversation_id}")
def get_conversation(
    conversation_id: str, store: Annotated[ConversationStore, Depends(conversations)]
) -> ConversationView:
    """The conversation's messages, each answer with its sources and rewritten question."""
    return store.get(conversation_id)


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: str, store: Annotated[ConversationStore, Depends(conversations)]) -> None:
    store.delete(conversation_id)
