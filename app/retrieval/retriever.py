"""Dense, BM25 and hybrid retrieval over one knowledge-base collection, with scores on one 0-1 scale."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from app.retrieval.scoring import ScoreCalibration
from app.storage.vector_store import Hit, MilvusStore


class RetrievalMode(enum.StrEnum):
    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


@dataclass(frozen=True)
class ScoredChunk:
    hit: Hit
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None


@dataclass
class RetrievalResult:
    chunks: list[ScoredChunk]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HybridFusion:
    method: str = "calibrated"  # "calibrated" | "rrf"
    dense_weight: float = 0.5
    rrf_k: int = 60


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self._start) * 1000, 2)
        self._start = now


@dataclass(frozen=True)
class _Search:
    """One search's arguments, as every mode's steps need them."""

    collection: str
    question: str
    limit: int  # candidates fetched per search
    excluded: Collection[str]
    timer: _Timer


class Retriever:
    def __init__(
        self,
        store: MilvusStore,
        encode_query: Callable[[str], np.ndarray],
        calibration: ScoreCalibration,
        fusion: HybridFusion,
    ) -> None:
        self.store = store
        self.encode_query = encode_query
        self.calibration = calibration
        self.fusion = fusion

    def search(
        self,
        collection: str,
        question: str,
        top_k: int,
        mode: RetrievalMode = RetrievalMode.hybrid,
        score_threshold: float = 0.0,
        excluded_doc_ids: Collection[str] = (),
    ) -> RetrievalResult:
        """`excluded_doc_ids`: documents whose chunks must not be returned (not ready: being indexed, replaced or
        deleted), left out inside Milvus."""
        started = time.perf_counter()
        timer = _Timer()
        search = _Search(collection, question, min(max(top_k * 4, 40), 400), excluded_doc_ids, timer)
        if mode is RetrievalMode.dense:
            scored = self._dense(search)
        elif mode is RetrievalMode.bm25:
            scored = self._bm25(search)
        else:
            scored = self._hybrid(search)
        kept = [c for c in scored if c.score >= score_threshold]
        timer.timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        return RetrievalResult(chunks=kept[:top_k], timings_ms=timer.timings)

    def _dense_hits(self, search: _Search) -> tuple[np.ndarray, list[Hit]]:
        vector = self.encode_query(search.question)
        search.timer.lap("embed")
        hits = self.store.search_dense(search.collection, vector, search.limit, search.excluded)
        search.timer.lap("dense_search")
        return vector, hits

    def _bm25_hits(self, search: _Search) -> list[Hit]:
        hits = self.store.search_bm25(search.collection, search.question, search.limit, search.excluded)
        search.timer.lap("bm25_search")
        return hits

    def _dense(self, search: _Search) -> list[ScoredChunk]:
        _, hits = self._dense_hits(search)
        return [ScoredChunk(h, s, dense_score=s) for h in hits for s in [self.calibration.dense(h.raw_score)]]

    def _bm25(self, search: _Search) -> list[ScoredChunk]:
        hits = self._bm25_hits(search)
        return [ScoredChunk(h, s, bm25_score=s) for h in hits for s in [self.calibration.bm25(h.raw_score)]]

    def _hybrid(self, search: _Search) -> list[ScoredChunk]:
        vector, dense_hits = self._dense_hits(search)
        bm25_hits, stored = self.store.search_bm25_with_vectors(
            search.collection, search.question, search.limit, search.excluded
        )
        search.timer.lap("bm25_search")
        cosine = {h.chunk_id: h.raw_score for h in dense_hits}
        bm25_raw = {h.chunk_id: h.raw_score for h in bm25_hits}
        hits = {h.chunk_id: h for h in [*bm25_hits, *dense_hits]}
        for cid in bm25_raw.keys() - cosine.keys():
            cosine[cid] = float(np.dot(stored[cid], vector))
        search.timer.lap("fuse")
        scored = [self._fused(hits[cid], cosine.get(cid), bm25_raw.get(cid, 0.0)) for cid in hits]
        if self.fusion.method == "rrf":
            order = self._rrf_order(dense_hits, bm25_hits)
            return sorted(scored, key=lambda c: order.get(c.hit.chunk_id, 0.0), reverse=True)
        return sorted(scored, key=lambda c: c.score, reverse=True)

    def _fused(self, hit: Hit, cosine: float | None, bm25_raw: float) -> ScoredChunk:
        cosine = -1.0 if cosine is None else cosine
        return ScoredChunk(
            hit,
            self.calibration.hybrid(cosine, bm25_raw),
            dense_score=self.calibration.dense(cosine),
            bm25_score=self.calibration.bm25(bm25_raw),
        )

    def _rrf_order(self, dense_hits: list[Hit], bm25_hits: list[Hit]) -> dict[str, float]:
        fused: dict[str, float] = {}
        k = self.fusion.rrf_k
        for hits, weight in ((dense_hits, self.fusion.dense_weight), (bm25_hits, 1 - self.fusion.dense_weight)):
            for rank, hit in enumerate(hits, start=1):
                fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + weight / (k + rank)
        return fused
