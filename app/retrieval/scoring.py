"""One 0-1 relevance scale for every retrieval mode, so one score threshold means the same thing everywhere.

Raw scores live on different scales: cosine similarity of e5 embeddings crowds into 0.7-0.95 for any text,
and BM25 scores are unbounded and grow with the number of query terms. Each mode's raw scores are mapped
through a logistic model fitted on labelled question/passage pairs (scripts/calibrate_scores.py on
../shared/eval: the top hits of each question, labelled by whether they come from the passage that answers it,
the two classes weighted equally):

    dense:  score = sigmoid(dense_scale * (cosine - dense_center))
    bm25:   score = sigmoid(bm25_scale * (ln(1 + bm25) - bm25_center))
    hybrid: score = sigmoid(hybrid_dense * cosine + hybrid_bm25 * ln(1 + bm25) + hybrid_bias)

The hybrid model weighs both signals as learned from the data, and its score also ranks the fused hits.
A score of 0.5 is where answering passages and other passages are equally likely to score like this (in the
fitted data: e5 cosine 0.856; BM25 12.3); higher is better in every mode. BM25 depends on the corpus: in a
knowledge base of a handful of documents even a perfect keyword match scores low, while dense and hybrid
scores do not need many documents. The fitted constants are data beside this module (calibration.json, for
multilingual-e5-small); `score_calibration_file` points at another fit, e.g. for another embedding model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

BUNDLED_CALIBRATION = Path(__file__).with_name("calibration.json")


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
    hybrid_dense: float
    hybrid_bm25: float
    hybrid_bias: float

    @classmethod
    def load(cls, path: Path | None = None) -> ScoreCalibration:
        """The fitted constants of a calibration file (the bundled one by default); other keys describe the fit."""
        data = json.loads((path or BUNDLED_CALIBRATION).read_text(encoding="utf-8"))
        return cls(**{field.name: float(data[field.name]) for field in fields(cls)})

    def dense(self, cosine: float) -> float:
        return _sigmoid(self.dense_scale * (cosine - self.dense_center))

    def bm25(self, raw: float) -> float:
        if raw <= 0:
            return 0.0
        return _sigmoid(self.bm25_scale * (math.log1p(raw) - self.bm25_center))

    def hybrid(self, cosine: float, bm25_raw: float) -> float:
        """`bm25_raw` is 0 for a chunk outside the BM25 candidates (no keyword of the question in it, or too few)."""
        return _sigmoid(
            self.hybrid_dense * cosine + self.hybrid_bm25 * math.log1p(max(bm25_raw, 0.0)) + self.hybrid_bias
        )
