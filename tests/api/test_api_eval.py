"""The retrieval evaluation through the API: background jobs, reports, chunk sizes side by side, bad input.

A small knowledge base of invented facts (one per file), real Milvus Lite and the real embedding model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.conftest import create_kb, make_settings, upload_ready

KB = "评测库"
FACTS = {
    "星河计划.md": "星河计划由林晓澜负责，总预算为三千八百七十万元，资金全部来自市科委专项拨款。",
    "青松计划.md": "青松计划的总预算为一千二百五十万元，由周明远担任首席科学家，二〇二五年结题。",
    "远航计划.md": "远航计划已完成第二阶段的海上测试，预计明年春季交付第一艘无人测量船。",
    "石屿灯塔.md": "石屿灯塔建于一八九三年，塔高三十六米，灯光射程二十二海里，是东海最早的灯塔之一。",
    "ferry.txt": "The Varnholm ferry runs twice a day in winter and every hour in summer, from pier four.",
    # Long enough for several chunks at a small chunk size.
    "银杏大道.txt": "银杏大道全长两千四百米，两侧种有一百二十棵银杏树。" * 12,
}
QUESTIONS = [
    {"question": "星河计划的总预算是多少？", "doc_id": "星河计划", "answers": ["三千八百七十万元"], "source": "A"},
    {"question": "青松计划的首席科学家是谁？", "file_name": "青松计划.md", "answer": "周明远", "source": "A"},
    {"question": "石屿灯塔的灯光射程有多远？", "answers": ["二十二海里"], "source": "B"},
    {"question": "How often does the Varnholm ferry run in winter?", "doc_id": "ferry", "source": "B"},
    {"question": "银杏大道两侧有多少棵树？", "doc_id": "银杏大道", "source": "B"},
    {"question": "火星基地的氧气储量是多少？", "doc_id": "火星基地", "source": "A"},  # no such document: a miss
]


def jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("eval"), embedding_model_dir, eval__max_questions=400, eval__max_file_mb=0.1
    )
    with TestClient(create_app(settings)) as test_client:
        create_kb(test_client, KB)
        docs = upload_ready(test_client, KB, *((name, text.encode()) for name, text in FACTS.items()))
        assert {d["status"] for d in docs} == {"ready"}
        yield test_client


def start(client: TestClient, rows: list[dict] | bytes, kb: str = KB, **form: str) -> dict:
    data = rows if isinstance(rows, bytes) else jsonl(rows)
    response = client.post(f"/api/kbs/{kb}/eval", files={"file": ("q.jsonl", data)}, data=form)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/eval/jobs/{response.json()['id']}"
    return response.json()


def finished(client: TestClient, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/eval/jobs/{job_id}").json()
        if job["status"] not in {"queued", "running"}:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_report_per_mode_with_sources_misses_and_threshold(client: TestClient) -> None:
    job = start(client, QUESTIONS)
    assert job["status"] in {"queued", "running"} and job["questions"] == len(QUESTIONS) and job["report"] is None
    job = finished(client, job["id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] is None, job
    report = job["report"]
    assert report["kb_name"] == KB and report["questions"] == 6
    assert report["judged_by"] == {"document": 5, "answer_text": 1}
    assert report["sources"] == ["A", "B"] and report["chunk_sizes"] == [500]
    assert [r["mode"] for r in report["runs"]] == ["dense", "bm25", "hybrid"]
    hybrid = report["runs"][2]
    # Five answerable questions, each about a fact only one file holds; the sixth has no document.
    assert hybrid["overall"]["recall_at_5"] == pytest.approx(5 / 6, abs=1e-4)
    assert hybrid["overall"]["recall_at_1"] == pytest.approx(5 / 6, abs=1e-4)
    assert hybrid["overall"]["mrr"] == pytest.approx(5 / 6, abs=1e-4)
    assert hybrid["by_source"]["A"]["questions"] == 3 and hybrid["by_source"]["A"]["recall_at_5"] == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert hybrid["by_source"]["B"]["recall_at_10"] == 1.0
    latency = hybrid["overall"]["latency"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"]
    assert hybrid["misses_total"] == 1
    miss = hybrid["misses"][0]
    assert miss["line"] == 6 and miss["gold_rank"] is None and miss["expected"] == {"doc_id": "火星基地"}
    assert len(miss["returned"]) == 3 and all(h["file_name"] in FACTS and not h["gold"] for h in miss["returned"])
    assert miss["returned"][0]["score"] >= miss["returned"][1]["score"] and miss["returned"][0]["snippet"]
    threshold = hybrid["threshold"]
    assert threshold["gold_hits"] >= 5 and threshold["other_hits"] > threshold["gold_hits"]
    assert 0 <= threshold["threshold"] <= 1 and threshold["gold_kept"] >= 0.8
    assert report["suggested_threshold"] == threshold
    assert report["answers"] is None


def test_chunk_sizes_side_by_side_on_a_temporary_copy(client: TestClient) -> None:
    job = finished(client, start(client, QUESTIONS[3:5], modes="hybrid,bm25", chunk_sizes="100")["id"])
    assert job["status"] == "done", job
    runs = job["report"]["runs"]
    assert [(r["chunk_size"], r["chunk_overlap"], r["mode"], r["temporary_kb"]) for r in runs] == [
        (500, 50, "hybrid", False),
        (500, 50, "bm25", False),
        (100, 10, "hybrid", True),
        (100, 10, "bm25", True),
    ]
    own, copy = runs[0], runs[2]
    assert copy["chunk_count"] > own["chunk_count"]  # 银杏大道.txt splits into several 100-character chunks
    assert copy["failed_documents"] == 0 and copy["index_seconds"] > 0
    assert copy["overall"]["recall_at_1"] == 1.0  # found by file name stem through the copies' own ids
    names = [kb["name"] for kb in client.get("/api/kbs").json()]
    assert names == [KB], "the temporary knowledge base is dropped"


def test_the_api_answers_while_an_evaluation_runs_and_a_job_can_be_cancelled(client: TestClient) -> None:
    many = [QUESTIONS[i % 5] for i in range(300)]
    job = start(client, many)
    seen_running = False
    for _ in range(200):
        state = client.get(f"/api/eval/jobs/{job['id']}").json()
        if state["status"] == "running" and state["progress"] > 0:
            seen_running = True
            found = client.post(f"/api/kbs/{KB}/search", json={"question": "石屿灯塔", "top_k": 1})
            assert found.status_code == 200 and found.json()["hits"][0]["file_name"] == "石屿灯塔.md"
            assert client.get("/health").status_code == 200
            break
        time.sleep(0.05)
    assert seen_running, state
    assert state["stage"].startswith("dense @500: ")
    cancelled = client.delete(f"/api/eval/jobs/{job['id']}")
    assert cancelled.status_code == 202
    final = finished(client, job["id"])
    assert final["status"] == "cancelled" and final["report"] is None and final["finished_at"]
    listed = client.get("/api/eval/jobs").json()
    assert listed[0]["id"] == job["id"] and all(j["report"] is None for j in listed)


def test_json_body_runs_the_same_evaluation(client: TestClient) -> None:
    body = {"questions": QUESTIONS[:2], "modes": ["dense"]}
    response = client.post(f"/api/kbs/{KB}/eval/json", json=body)
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["status"] == "done" and [r["mode"] for r in job["report"]["runs"]] == ["dense"]
    assert job["report"]["runs"][0]["overall"]["recall_at_1"] == 1.0


GOOD = jsonl(QUESTIONS[:1])


@pytest.mark.parametrize(
    ("kb", "data", "form", "status", "message"),
    [
        (KB, b"", {}, 422, "the question set is empty"),
        (KB, GOOD + b'\n{"question": "x", "doc_id": ', {}, 422, "line 2: not valid JSON"),
        (KB, b'{"doc_id": "a"}', {}, 422, 'line 1: "question" is missing or empty'),
        (KB, b'{"question": "a"}', {}, 422, 'line 1: give at least one of "doc_id"'),
        ("没有这个库", GOOD, {}, 404, "knowledge base '没有这个库' does not exist"),
        (KB, GOOD, {"modes": "dense,fuzzy"}, 422, "unknown retrieval mode 'fuzzy'; modes: dense, bm25, hybrid"),
        (KB, (b'{"question": "a", "doc_id": "b"}\n' * 401), {}, 413, "more than 400 questions"),
        (KB, b'{"question": "a", "doc_id": "b"}\n' * 3500, {}, 413, "the limit is 104857 bytes"),
        (KB, GOOD, {"chunk_sizes": "300,abc"}, 422, "chunk_sizes must be whole numbers separated by commas"),
        (KB, GOOD, {"chunk_sizes": "20"}, 422, "chunk_size must be between 50 and 8000 characters, got 20"),
        (KB, GOOD, {"chunk_sizes": "100,200,300,400,600"}, 422, "at most 4 chunk sizes per evaluation, got 5"),
        (KB, GOOD, {"chunk_sizes": "100", "chunk_overlap": "100"}, 422, "smaller than chunk_size (100), got 100"),
        (KB, GOOD, {"answer_sample": "101"}, 422, "answer_sample must be between 0 and 100, got 101"),
        (KB, b'{"question": "a", "doc_id": "b"}', {"answer_sample": "2"}, 422, "answer_sample needs questions with"),
    ],
)
def test_bad_input_is_refused_before_a_job_starts(
    client: TestClient, kb: str, data: bytes, form: dict, status: int, message: str
) -> None:
    before = len(client.get("/api/eval/jobs").json())
    response = client.post(f"/api/kbs/{kb}/eval", files={"file": ("q.jsonl", data)}, data=form)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert len(client.get("/api/eval/jobs").json()) == before


def test_missing_file_empty_kb_unknown_job_and_bad_json_body(client: TestClient) -> None:
    assert client.post(f"/api/kbs/{KB}/eval", data={"modes": "dense"}).status_code == 422
    create_kb(client, "空库")
    empty = client.post("/api/kbs/空库/eval", files={"file": ("q.jsonl", GOOD)})
    assert empty.status_code == 409 and "has no ready documents" in empty.json()["detail"]
    client.delete("/api/kbs/空库")
    unknown = client.get("/api/eval/jobs/abc123")
    assert unknown.status_code == 404 and "'abc123' does not exist" in unknown.json()["detail"]
    assert client.delete("/api/eval/jobs/abc123").status_code == 404
    bad = client.post(f"/api/kbs/{KB}/eval/json", json={"questions": [QUESTIONS[0], {"question": ""}]})
    assert bad.status_code == 422 and 'question 2: "question" is missing or empty' in bad.json()["detail"]
    none = client.post(f"/api/kbs/{KB}/eval/json", json={"questions": []})
    assert none.status_code == 422 and "the question set is empty" in none.json()["detail"]


def test_knowledge_base_chunk_size_is_chosen_at_creation_and_kept_by_rebuild(client: TestClient) -> None:
    created = client.post("/api/kbs", json={"name": "小块库", "chunk_size": 200}).json()
    assert (created["chunk_size"], created["chunk_overlap"]) == (200, 20)
    docs = upload_ready(client, "小块库", ("银杏大道.txt", FACTS["银杏大道.txt"].encode()))
    assert docs[0]["chunk_count"] >= 2  # 336 characters at 200 per chunk
    rebuilt = client.post("/api/kbs/小块库/rebuild")
    assert rebuilt.status_code == 202 and rebuilt.json()["chunk_size"] == 200
    changed = client.post("/api/kbs/小块库/rebuild", json={"chunk_size": 1000}).json()
    assert (changed["chunk_size"], changed["chunk_overlap"]) == (1000, 100)
    for body, message in [
        ({"name": "坏块1", "chunk_size": 10}, "chunk_size must be between 50 and 8000 characters, got 10"),
        ({"name": "坏块2", "chunk_size": 100, "chunk_overlap": 150}, "smaller than chunk_size (100), got 150"),
    ]:
        response = client.post("/api/kbs", json=body)
        assert response.status_code == 422 and message in response.json()["detail"]
    assert client.post("/api/kbs/小块库/rebuild", json={"chunk_overlap": -1}).status_code == 422
    assert "坏块1" not in [kb["name"] for kb in client.get("/api/kbs").json()]
    client.delete("/api/kbs/小块库")
