"""One 0-1 relevance scale for every retrieval mode, so one score threshold means the same thing everywhere.

Raw scores live on different scales: cosine similarity of e5 embeddings crowds into 0.7-0.95 for any text,
and BM25 scores are unbounded and grow with the number of query terms. Each is mapped through a logistic
curve fitted on labelled question/passage pairs (scripts/calibrate_scores.py on ../shared/eval), so that a
score estimates how likely the chunk is to hold the answer:

    dense:  score = sigmoid(scale_d * (cosine - center_d))
    bm25:   score = sigmoid(scale_b * (ln(1 + bm25) - center_b))
    hybrid: score = w * dense score + (1 - w) * bm25 score     (w = hybrid_dense_weight)

A score of 0.5 is the point where a chunk is as likely relevant as not; higher is better in every mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _sigmoid(x: float) -> float:
    if x < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ScoreCalibration:
    dense_center: float
    dense_scale: float
    bm25_center: float
    bm25_scale: float

    def dense(self, cosine: float) -> float:
        return _sigmoid(self.dense_scale * (cosine - self.dense_center))

    def bm25(self, raw: float) -> float:
        if raw <= 0:
            return 0.0
        return _sigmoid(self.bm25_scale * (math.log1p(raw) - self.bm25_center))

    @staticmethod
    def hybrid(dense_score: float, bm25_score: float, dense_weight: float) -> float:
        return dense_weight * dense_score + (1.0 - dense_weight) * bm25_score
