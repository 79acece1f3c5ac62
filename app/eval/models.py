"""What an evaluation returns: plain pydantic models, also the API's response bodies (GET /api/eval/jobs/{id})."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.retrieval.retriever import RetrievalMode
from app.storage.chunks import ChunkRef


class Latency(BaseModel):
    p50_ms: float
    p95_ms: float
    max_ms: float


class Metrics(BaseModel):
    questions: int
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr: float = Field(description="Mean reciprocal rank of the first gold hit in the top 10 (0 when absent)")
    latency: Latency = Field(description="Per question, the whole search call (query embedding included)")


class ThresholdPoint(BaseModel):
    threshold: float
    gold_kept: float = Field(description="Share of gold hits scoring at least the threshold")
    others_dropped: float = Field(description="Share of other hits scoring below the threshold")


class ThresholdSuggestion(BaseModel):
    criterion: str
    threshold: float | None = None
    gold_kept: float | None = None
    others_dropped: float | None = None
    gold_hits: int = 0
    other_hits: int = 0
    neighbours: list[ThresholdPoint] = Field(default_factory=list)
    note: str | None = None


class ReturnedHit(ChunkRef):
    """A hit of a missed question: which chunk, the start of its text."""

    rank: int
    score: float
    gold: bool
    snippet: str


class Miss(BaseModel):
    """A question whose gold hit is not in the top 5: what came back instead."""

    line: int
    id: str | None
    question: str
    source: str | None
    expected: dict[str, Any]
    gold_rank: int | None = Field(description="6..10 when the gold hit came lower, None when not in the top 10")
    returned: list[ReturnedHit]


class RunResult(BaseModel):
    """One retrieval mode at one chunking."""

    chunk_size: int
    chunk_overlap: int
    temporary_kb: bool = Field(description="True: a temporary copy of the documents indexed at this chunk size")
    chunk_count: int
    index_seconds: float | None = None
    failed_documents: int = 0
    mode: RetrievalMode
    overall: Metrics
    by_source: dict[str, Metrics] = Field(default_factory=dict)
    threshold: ThresholdSuggestion
    misses_total: int
    misses: list[Miss] = Field(description="At most eval.misses_listed of them, in question order")


class AnswerItem(BaseModel):
    line: int
    question: str
    expected_answers: list[str]
    answer: str
    contains_answer: bool
    refused: bool
    gold_retrieved: bool = Field(description="A gold chunk was among the sources given to the LLM")
    seconds: float


class AnswerCheck(BaseModel):
    """End-to-end: the real LLM answers sampled questions in kb mode (hybrid retrieval, default top_k)."""

    sample: int
    checked: int = 0
    contains_answer: int = 0
    contains_answer_rate: float = 0.0
    refused: int = 0
    refusal_rate: float = 0.0
    gold_retrieved: int = 0
    refused_with_gold_retrieved: int = 0
    refused_with_gold_rate: float = Field(0.0, description="Of the answers whose gold chunk was retrieved")
    refusal_detection: str = ""
    error: str | None = None
    items: list[AnswerItem] = Field(default_factory=list)


class EvalReport(BaseModel):
    kb_name: str
    questions: int
    judged_by: dict[str, int] = Field(description="document: by doc_id / file_name; answer_text: by answer text")
    sources: list[str]
    modes: list[RetrievalMode]
    chunk_sizes: list[int] = Field(description="The knowledge base's own first, then the others tried")
    top_k: int = 10
    runs: list[RunResult]
    suggested_threshold: ThresholdSuggestion | None = Field(
        None, description="Hybrid (or the first mode) at the knowledge base's own chunk size"
    )
    answers: AnswerCheck | None = None
    started_at: datetime
    seconds: float


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class EvalJobView(BaseModel):
    id: str
    kb_name: str
    status: JobStatus
    progress: float = Field(description="0-1")
    stage: str = Field(description="What runs now, e.g. 'hybrid @500: 120/600 questions'")
    questions: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    report: EvalReport | None = None
