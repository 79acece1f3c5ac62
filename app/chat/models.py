"""What a chat request carries and what comes back: sources, the streamed events (typed, one model per kind),
the whole answer."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, computed_field

from app.kb.preview.links import chunk_link
from app.retrieval.retriever import RetrievalMode
from app.storage.chunks import ChunkRecord
from app.validation import RequestModel


class ChatMode(enum.StrEnum):
    llm = "llm"  # LLM 对话
    kb = "kb"  # 知识库问答
    kb_test = "kb_test"  # 知识库测试: retrieval only


class HistoryMessage(RequestModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class ChatRequest(RequestModel):
    question: str = Field(description="Not empty; at most max_question_chars characters")
    mode: ChatMode = ChatMode.kb
    kb_names: list[str] = Field(default_factory=list, description="Knowledge bases to search (kb and kb_test)")
    history: list[HistoryMessage] | None = Field(
        None, description="Earlier turns, oldest first; or leave empty and send conversation_id"
    )
    conversation_id: str | None = Field(None, description="A conversation the server keeps (see /api/conversations)")
    system: str | None = Field(None, max_length=4000, description="A system message sent before everything else")
    top_k: int | None = Field(None, description="1..max_top_k chunks; default default_top_k")
    score_threshold: float | None = Field(None, ge=0, le=1, description="0-1; chunks scoring lower are dropped")
    retrieval_mode: RetrievalMode = RetrievalMode.hybrid
    template: str | None = Field(None, description="A kb template name from configs/prompts.yaml")
    focus_chars: int | None = Field(
        None, ge=0, le=100_000, description="Characters each source keeps in a kb prompt (0: whole); default "
        "chat.focus_chars"
    )
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    history_turns: int | None = Field(None, ge=0, le=50, description="Earlier question/answer pairs to use")
    rewrite: bool | None = Field(None, description="Rewrite a follow-up before retrieval (kb mode)")
    no_hit_policy: Literal["refuse", "llm"] | None = None
    stream: bool = True


class Source(ChunkRecord):
    """A chunk given to the LLM, numbered as the answer cites it ([1], [2]...)."""

    number: int
    kb_name: str
    score: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def preview_url(self) -> str:
        """The chunk in its context (see app/kb/preview/links.py), relative to the API."""
        return chunk_link(self.kb_name, self.doc_id, self.chunk_index)


class Timings(BaseModel):
    rewrite_ms: float | None = None
    retrieval_ms: float | None = None
    llm_request_ms: float | None = None  # from the request's arrival to the LLM call: our whole share
    first_token_ms: float | None = None
    total_ms: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int = 0


class ChatAnswer(BaseModel):
    """The whole answer: what the stream's events add up to."""

    mode: ChatMode
    question: str
    rewritten_question: str | None = None
    conversation_id: str | None = None
    answer: str = ""
    answered_from_kb: bool = False
    sources: list[Source] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    timings_ms: Timings = Field(default_factory=Timings)
    finish_reason: str | None = None


class SourcesEvent(BaseModel):
    """First: the chunks the answer may cite, and the question retrieval used."""

    type: Literal["sources"] = "sources"
    mode: ChatMode
    question: str
    rewritten_question: str | None
    conversation_id: str | None
    sources: list[Source]


class DeltaEvent(BaseModel):
    """A piece of the answer."""

    type: Literal["delta"] = "delta"
    text: str


class DoneEvent(BaseModel):
    """Last, when the answer is complete."""

    type: Literal["done"] = "done"
    finish_reason: str | None
    answered_from_kb: bool
    usage: Usage
    timings_ms: Timings


class ErrorEvent(BaseModel):
    """Last, when the LLM failed mid-answer: its status, code (as in error bodies) and message, and the answer so
    far."""

    type: Literal["error"] = "error"
    status: int
    code: str
    message: str
    partial_answer: str


# What a chat session streams, told apart by `type` (also the SSE event name).
ChatEvent = Annotated[SourcesEvent | DeltaEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
