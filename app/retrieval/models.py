"""What a search returns: scored chunks with their sources, also the API's response body (知识库测试)."""

from __future__ import annotations

from pydantic import BaseModel

from app.kb.views import ChunkInfo


class SearchHit(ChunkInfo):
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    preview_url: str | None = None  # the chunk in its context (see app/kb/preview/links.py), relative to the API


class SearchResponse(BaseModel):
    kb_name: str
    question: str
    mode: str
    top_k: int
    score_threshold: float
    hits: list[SearchHit]
    timings_ms: dict[str, float]
