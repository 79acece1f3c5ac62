"""The evaluation's arithmetic, kept free of I/O so tests can check it on hand-made rankings.

- rank: the 1-based position of the first gold hit in a question's ranked hits, None when none is gold;
- recall@k: the share of questions whose rank is at most k;
- MRR: the mean of 1/rank over all questions (0 for a question without a gold hit in the retrieved list);
- latency percentiles: linear interpolation between the closest ranks (numpy's default);
- the suggested score threshold: see `suggest_threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.eval.models import Latency, ThresholdPoint, ThresholdSuggestion

THRESHOLD_STEP = 0.01
NEIGHBOUR_OFFSETS = (-0.1, -0.05, 0.05, 0.1)
CRITERION = (
    "the threshold t on a grid of 0.01 that maximises (share of gold hits with score >= t) minus (share of other "
    "hits with score >= t), over the top hits of every question; ties go to the lowest t"
)


def first_gold_rank(flags: Sequence[bool]) -> int | None:
    return next((rank for rank, gold in enumerate(flags, start=1) if gold), None)


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    if not ranks:
        return 0.0
    return sum(1.0 / r for r in ranks if r is not None) / len(ranks)


def latency(milliseconds: Sequence[float]) -> Latency:
    if not milliseconds:
        return Latency(p50_ms=0.0, p95_ms=0.0, max_ms=0.0)
    values = np.asarray(milliseconds, dtype=float)
    return Latency(
        p50_ms=round(float(np.percentile(values, 50)), 2),
        p95_ms=round(float(np.percentile(values, 95)), 2),
        max_ms=round(float(values.max()), 2),
    )


def tradeoff(gold_scores: Sequence[float], other_scores: Sequence[float], threshold: float) -> ThresholdPoint:
    """The share of gold hits a threshold keeps and the share of other hits it drops."""
    kept = sum(1 for s in gold_scores if s >= threshold) / len(gold_scores) if gold_scores else 0.0
    dropped = sum(1 for s in other_scores if s < threshold) / len(other_scores) if other_scores else 0.0
    return ThresholdPoint(threshold=round(threshold, 2), gold_kept=round(kept, 4), others_dropped=round(dropped, 4))


def suggest_threshold(gold_scores: Sequence[float], other_scores: Sequence[float]) -> ThresholdSuggestion:
    """The 0-1 score threshold that best separates gold hits from the others (Youden's J on a 0.01 grid):
    maximise gold_kept - others_kept = gold_kept + others_dropped - 1; the lowest such threshold wins a tie,
    so nothing is dropped that does not have to be. Neighbouring thresholds show the trade-off."""
    counts = {"gold_hits": len(gold_scores), "other_hits": len(other_scores)}
    if not gold_scores or not other_scores:
        missing = "gold" if not gold_scores else "other"
        return ThresholdSuggestion(criterion=CRITERION, note=f"no {missing} hits to learn a threshold from", **counts)
    grid = np.round(np.arange(0.0, 1.0 + THRESHOLD_STEP / 2, THRESHOLD_STEP), 2)
    points = [tradeoff(gold_scores, other_scores, float(t)) for t in grid]
    best = max(points, key=lambda p: (round(p.gold_kept + p.others_dropped, 6), -p.threshold))
    nearby = [round(best.threshold + offset, 2) for offset in NEIGHBOUR_OFFSETS]
    neighbours = [tradeoff(gold_scores, other_scores, t) for t in nearby if 0.0 <= t <= 1.0]
    return ThresholdSuggestion(
        criterion=CRITERION,
        threshold=best.threshold,
        gold_kept=best.gold_kept,
        others_dropped=best.others_dropped,
        neighbours=neighbours,
        **counts,
    )
