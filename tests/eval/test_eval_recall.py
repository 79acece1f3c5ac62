"""Hybrid recall on real CMRC 2018 / DRCD questions over a few hundred passages of ../shared/eval, measured by
the product's own evaluation (POST /api/kbs/{kb}/eval/json, app/eval).

The subset: 60 CMRC and 60 DRCD questions, their gold passages, and every other passage of the same DRCD
articles (the hard distractors: many paragraphs of one article compete), about 400 passages in all.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

from tests.api.test_api_eval import finished
from tests.conftest import SHARED, create_kb, upload_ready

EVAL = SHARED / "eval"
QUESTIONS_PER_SOURCE = 60
# The floor: with multilingual-e5-small, a dense-only pipeline reaches recall@5 0.99 on CMRC and ~0.91 on DRCD
# (0.95 on the two together); plain BM25 reaches 0.98 on the full set. Hybrid measured 0.992 on this subset
# (0.983 on its DRCD half); the floors allow a few misses below that (4 of 120, 3 of 60) and stay above what
# dense retrieval alone reaches on DRCD, so losing either half of the hybrid fails the test.
RECALL_AT_5_FLOOR = 0.96
DRCD_RECALL_AT_5_FLOOR = 0.95
# Hybrid recall@1 on the DRCD half measured 0.933 (56 of 60) on Milvus Lite + SQLite and 0.917 (55 of 60) on the
# Milvus server + PostgreSQL backend (2026-11-24); the floor allows one more miss than the lower of the two.
DRCD_RECALL_AT_1_FLOOR = 0.90

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


def _evaluate(client: TestClient, kb: str, questions: list[dict]) -> dict:
    """Hybrid retrieval through the evaluation API: a background job, polled until its report is ready."""
    rows = [{"question": q["question"], "doc_id": q["doc_id"], "source": q["source"]} for q in questions]
    response = client.post(f"/api/kbs/{kb}/eval/json", json={"questions": rows, "modes": ["hybrid"]})
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["status"] == "done", job
    return job["report"]["runs"][0]


def test_subset_size(subset: tuple[list[dict], list[dict]]) -> None:
    passages, questions = subset
    assert len(questions) == 2 * QUESTIONS_PER_SOURCE
    assert 200 <= len(passages) <= 700


def test_hybrid_recall_meets_the_floors(client: TestClient, kb: str, subset: tuple[list[dict], list[dict]]) -> None:
    _, questions = subset
    run = _evaluate(client, kb, questions)
    drcd = next(m for source, m in run["by_source"].items() if source.startswith("drcd"))
    overall = run["overall"]
    print(
        f"hybrid recall@5: overall {overall['recall_at_5']:.3f}, DRCD {drcd['recall_at_5']:.3f}; "
        f"DRCD recall@1 {drcd['recall_at_1']:.3f}"
    )
    assert overall["questions"] == 2 * QUESTIONS_PER_SOURCE and drcd["questions"] == QUESTIONS_PER_SOURCE
    assert overall["recall_at_5"] >= RECALL_AT_5_FLOOR
    assert drcd["recall_at_5"] >= DRCD_RECALL_AT_5_FLOOR
    assert drcd["recall_at_1"] >= DRCD_RECALL_AT_1_FLOOR
    assert run["misses_total"] == round((1 - overall["recall_at_5"]) * overall["questions"])
