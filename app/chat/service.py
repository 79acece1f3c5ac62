"""The chat modes, one method each: LLM 对话 (`chat_with_llm`), 知识库问答 (`answer_from_kbs`) and 知识库测试
(`test_kbs`); `start()` picks the request's.

Each does everything that can fail with a plain HTTP status before a byte is streamed: validation, the knowledge
bases' existence, the follow-up rewrite, retrieval and opening the LLM stream (so a down LLM is a 503, not a broken
stream). The returned `ChatSession` then yields typed events (app/chat/models.py): `sources` first, then `delta`s
of the answer, then `done` with usage and timings, or `error` if the LLM fails mid-answer. Model and Milvus
calls run in threads; the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.chat.conversations import ConversationStore
from app.chat.models import (
    ChatAnswer,
    ChatEvent,
    ChatMode,
    ChatRequest,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    HistoryMessage,
    Source,
    SourcesEvent,
)
from app.chat.prompts import PromptBook, default_template, load_prompts
from app.errors import InvalidInput, KBQAError
from app.kb.service import KnowledgeBaseService
from app.llm.client import ChatDelta, LLMClient
from app.retrieval.retriever import RetrievalMode
from app.retrieval.service import SearchService
from app.settings import Settings

Message = dict[str, str]


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

    async def events(self) -> AsyncIterator[ChatEvent]:
        answer = self.answer
        yield SourcesEvent.model_validate(answer, from_attributes=True)
        try:
            async for text in self._texts():
                if answer.timings_ms.first_token_ms is None:
                    answer.timings_ms.first_token_ms = _ms_since(self.started)
                answer.answer += text
                yield DeltaEvent(text=text)
        except KBQAError as exc:
            self.failure = exc
            answer.timings_ms.total_ms = _ms_since(self.started)
            yield ErrorEvent(status=exc.status_code, code=exc.code, message=exc.message, partial_answer=answer.answer)
            return
        answer.timings_ms.total_ms = _ms_since(self.started)
        if answer.conversation_id and answer.mode != ChatMode.kb_test:
            await asyncio.to_thread(self.conversations.append_turn, answer.conversation_id, answer.question, answer)
        yield DoneEvent.model_validate(answer, from_attributes=True)

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


@dataclass
class _Turn:
    """A checked request: its session, the knowledge bases to search and the earlier turns to use."""

    session: ChatSession
    kb_names: list[str]
    history: list[HistoryMessage]

    @property
    def answer(self) -> ChatAnswer:
        return self.session.answer

    def messages(self, system: str | None, examples: list[Message] | None = None) -> list[Message]:
        """The system message, if any, a template's worked examples, and the earlier turns: what every prompt
        starts with."""
        messages = [{"role": "system", "content": system}] if system else []
        return messages + (examples or []) + [{"role": m.role, "content": m.content} for m in self.history]


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
        return load_prompts(self.settings.chat.prompts_file)

    async def start(self, request: ChatRequest) -> ChatSession:
        """The answer to a request, in its mode."""
        if request.mode == ChatMode.llm:
            return await self.chat_with_llm(request)
        if request.mode == ChatMode.kb:
            return await self.answer_from_kbs(request)
        return await self.test_kbs(request)

    async def chat_with_llm(self, request: ChatRequest) -> ChatSession:
        """LLM 对话: the question after the earlier turns, straight to the LLM."""
        turn = await self._begin(request, with_kbs=False)
        messages = [*turn.messages(request.system), {"role": "user", "content": turn.answer.question}]
        return await self._open_llm(turn, messages, request)

    async def answer_from_kbs(self, request: ChatRequest) -> ChatSession:
        """知识库问答: a follow-up rewritten into a standalone question, retrieval from the knowledge bases, and the
        LLM answering from the numbered sources; without sources, a refusal or the LLM alone (no_hit_policy)."""
        turn = await self._begin(request, with_kbs=True)
        answer, question = turn.answer, turn.answer.question
        # Checked before the rewrite, so a bad option costs no LLM call before it is refused.
        top_k = self.settings.chat.kb_top_k if request.top_k is None else request.top_k
        options = self.search.options(top_k, request.score_threshold, request.retrieval_mode)
        rewrite = self.settings.chat.rewrite_followups if request.rewrite is None else request.rewrite
        retrieval_question = question
        if turn.history and rewrite:
            t0 = time.perf_counter()
            retrieval_question = await self._rewrite(turn.history, question)
            answer.rewritten_question = retrieval_question
            answer.timings_ms.rewrite_ms = _ms_since(t0)
        await self._retrieve(turn, retrieval_question, *options)
        if answer.sources:
            answer.answered_from_kb = True
            # The standalone (rewritten) question: the follow-up alone may point the model at the wrong source.
            template = request.template or default_template(
                retrieval_question, self.settings.chat.kb_template, self.settings.chat.kb_template_english
            )
            focus = self.settings.chat.focus_chars if request.focus_chars is None else request.focus_chars
            prompts = self.prompts
            prompt = prompts.kb_prompt(
                retrieval_question, answer.sources, template, self.settings.chat.context_order, focus,
                self.settings.chat.focus_pooled,
            )
            system = "\n\n".join(part for part in (prompts.kb_system(template), request.system) if part)
            messages = [*turn.messages(system, prompts.kb_examples(template)), {"role": "user", "content": prompt}]
            most = min(self.settings.chat.kb_max_tokens, self.settings.llm.max_tokens)
            return await self._open_llm(turn, messages, request, most)
        if (request.no_hit_policy or self.settings.chat.no_hit_policy) == "refuse":
            turn.session.fixed_text = self.prompts.no_hit_refusal
            return turn.session
        turn.session.prefix = self.prompts.no_hit_notice
        messages = [*turn.messages(request.system), {"role": "user", "content": question}]
        return await self._open_llm(turn, messages, request)

    async def test_kbs(self, request: ChatRequest) -> ChatSession:
        """知识库测试: retrieval only; the session streams the sources and no answer."""
        turn = await self._begin(request, with_kbs=True)
        options = self.search.options(request.top_k, request.score_threshold, request.retrieval_mode)
        await self._retrieve(turn, turn.answer.question, *options)
        return turn.session

    async def _begin(self, request: ChatRequest, *, with_kbs: bool) -> _Turn:
        """What every mode checks first, in this order: the question, the knowledge bases, the history."""
        started = time.perf_counter()
        question = self.search.validate_question(request.question)
        kb_names = await self._checked_kbs(request) if with_kbs else []
        history = await self._history(request)
        turns = self.settings.chat.history_turns if request.history_turns is None else request.history_turns
        answer = ChatAnswer(mode=request.mode, question=question, conversation_id=request.conversation_id)
        session = ChatSession(answer, started, self.conversations)
        return _Turn(session, kb_names, history[-2 * turns :] if turns else [])

    async def _open_llm(
        self, turn: _Turn, messages: list[Message], request: ChatRequest, max_tokens: int | None = None
    ) -> ChatSession:
        """`max_tokens` is the mode's own default (None: llm.max_tokens); the request's value wins."""
        turn.answer.timings_ms.llm_request_ms = _ms_since(turn.session.started)
        turn.session.deltas = await self.llm.aopen_stream(
            messages, temperature=request.temperature, max_tokens=request.max_tokens or max_tokens
        )
        return turn.session

    async def _retrieve(self, turn: _Turn, question: str, top_k: int, threshold: float, mode: RetrievalMode) -> None:
        t0 = time.perf_counter()
        turn.answer.sources = await asyncio.to_thread(self._sources, turn.kb_names, question, top_k, threshold, mode)
        turn.answer.timings_ms.retrieval_ms = _ms_since(t0)

    async def _checked_kbs(self, request: ChatRequest) -> list[str]:
        names = list(dict.fromkeys(request.kb_names))
        if not names:
            raise InvalidInput(f"mode {request.mode.value} needs at least one knowledge base in kb_names")
        if len(names) > self.settings.chat.max_kbs:
            raise InvalidInput(f"at most {self.settings.chat.max_kbs} knowledge bases per question, got {len(names)}")
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
        if len(history) > self.settings.chat.max_history_messages:
            raise InvalidInput(
                f"history has {len(history)} messages; the limit is {self.settings.chat.max_history_messages}"
            )
        return history

    async def _rewrite(self, history: list[HistoryMessage], question: str) -> str:
        prompt = self.prompts.rewrite_prompt([(m.role, m.content) for m in history], question)
        result = await self.llm.achat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=128)
        rewritten = result.text.strip().strip("\"'“”「」").splitlines()
        return rewritten[0].strip() if rewritten and rewritten[0].strip() else question

    def _sources(
        self, kb_names: list[str], question: str, top_k: int, threshold: float, mode: RetrievalMode
    ) -> list[Source]:
        """Search each knowledge base, merge by score (one 0-1 scale everywhere), keep the best top_k."""
        found = []
        for name in kb_names:
            response = self.search.search(name, question, top_k, threshold, mode)
            found.extend((name, hit) for hit in response.hits)
        found.sort(key=lambda pair: pair[1].score, reverse=True)
        return [hit.to(Source, number=n, kb_name=name) for n, (name, hit) in enumerate(found[:top_k], start=1)]
