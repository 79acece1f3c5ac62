"""The evaluation's end-to-end answer check against the real LLM stack (FastChat + llama.cpp worker, Qwen2.5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.llm.stack import LLMStack
from tests.api.test_api_eval import finished
from tests.conftest import answering_settings, create_kb, free_port, make_settings, upload_ready

KB = "答案库"
FILES = [
    ("星河计划预算.md", "星河计划的总预算为三千八百七十万元，资金全部来自市科委专项拨款。"),
    ("星河计划负责人.md", "星河计划由林晓澜负责，她在二〇二三年接手这个项目。"),
    ("远航计划进度.md", "远航计划已完成第二阶段的测试，预计明年春季交付。"),
]
QUESTIONS = [
    {"question": "星河计划的总预算是多少？", "doc_id": "星河计划预算", "answers": ["三千八百七十万", "3870"]},
    {"question": "星河计划由谁负责？", "doc_id": "星河计划负责人", "answer": "林晓澜"},
    {"question": "火星基地的氧气储量是多少？", "doc_id": "火星基地", "answer": "七百吨"},  # in no document
    {"question": "远航计划什么时候交付？", "doc_id": "远航计划进度"},  # no answer text: not sampled
]


def _jsonl() -> bytes:
    return "\n".join(json.dumps(q, ensure_ascii=False) for q in QUESTIONS).encode()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, llm_stack: LLMStack
) -> Iterator[TestClient]:
    # A threshold of 0.5 (where a hit is as likely an answer as not): the Mars question finds nothing above it, so
    # the product answers with its no-hit refusal.
    settings = answering_settings(
        tmp_path_factory.mktemp("eval-answers"),
        embedding_model_dir,
        llm_stack,
        max_tokens=80,
        retrieval__default_score_threshold=0.5,
    )
    with TestClient(create_app(settings)) as test_client:
        create_kb(test_client, KB)
        assert {d["status"] for d in upload_ready(test_client, KB, *((n, t.encode()) for n, t in FILES))} == {"ready"}
        yield test_client


def test_answers_contain_the_expected_text_and_refusals_are_counted(client: TestClient) -> None:
    response = client.post(
        f"/api/kbs/{KB}/eval", files={"file": ("q.jsonl", _jsonl())}, data={"modes": "hybrid", "answer_sample": "5"}
    )
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["status"] == "done", job
    check = job["report"]["answers"]
    assert check["error"] is None and check["sample"] == 3 and check["checked"] == 3  # the three with answer text
    budget, leader, mars = check["items"]
    assert [budget["line"], leader["line"], mars["line"]] == [1, 2, 3]
    assert budget["contains_answer"] and budget["gold_retrieved"] and not budget["refused"], budget
    assert leader["contains_answer"] and leader["gold_retrieved"] and not leader["refused"], leader
    assert mars["refused"] and not mars["gold_retrieved"] and not mars["contains_answer"], mars
    assert "根据已知信息无法回答该问题" in mars["answer"]
    assert (check["contains_answer"], check["refused"], check["gold_retrieved"]) == (2, 1, 2)
    assert check["refused_with_gold_retrieved"] == 0 and check["contains_answer_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert "根据已知信息无法回答该问题" in check["refusal_detection"]
    assert job["report"]["runs"][0]["overall"]["recall_at_1"] == 0.75  # retrieval figures come with it


def test_a_down_llm_ends_the_answer_check_with_its_reason_and_keeps_retrieval(
    tmp_path: Path, embedding_model_dir: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(tmp_path, embedding_model_dir, llm__base_url=down)
    with TestClient(create_app(settings)) as offline:
        create_kb(offline, KB)
        upload_ready(offline, KB, *((n, t.encode()) for n, t in FILES))
        response = offline.post(
            f"/api/kbs/{KB}/eval", files={"file": ("q.jsonl", _jsonl())}, data={"answer_sample": "2"}
        )
        job = finished(offline, response.json()["id"])
    assert job["status"] == "done", job
    check = job["report"]["answers"]
    assert check["checked"] == 0 and "question on line 1" in check["error"] and down in check["error"]
    assert len(job["report"]["runs"]) == 3
