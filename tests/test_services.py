"""The services without HTTP: what the API, the CLI and later the chat modes all call."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from app.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from app.retrieval.retriever import RetrievalMode
from app.retrieval.scoring import ScoreCalibration
from app.services import Services
from app.storage.catalog import DocumentStatus
from tests.conftest import make_settings, wait_until


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, backend_settings: dict[str, str]
) -> Iterator[Services]:
    built = Services(make_settings(tmp_path_factory.mktemp("services"), embedding_model_dir, **backend_settings))
    yield built
    built.close()


def test_ingest_and_search_through_the_services(services: Services) -> None:
    kbs = services.knowledge_bases
    kbs.create("服务层")
    outcome = kbs.upload("服务层", "a.txt", io.BytesIO("服务层测试：雪豹生活在海拔三千米以上的山区。".encode()))
    assert outcome.document.status is DocumentStatus.queued and not outcome.duplicate
    assert services.queue.wait_idle(120)
    doc = kbs.get_document("服务层", outcome.document.id)
    assert doc.status is DocumentStatus.ready and doc.chunk_count == 1
    for mode in RetrievalMode:
        result = services.search.search("服务层", "雪豹生活在哪里", top_k=3, mode=mode)
        assert result.hits[0].doc_id == doc.id and 0 <= result.hits[0].score <= 1
    kbs.delete_document("服务层", doc.id)
    assert services.search.search("服务层", "雪豹", mode=RetrievalMode.dense).hits == []


def test_service_errors_are_typed(services: Services) -> None:
    kbs = services.knowledge_bases
    kbs.create("错误")
    with pytest.raises(Conflict):
        kbs.create("错误")
    with pytest.raises(NotFound):
        kbs.get("不存在")
    with pytest.raises(UnsupportedMediaType, match=r"\.pdf"):
        kbs.upload("错误", "x.zip", io.BytesIO(b"PK"))
    with pytest.raises(InvalidInput, match="empty"):
        kbs.upload("错误", "x.txt", io.BytesIO(b""))
    with pytest.raises(InvalidInput, match="top_k"):
        services.search.search("错误", "问题", top_k=0)
    with pytest.raises(InvalidInput, match="mode"):
        services.search.search("错误", "问题", mode="fuzzy")
    with pytest.raises(NotFound):
        services.search.search("不存在", "问题")


def test_a_calibration_file_sets_the_score_scale(services: Services, tmp_path: Path) -> None:
    """`score_calibration_file` replaces the bundled fit: a curve centred higher scores the same hit lower."""
    services.knowledge_bases.create("标定")
    services.knowledge_bases.upload("标定", "a.txt", io.BytesIO("标定测试：灰鹤在湿地越冬。".encode()))
    assert services.queue.wait_idle(120)
    bundled = ScoreCalibration.load()
    shifted = tmp_path / "calibration.json"
    shifted.write_text(json.dumps(asdict(bundled) | {"dense_center": bundled.dense_center + 0.1}), encoding="utf-8")
    recalibrated = Services(services.settings.with_changes(retrieval__score_calibration_file=shifted))
    try:
        question = {"kb_name": "标定", "question": "灰鹤在哪里越冬", "mode": RetrievalMode.dense}
        before = services.search.search(**question).hits[0]
        after = recalibrated.search.search(**question).hits[0]
    finally:
        recalibrated.close()
    assert after.chunk_id == before.chunk_id
    assert after.score < before.score
    cosine = bundled.dense_center + math.log(before.score / (1 - before.score)) / bundled.dense_scale
    assert after.score == pytest.approx(ScoreCalibration.load(shifted).dense(cosine), abs=2e-4)  # 4 decimals


def test_knowledge_base_counts_come_from_the_catalog_per_status(services: Services) -> None:
    kbs = services.knowledge_bases
    for name in ("计数甲", "计数乙", "计数空"):
        kbs.create(name)
    good = [kbs.upload("计数甲", f"{i}.txt", io.BytesIO(f"第{i}篇：计数测试。".encode() * (40 * i))) for i in (1, 2)]
    broken = kbs.upload("计数甲", "坏.pdf", io.BytesIO(b"%PDF-1.7\n" + b"\x00not a pdf" * 50))
    other = kbs.upload("计数乙", "c.txt", io.BytesIO("另一个知识库。".encode()))
    assert services.queue.wait_idle(120)
    assert kbs.get_document("计数甲", broken.document.id).status is DocumentStatus.failed
    ready_chunks = sum(kbs.get_document("计数甲", o.document.id).chunk_count for o in good)
    assert ready_chunks >= 3
    listed = {info.name: info for info in kbs.list()}
    counts = {name: (listed[name].document_count, listed[name].ready_count, listed[name].chunk_count)
              for name in ("计数甲", "计数乙", "计数空")}
    other_chunks = kbs.get_document("计数乙", other.document.id).chunk_count
    assert counts == {"计数甲": (3, 2, ready_chunks), "计数乙": (1, 1, other_chunks), "计数空": (0, 0, 0)}
    assert kbs.get("计数甲") == listed["计数甲"]


def test_the_api_loads_the_passage_model_at_start_not_at_the_first_upload(
    tmp_path: Path, embedding_model_dir: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.api.main import create_app

    # batch_size 7: a model instance no other test has loaded in this process (instances are shared per settings)
    settings = make_settings(tmp_path, embedding_model_dir, embedding__batch_size=7)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        wait_until(lambda: services.passage_embedder.loaded, "the passage model loaded without any upload")
