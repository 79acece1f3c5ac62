"""知识库测试: retrieval only, scored chunks with their sources."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field

from app.api.deps import search_service
from app.retrieval.models import SearchResponse
from app.retrieval.retriever import RetrievalMode
from app.retrieval.service import SearchService
from app.validation import RequestModel

router = APIRouter(prefix="/api/kbs/{kb_name}", tags=["search"])


class SearchRequest(RequestModel):
    question: str = Field(description="Not empty; at most max_question_chars characters")
    top_k: int | None = Field(None, description="1..max_top_k; default default_top_k")
    score_threshold: float | None = Field(
        None, description="0-1, on the one scale all modes share (see app/retrieval/scoring.py); higher is better"
    )
    mode: RetrievalMode = RetrievalMode.hybrid


@router.post("/search")
def search(
    kb_name: str, body: SearchRequest, service: Annotated[SearchService, Depends(search_service)]
) -> SearchResponse:
    """Retrieve the chunks that best match the question, with 0-1 scores, source file, page and chunk index."""
    return service.search(kb_name, body.question, body.top_k, body.score_threshold, body.mode)
