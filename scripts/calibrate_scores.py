"""Fit the logistic curves that put dense and BM25 scores on one 0-1 scale (app/retrieval/scoring.py).

    .venv/bin/python scripts/calibrate_scores.py [--passages 400 --questions 200]

Ingests passages of ../shared/eval (zh and en) with the configured embedding model, asks the questions, and
labels every retrieved chunk by whether it comes from the question's gold passage. A logistic regression of
that label on the raw score (cosine for dense, ln(1 + BM25) for bm25; both for hybrid, over the union of
the two modes' hits) gives the curves of app/retrieval/scoring.py. Prints the fitted constants, and with
`--write FILE` writes them as a calibration file (app/retrieval/calibration.json is the bundled one; point the
`score_calibration_file` setting at another).
Questions are taken from the end of each question file, away from the ones the tests use.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.retrieval.scoring import ScoreCalibration  # noqa: E402
from app.services import Services  # noqa: E402
from app.settings import get_settings  # noqa: E402
from scripts.benchdoc import EVAL, read_jsonl  # noqa: E402


def pick(lang: str, passages: int, questions: int) -> tuple[list[dict], list[dict]]:
    corpus = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
    chosen = read_jsonl(EVAL / f"{lang}_questions.jsonl")[-questions:]
    wanted = {q["doc_id"] for q in chosen}
    for row in reversed(corpus):
        if len(wanted) >= passages:
            break
        wanted.add(row["doc_id"])
    return [row for row in corpus if row["doc_id"] in wanted], chosen


def fit(features: list[list[float]], labels: list[int]) -> tuple[list[float], float]:
    """Class-balanced logistic regression: coefficients and intercept."""
    model = LogisticRegression(C=100.0, class_weight="balanced").fit(np.asarray(features), np.asarray(labels))
    return [float(c) for c in model.coef_[0]], float(model.intercept_[0])


def label_question(services: Services, collection: str, question: dict, depth: int, out: dict[str, list]) -> None:
    """Raw scores of the top `depth` hits of each mode (hybrid: their union), labelled gold or not."""
    gold = f"{question['doc_id']}.txt"
    vector = services.query_embedder().encode_query(question["question"])
    dense = services.store.search_dense(collection, vector, depth)
    bm25, stored = services.store.search_bm25_with_vectors(collection, question["question"], depth)
    for hit in dense:
        out["dense"].append(([hit.raw_score], int(hit.file_name == gold)))
    for hit in bm25:
        out["bm25"].append(([math.log1p(max(hit.raw_score, 0.0))], int(hit.file_name == gold)))
    cosine = {h.chunk_id: h.raw_score for h in dense}
    for hit in bm25:
        if hit.chunk_id not in cosine:
            cosine[hit.chunk_id] = float(np.dot(stored[hit.chunk_id], vector))
    bm25_raw = {h.chunk_id: h.raw_score for h in bm25}
    for hit in {h.chunk_id: h for h in [*dense, *bm25]}.values():
        features = [cosine.get(hit.chunk_id, -1.0), math.log1p(max(bm25_raw.get(hit.chunk_id, 0.0), 0.0))]
        out["hybrid"].append((features, int(hit.file_name == gold)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=400)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--depth", type=int, default=20, help="hits per question and mode to label")
    parser.add_argument("--write", type=Path, help="write the fit as a calibration file (JSON) here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kbqa-calibrate-"))
    settings = get_settings().with_changes(
        storage__data_dir=work, embedding__model=get_settings().resolved_embedding_model
    )
    services = Services(settings)
    labelled: dict[str, list] = {"dense": [], "bm25": [], "hybrid": []}
    try:
        for lang in ("zh", "en"):
            passages, questions = pick(lang, args.passages, args.questions)
            kb = services.knowledge_bases.create(f"calibrate-{lang}")
            for p in passages:
                services.knowledge_bases.upload(kb.name, f"{p['doc_id']}.txt", io.BytesIO(p["text"].encode()))
            services.queue.wait_idle()
            for q in questions:
                label_question(services, kb.collection_name, q, args.depth, labelled)
            print(f"[{lang}] {len(passages)} passages, {len(questions)} questions labelled", flush=True)
    finally:
        services.close()
        shutil.rmtree(work, ignore_errors=True)

    fitted = {}
    for mode, rows in labelled.items():
        fitted[mode] = fit([f for f, _ in rows], [y for _, y in rows])
        print(f"{mode}: {len(rows)} hits, {sum(y for _, y in rows)} gold")
    (dense_coef,), dense_bias = fitted["dense"]
    (bm25_coef,), bm25_bias = fitted["bm25"]
    (hybrid_dense, hybrid_bm25), hybrid_bias = fitted["hybrid"]
    calibration = ScoreCalibration(
        dense_center=-dense_bias / dense_coef,
        dense_scale=dense_coef,
        bm25_center=-bm25_bias / bm25_coef,
        bm25_scale=bm25_coef,
        hybrid_dense=hybrid_dense,
        hybrid_bm25=hybrid_bm25,
        hybrid_bias=hybrid_bias,
    )
    constants = {name: round(value, 4) for name, value in asdict(calibration).items()}
    print(json.dumps(constants, indent=2))
    if args.write:
        described = {
            "model": settings.resolved_embedding_model,
            "fitted_by": f"scripts/calibrate_scores.py --passages {args.passages} --questions {args.questions}",
        }
        args.write.write_text(json.dumps(described | constants, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
