"""Hybrid recall@5 on real CMRC 2018 / DRCD questions over a few hundred passages of ../shared/eval.

The subset: 60 CMRC and 60 DRCD questions, their gold passages, and every other passage of the same DRCD
articles (the hard distractors: many paragraphs of one article compete), about 400 passages in all.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SHARED, create_kb, upload_ready

EVAL = SHARED / "eval"
QUESTIONS_PER_SOURCE = 60
# The floor: with multilingual-e5-small, a dense-only pipeline reaches recall@5 0.99 on CMRC and ~0.91 on DRCD
# (0.95 on the two together); plain BM25 reaches 0.98 on the full set. Hybrid measured 0.992 on this subset
# (0.983 on its DRCD half); the floors allow a few misses below that (4 of 120, 3 of 60) and stay above what
# dense retrieval alone reaches on DRCD, so losing either half of the hybrid fails the test.
RECALL_AT_5_FLOOR = 0.96
DRCD_RECALL_AT_5_FLOOR = 0.95

pytestmark = pytest.mark.skipif(not EVAL.exists(), reason=f"{EVAL} is absent (eval sets live beside the project)")


def _read(name: str) -> list[dict]:
    with (EVAL / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def subset() -> tuple[list[dict], list[dict]]:
    corpus = {row["doc_id"]: row for row in _read("zh_corpus.jsonl")}
    by_source: dict[str, list[dict]] = defaultdict(list)
    for question in _read("zh_questions.jsonl"):
        source = "cmrc" if question["source"].startswith("cmrc") else "drcd"
        if len(by_source[source]) < QUESTIONS_PER_SOURCE:
            by_source[source].append(question)
    questions = by_source["cmrc"] + by_source["drcd"]
    gold_articles = {corpus[q["doc_id"]].get("article_id") for q in by_source["drcd"]}
    wanted = {q["doc_id"] for q in questions}
    wanted |= {
        doc_id
        for doc_id, row in corpus.items()
        if row.get("article_id") in gold_articles and row["source"].startswith("drcd")
    }
    return [corpus[d] for d in sorted(wanted)], questions


@pytest.fixture(scope="module")
def kb(client: TestClient, subset: tuple[list[dict], list[dict]]) -> str:
    passages, _ = subset
    create_kb(client, "eval-zh")
    for start in range(0, len(passages), 50):
        batch = passages[start : start + 50]
        docs = upload_ready(client, "eval-zh", *((f"{p['doc_id']}.txt", p["text"].encode()) for p in batch))
        assert all(d["status"] == "ready" for d in docs)
    return "eval-zh"


def _recall_at_5(client: TestClient, kb: str, questions: list[dict], mode: str) -> float:
    found = 0
    for question in questions:
        body = {"question": question["question"], "top_k": 5, "mode": mode}
        hits = client.post(f"/api/kbs/{kb}/search", json=body).json()["hits"]
        found += any(h["file_name"] == f"{question['doc_id']}.txt" for h in hits)
    return found / len(questions)


def test_subset_size(subset: tuple[list[dict], list[dict]]) -> None:
    passages, questions = subset
    assert len(questions) == 2 * QUESTIONS_PER_SOURCE
    assert 200 <= len(passages) <= 700


def test_hybrid_recall_at_5_meets_the_floor(client: TestClient, kb: str, subset: tuple[list[dict], list[dict]]) -> None:
    _, questions = subset
    drcd = [q for q in questions if q["source"].startswith("drcd")]
    overall = _recall_at_5(client, kb, questions, "hybrid")
    drcd_recall = _recall_at_5(client, kb, drcd, "hybrid")
    print(f"hybrid recall@5: overall {overall:.3f}, DRCD {drcd_recall:.3f}")
    assert overall >= RECALL_AT_5_FLOOR
    assert drcd_recall >= DRCD_RECALL_AT_5_FLOOR
