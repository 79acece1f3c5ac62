"""Conversations kept in the catalog database: their messages, with the sources and rewrites of each answer."""

from __future__ import annotations

import json
import re
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select

from app.chat.models import ChatAnswer, HistoryMessage, Source
from app.errors import ConversationNotFound, InvalidInput
from app.storage.catalog import Catalog, Conversation, ConversationMessage

_ID = re.compile(r"^[0-9a-f]{32}$")


class StoredMessage(BaseModel):
    role: str
    content: str
    mode: str
    rewritten_question: str | None
    sources: list[Source]
    created_at: datetime


class ConversationView(BaseModel):
    id: str
    title: str
    created_at: datetime
    messages: list[StoredMessage]


class ConversationStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def create(self, title: str = "") -> str:
        with self.catalog.session() as session:
            conversation = Conversation(title=title[:255])
            session.add(conversation)
            session.flush()
            return conversation.id

    def history(self, conversation_id: str) -> list[HistoryMessage]:
        with self.catalog.session() as session:
            conversation = self._get(session, conversation_id)
            return [HistoryMessage(role=m.role, content=m.content) for m in conversation.messages]  # type: ignore[arg-type]

    def append_turn(self, conversation_id: str, question: str, answer: ChatAnswer) -> None:
        with self.catalog.session() as session:
            conversation = self._get(session, conversation_id)
            seq = session.scalar(
                select(func.coalesce(func.max(ConversationMessage.seq), 0)).where(
                    ConversationMessage.conversation_id == conversation.id
                )
            )
            if not conversation.title:
                conversation.title = question[:60]
            session.add(ConversationMessage(conversation_id=conversation.id, seq=seq + 1, role="user",
                                            content=question, mode=answer.mode.value))
            session.add(ConversationMessage(
                conversation_id=conversation.id, seq=seq + 2, role="assistant", content=answer.answer,
                mode=answer.mode.value, rewritten_question=answer.rewritten_question,
                sources_json=json.dumps([s.model_dump() for s in answer.sources], ensure_ascii=False),
            ))

    def get(self, conversation_id: str) -> ConversationView:
        with self.catalog.session() as session:
            c = self._get(session, conversation_id)
            messages = [
                StoredMessage(role=m.role, content=m.content, mode=m.mode, rewritten_question=m.rewritten_question,
                              sources=[Source.model_validate(s) for s in json.loads(m.sources_json or "[]")],
                              created_at=m.created_at)
                for m in c.messages
            ]
            return ConversationView(id=c.id, title=c.title, created_at=c.created_at, messages=messages)

    def delete(self, conversation_id: str) -> None:
        with self.catalog.session() as session:
            session.delete(self._get(session, conversation_id))

    @staticmethod
    def _get(session, conversation_id: str) -> Conversation:  # type: ignore[no-untyped-def]
        if not _ID.match(conversation_id or ""):
            raise InvalidInput("conversation_id must be 32 hexadecimal characters, as the server issued it")
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            raise ConversationNotFound(f"conversation {conversation_id} not found")
        return conversation
