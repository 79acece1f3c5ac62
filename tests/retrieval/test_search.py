"""知识库测试 (search): the three modes, the shared 0-1 score scale, thresholds and bad questions."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import create_kb, upload_ready

PASSAGES = {
    "reservoir.txt": "紫藤湖水库的设计蓄水量为三千二百万立方米，于一九八七年建成，主要用于灌溉和防洪。",
    "bridge.txt": "The Quillfeather bridge was painted teal in 1931 by the harbour board of Port Elsie.",
    "tea.txt": "云雾山出产的毛尖茶以清明前采摘的嫩芽为上品，每斤售价约八百元。",
    "train.txt": "The night train from Varnholm to Osterby leaves at 22:40 and arrives at 06:15.",
    "budget.txt": "2024年区财政一般公共预算支出为一百二十三亿元，其中教育支出占百分之十八。",
}
MODES = ["dense", "bm25", "hybrid"]
_PLACES = ["东港", "西山", "南湖", "北岭", "青石镇", "白沙村", "Ashford", "Brindle", "Corvale", "Dunmore"]
_THINGS = ["图书馆", "游泳馆", "菜市场", "公交站", "体育场", "town hall", "museum", "harbour", "bakery", "library"]


def filler_passages() -> dict[str, str]:
    """Unrelated notices, so BM25's document frequencies look like a real knowledge base's (with five
    documents every term is common and even perfect keyword matches score low)."""
    notices = {}
    for i, (place, thing) in enumerate((p, t) for p in _PLACES for t in _THINGS):
        if any("a" <= ch <= "z" for ch in place + thing):
            day, month = i % 28 + 1, i % 12 + 1
            text = f"Notice {i}: the {thing} of {place} will close for repairs from day {day} of month {month}."
        else:
            text = f"第{i}号通知：{place}的{thing}将于{i % 12 + 1}月{i % 28 + 1}日起闭馆维修，请市民提前安排。"
        notices[f"notice-{i}.txt"] = text
    return notices


@pytest.fixture(scope="module")
def kb(client: TestClient) -> str:
    create_kb(client, "检索测试")
    corpus = {**PASSAGES, **filler_passages()}
    docs = upload_ready(client, "检索测试", *((name, text.encode()) for name, text in corpus.items()))
    assert all(d["status"] == "ready" for d in docs)
    return "检索测试"


def _search(client: TestClient, kb: str, question: str, **extra: object) -> dict:
    response = client.post(f"/api/kbs/{kb}/search", json={"question": question, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("紫藤湖水库的蓄水量是多少", "reservoir.txt"),
        ("When was the Quillfeather bridge painted?", "bridge.txt"),
        ("2024年教育支出占预算的比例", "budget.txt"),
        ("night train Varnholm departure time", "train.txt"),
    ],
)
def test_each_mode_finds_the_right_passage(
    client: TestClient, kb: str, mode: str, question: str, expected: str
) -> None:
    result = _search(client, kb, question, mode=mode, top_k=3)
    assert result["mode"] == mode
    assert result["hits"][0]["file_name"] == expected
    hit = result["hits"][0]
    assert hit["page"] is None and hit["chunk_index"] == 0 and hit["text"] == PASSAGES[expected]


@pytest.mark.parametrize("mode", MODES)
def test_scores_are_on_a_0_1_scale_higher_is_better(client: TestClient, kb: str, mode: str) -> None:
    hits = _search(client, kb, "云雾山毛尖茶的价格", mode=mode, top_k=5)["hits"]
    scores = [h["score"] for h in hits]
    assert all(0.0 <= s <= 1.0 for s in scores)
    if mode != "hybrid" or client.app.state.services.settings.retrieval.hybrid_fusion == "calibrated":  # type: ignore[attr-defined]
        assert scores == sorted(scores, reverse=True)
    assert hits[0]["file_name"] == "tea.txt"


@pytest.mark.parametrize("mode", MODES)
def test_identical_text_scores_near_the_top_of_the_scale(client: TestClient, kb: str, mode: str) -> None:
    text = PASSAGES["budget.txt"]
    hit = _search(client, kb, text, mode=mode, top_k=1)["hits"][0]
    assert hit["text"] == text
    assert hit["score"] >= 0.9


@pytest.mark.parametrize("mode", MODES)
def test_unrelated_question_scores_low_so_one_threshold_works(client: TestClient, kb: str, mode: str) -> None:
    hits = _search(client, kb, "如何给猫咪剪指甲？", mode=mode, top_k=5)["hits"]
    assert all(h["score"] < 0.5 for h in hits)
    assert _search(client, kb, "如何给猫咪剪指甲？", mode=mode, top_k=5, score_threshold=0.5)["hits"] == []
    kept = _search(client, kb, "紫藤湖水库的蓄水量是多少", mode=mode, top_k=5, score_threshold=0.5)["hits"]
    assert [h["file_name"] for h in kept][:1] == ["reservoir.txt"]


def test_threshold_filters_everything_below_it(client: TestClient, kb: str) -> None:
    all_hits = _search(client, kb, "bridge painted teal", top_k=5)["hits"]
    cut = all_hits[1]["score"]
    kept = _search(client, kb, "bridge painted teal", top_k=5, score_threshold=cut)["hits"]
    assert kept and all(h["score"] >= cut for h in kept)
    assert len(kept) < len(all_hits)


def test_timings_and_component_scores_are_reported(client: TestClient, kb: str) -> None:
    result = _search(client, kb, "night train", mode="hybrid")
    assert {"embed", "dense_search", "bm25_search", "total"} <= set(result["timings_ms"])
    hit = result["hits"][0]
    assert hit["dense_score"] is not None and hit["bm25_score"] is not None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"question": ""}, "empty"),
        ({"question": "   \n "}, "empty"),
        ({"question": "问" * 1001}, "limit is 1000"),
        ({"question": "ok", "top_k": 0}, "top_k"),
        ({"question": "ok", "top_k": 101}, "top_k"),
        ({"question": "ok", "score_threshold": 1.5}, "score_threshold"),
        ({"question": "ok", "score_threshold": -0.1}, "score_threshold"),
    ],
)
def test_bad_questions_are_422(client: TestClient, kb: str, body: dict, fragment: str) -> None:
    response = client.post(f"/api/kbs/{kb}/search", json=body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_unknown_mode_and_missing_question_are_422(client: TestClient, kb: str) -> None:
    assert client.post(f"/api/kbs/{kb}/search", json={"question": "x", "mode": "magic"}).status_code == 422
    assert client.post(f"/api/kbs/{kb}/search", json={"top_k": 3}).status_code == 422


@pytest.mark.parametrize("doc_id", ['" or doc_id != "', "0 || 1 == 1", "abc", "0123456789abcdef0123456789abcdeg"])
def test_filter_injection_through_ids_changes_nothing(client: TestClient, kb: str, doc_id: str) -> None:
    store = client.app.state.services.store  # type: ignore[attr-defined]
    collection = client.get(f"/api/kbs/{kb}").json()["collection_name"]
    before = store.count(collection)
    assert client.delete(f"/api/kbs/{kb}/documents/{doc_id}").status_code == 404
    assert client.get(f"/api/kbs/{kb}/documents/{doc_id}/chunks").status_code == 404
    with pytest.raises(ValueError, match="not an internal id"):
        store.delete_documents(collection, [doc_id])
    assert store.count(collection) == before


def test_bm25_hits_come_with_their_stored_dense_vectors(client: TestClient, kb: str) -> None:
    """Hybrid scores a keyword hit outside the dense candidates on the dense scale with the vector the BM25 search
    returned (a query by id for it scanned every id of the collection)."""
    store = client.app.state.services.store  # type: ignore[attr-defined]
    collection = client.get(f"/api/kbs/{kb}").json()["collection_name"]
    question = "library closed for repairs"
    hits, vectors = store.search_bm25_with_vectors(collection, question, 20)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in store.search_bm25(collection, question, 20)]
    assert len(hits) >= 5 and set(vectors) == {h.chunk_id for h in hits}
    ids = ", ".join(f'"{h.chunk_id}"' for h in hits)
    rows = store.client.query(collection, filter=f"id in [{ids}]", output_fields=["id", "dense"])
    assert len(rows) == len(hits)
    for row in rows:
        np.testing.assert_allclose(vectors[row["id"]], np.asarray(row["dense"], dtype=np.float32))
        assert abs(float(np.linalg.norm(vectors[row["id"]])) - 1) < 1e-3
