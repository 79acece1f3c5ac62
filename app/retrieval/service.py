"""The 知识库测试 operation: validate a question, retrieve from one knowledge base, shape scored chunks."""

from __future__ import annotations

from app.errors import InvalidInput
from app.kb.preview.links import chunk_link
from app.kb.service import KnowledgeBaseService
from app.retrieval.models import SearchHit, SearchResponse
from app.retrieval.retriever import RetrievalMode, RetrievalResult, Retriever, ScoredChunk
from app.settings import Settings


def _search_hit(kb_name: str, chunk: ScoredChunk) -> SearchHit:
    """The hit with its scores rounded to 4 places and the link of its preview."""
    scores = {"score": chunk.score, "dense_score": chunk.dense_score, "bm25_score": chunk.bm25_score}
    rounded = {name: None if s is None else round(s, 4) for name, s in scores.items()}
    link = chunk_link(kb_name, chunk.hit.doc_id, chunk.hit.chunk_index)
    return chunk.hit.to(SearchHit, preview_url=link, **rounded)


class SearchService:
    def __init__(self, settings: Settings, knowledge_bases: KnowledgeBaseService, retriever: Retriever) -> None:
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self.retriever = retriever

    def search(
        self,
        kb_name: str,
        question: str,
        top_k: int | None = None,
        score_threshold: float | None = None,
        mode: RetrievalMode | str = RetrievalMode.hybrid,
    ) -> SearchResponse:
        question = self.validate_question(question)
        top_k, threshold, mode = self.options(top_k, score_threshold, mode)
        scope = self.knowledge_bases.search_scope(kb_name)
        if scope.has_ready:
            result = self.retriever.search(
                scope.collection, question, top_k, mode, threshold, excluded_doc_ids=scope.hidden
            )
        else:  # nothing to find; and Milvus fails a BM25 search of an empty collection ("NaN or Inf value")
            result = RetrievalResult(chunks=[], timings_ms={"total": 0.0})
        return SearchResponse(
            kb_name=kb_name,
            question=question,
            mode=mode.value,
            top_k=top_k,
            score_threshold=threshold,
            hits=[_search_hit(kb_name, chunk) for chunk in result.chunks],
            timings_ms=result.timings_ms,
        )

    def options(
        self, top_k: int | None, score_threshold: float | None, mode: RetrievalMode | str
    ) -> tuple[int, float, RetrievalMode]:
        """The search options with their defaults filled in, or InvalidInput."""
        top_k = self.settings.retrieval.default_top_k if top_k is None else top_k
        if not 1 <= top_k <= self.settings.retrieval.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.retrieval.max_top_k}, got {top_k}")
        threshold = self.settings.retrieval.default_score_threshold if score_threshold is None else score_threshold
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"score_threshold must be between 0 and 1, got {threshold}")
        try:
            mode = RetrievalMode(mode)
        except ValueError:
            raise InvalidInput(f"mode must be one of {', '.join(m.value for m in RetrievalMode)}") from None
        return top_k, threshold, mode

    def validate_question(self, question: str) -> str:
        question = (question or "").strip()
        if not question:
            raise InvalidInput("question must not be empty")
        if "\x00" in question:
            raise InvalidInput("question must not contain NUL (\\x00) characters")
        if len(question) > self.settings.chat.max_question_chars:
            raise InvalidInput(
                f"question is {len(question)} characters long; the limit is {self.settings.chat.max_question_chars}"
            )
        return question
