"""Fit the logistic curves that put dense and BM25 scores on one 0-1 scale (app/retrieval/scoring.py).

    .venv/bin/python scripts/calibrate_scores.py [--passages 400 --questions 200]

Ingests passages of ../shared/eval (zh and en) with the configured embedding model, asks the questions, and
labels every retrieved chunk by whether it comes from the question's gold passage. A logistic regression of
that label on the raw score (cosine for dense, ln(1 + BM25) for bm25) gives `center` (the raw score where a
chunk is as likely gold as not) and `scale` (the slope). Prints the lines for configs/settings.yaml.
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
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.services import Services  # noqa: E402
from app.settings import get_settings  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def pick(lang: str, passages: int, questions: int) -> tuple[list[dict], list[dict]]:
    corpus = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
    chosen = read_jsonl(EVAL / f"{lang}_questions.jsonl")[-questions:]
    wanted = {q["doc_id"] for q in chosen}
    for row in reversed(corpus):
        if len(wanted) >= passages:
            break
        wanted.add(row["doc_id"])
    return [row for row in corpus if row["doc_id"] in wanted], chosen


def fit(features: list[float], labels: list[int]) -> tuple[float, float]:
    model = LogisticRegression(C=100.0).fit(np.asarray(features).reshape(-1, 1), np.asarray(labels))
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    return -intercept / slope, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=400)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--depth", type=int, default=20, help="hits per question and mode to label")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kbqa-calibrate-"))
    settings = get_settings().model_copy(
        update={"data_dir": work, "embedding_model": get_settings().resolved_embedding_model}
    )
    services = Services(settings)
    dense_x, dense_y, bm25_x, bm25_y = [], [], [], []
    try:
        for lang in ("zh", "en"):
            passages, questions = pick(lang, args.passages, args.questions)
            kb = services.knowledge_bases.create(f"calibrate-{lang}")
            for p in passages:
                services.knowledge_bases.upload(kb.name, f"{p['doc_id']}.txt", io.BytesIO(p["text"].encode()))
            services.queue.wait_idle()
            embedder = services.query_embedder()
            for q in questions:
                gold = f"{q['doc_id']}.txt"
                vector = embedder.encode_query(q["question"])
                for hit in services.store.search_dense(kb.collection_name, vector, args.depth):
                    dense_x.append(hit.raw_score)
                    dense_y.append(int(hit.file_name == gold))
                for hit in services.store.search_bm25(kb.collection_name, q["question"], args.depth):
                    bm25_x.append(math.log1p(max(hit.raw_score, 0.0)))
                    bm25_y.append(int(hit.file_name == gold))
            print(f"[{lang}] {len(passages)} passages, {len(questions)} questions labelled", flush=True)
    finally:
        services.close()
        shutil.rmtree(work, ignore_errors=True)

    dense_center, dense_scale = fit(dense_x, dense_y)
    bm25_center, bm25_scale = fit(bm25_x, bm25_y)
    print(f"dense: {len(dense_x)} hits, {sum(dense_y)} gold; bm25: {len(bm25_x)} hits, {sum(bm25_y)} gold")
    print(f"score_dense_center: {dense_center:.4f}")
    print(f"score_dense_scale: {dense_scale:.2f}")
    print(f"score_bm25_center: {bm25_center:.4f}")
    print(f"score_bm25_scale: {bm25_scale:.3f}")


if __name__ == "__main__":
    main()
