"""The chat modes: LLM 对话 (llm), 知识库问答 (kb) and 知识库测试 (kb_test).

`start()` does everything that can fail with a plain HTTP status before a byte is streamed: validation,
the knowledge bases' existence, the follow-up rewrite, retrieval and opening the LLM stream (so a down LLM is a
503, not a broken stream). The returned `ChatSession` then yields typed events: `sources` first, then `delta`s
of the answer, then `done` with usage and timings, or `error` if the LLM fails mid-answer. Model and Milvus
calls run in threads; the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from app.chat.conversations import ConversationStore
from app.chat.models import ChatAnswer, ChatMode, ChatRequest, HistoryMessage, Source
from app.chat.prompts import PromptBook, load_prompts
from app.errors import InvalidInput, KBQAError
from app.kb.service import KnowledgeBaseService
from app.llm.client import ChatDelta, LLMClient
from app.retrieval.retriever import RetrievalMode
from app.retrieval.service import SearchService
from app.settings import Settings

Event = dict[str, Any]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class ChatSession:
    """One answer in the making: iterate `events()` once, or `collect()` the whole answer."""

    def __init__(self, answer: ChatAnswer, started: float, conversations: ConversationStore) -> None:
        self.answer = answer
        self.started = started
        self.conversations = conversations
        self.fixed_text: str | None = None
        self.prefix = ""
        self.deltas: AsyncIterator[ChatDelta] | None = None
        self.failure: KBQAError | None = None

    async def events(self) -> AsyncIterator[Event]:
        answer = self.answer
        yield {
            "type": "sources",
            "mode": answer.mode.value,
            "question": answer.question,
            "rewritten_question": answer.rewritten_question,
            "conversation_id": answer.conversation_id,
            "sources": [s.model_dump() for s in answer.sources],
        }
        try:
            async for text in self._texts():
                if answer.timings_ms.first_token_ms is None:
                    answer.timings_ms.first_token_ms = _ms_since(self.started)
                answer.answer += text
                yield {"type": "delta", "text": text}
        except KBQAError as exc:
            self.failure = exc
            answer.timings_ms.total_ms = _ms_since(self.started)
            yield {"type": "error", "status": exc.status_code, "message": exc.message, "partial_answer": answer.answer}
            return
        answer.timings_ms.total_ms = _ms_since(self.started)
        if answer.conversation_id and answer.mode != ChatMode.kb_test:
            await asyncio.to_thread(self.conversations.append_turn, answer.conversation_id, answer.question, answer)
        yield {
            "type": "done",
            "finish_reason": answer.finish_reason,
            "answered_from_kb": answer.answered_from_kb,
            "usage": answer.usage.model_dump(),
            "timings_ms": answer.timings_ms.model_dump(),
        }

    async def _texts(self) -> AsyncIterator[str]:
        if self.prefix:
            yield self.prefix
        if self.fixed_text is not None:
            self.answer.finish_reason = "stop"
            yield self.fixed_text
            return
        if self.deltas is None:
            return
        counted = False
        async for delta in self.deltas:
            if delta.finish_reason:
                self.answer.finish_reason = delta.finish_reason
            if delta.usage:  # the server's own count, prompt included
                counted = True
                self.answer.usage.prompt_tokens = delta.usage.get("prompt_tokens")
                self.answer.usage.completion_tokens = delta.usage.get("completion_tokens", 0)
            if delta.text:
                if not counted:
                    self.answer.usage.completion_tokens += 1  # one piece per token, until the server says more
                yield delta.text

    async def collect(self) -> ChatAnswer:
        async for _event in self.events():
            pass
        if self.failure:
            raise self.failure
        return self.answer


class ChatService:
    def __init__(
        self,
        settings: Settings,
        knowledge_bases: KnowledgeBaseService,
        search: SearchService,
        llm: LLMClient,
        conversations: ConversationStore,
    ) -> None:
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self.search = search
        self.llm = llm
        self.conversations = conversations

    @property
    def prompts(self) -> PromptBook:
        return load_prompts(self.settings.prompts_file)

    async def start(self, request: ChatRequest) -> ChatSession:
        started = time.perf_counter()
        question = self.search.validate_question(request.question)
        kb_names = await self._checked_kbs(request)
        history = await self._history(request)
        answer = ChatAnswer(mode=request.mode, question=question, conversation_id=request.conversation_id)
        session = ChatSession(answer, started, self.conversations)
        turns = self.settings.chat_history_turns if request.history_turns is None else request.history_turns
        history = history[-2 * turns :] if turns else []

        retrieval_question = question
        # Checked before the rewrite, so a bad option costs no LLM call before it is refused.
        options = (
            self.search.options(request.top_k, request.score_threshold, request.retrieval_mode)
            if request.mode != ChatMode.llm
            else ()
        )
        rewrite = self.settings.chat_rewrite_followups if request.rewrite is None else request.rewrite
        if request.mode == ChatMode.kb and history and rewrite:
            t0 = time.perf_counter()
            retrieval_question = await self._rewrite(history, question)
            answer.rewritten_question = retrieval_question
            answer.timings_ms.rewrite_ms = _ms_since(t0)
        if request.mode in (ChatMode.kb, ChatMode.kb_test):
            t0 = time.perf_counter()
            answer.sources = await asyncio.to_thread(self._retrieve, kb_names, retrieval_question, *options)
            answer.timings_ms.retrieval_ms = _ms_since(t0)
        if request.mode == ChatMode.kb_test:
            return session

        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.content} for m in history]
        if request.mode == ChatMode.llm:
            messages.append({"role": "user", "content": question})
        elif answer.sources:
            answer.answered_from_kb = True
            # The standalone (rewritten) question: the follow-up alone may point the model at the wrong source.
            prompt = self.prompts.kb_prompt(retrieval_question, answer.sources, request.template)
            messages.append({"role": "user", "content": prompt})
        elif (request.no_hit_policy or self.settings.chat_no_hit_policy) == "refuse":
            session.fixed_text = self.prompts.no_hit_refusal
            return session
        else:
            session.prefix = self.prompts.no_hit_notice
            messages.append({"role": "user", "content": question})
        answer.timings_ms.llm_request_ms = _ms_since(started)
        session.deltas = await self.llm.aopen_stream(
            messages, temperature=request.temperature, max_tokens=request.max_tokens
        )
        return session

    async def _checked_kbs(self, request: ChatRequest) -> list[str]:
        if request.mode == ChatMode.llm:
            return []
        names = list(dict.fromkeys(request.kb_names))
        if not names:
            raise InvalidInput(f"mode {request.mode.value} needs at least one knowledge base in kb_names")
        if len(names) > self.settings.chat_max_kbs:
            raise InvalidInput(f"at most {self.settings.chat_max_kbs} knowledge bases per question, got {len(names)}")
        for name in names:
            await asyncio.to_thread(self.knowledge_bases.require, name)  # NotFound (404) for an unknown one
        return names

    async def _history(self, request: ChatRequest) -> list[HistoryMessage]:
        if request.history is not None and request.conversation_id:
            raise InvalidInput("send either history or conversation_id, not both")
        if request.conversation_id:
            history = await asyncio.to_thread(self.conversations.history, request.conversation_id)
        else:
            history = request.history or []
        if len(history) > self.settings.chat_max_history_messages:
            raise InvalidInput(
                f"history has {len(history)} messages; the limit is {self.settings.chat_max_history_messages}"
            )
        return history

    async def _rewrite(self, history: list[HistoryMessage], question: str) -> str:
        prompt = self.prompts.rewrite_prompt([(m.role, m.content) for m in history], question)
        result = await self.llm.achat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=128)
        rewritten = result.text.strip().strip("\"'“”「」").splitlines()
        return rewritten[0].strip() if rewritten and rewritten[0].strip() else question

    def _retrieve(
        self, kb_names: list[str], question: str, top_k: int, threshold: float, mode: RetrievalMode
    ) -> list[Source]:
        """Search each knowledge base, merge by score (one 0-1 scale everywhere), keep the best top_k."""
        found = []
        for name in kb_names:
            response = self.search.search(name, question, top_k, threshold, mode)
            found.extend((name, hit) for hit in response.hits)
        found.sort(key=lambda pair: pair[1].score, reverse=True)
        return [hit.to(Source, number=n, kb_name=name) for n, (name, hit) in enumerate(found[:top_k], start=1)]
