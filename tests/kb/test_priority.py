"""Indexing runs at a lower priority than searches and answers (ingest.niceness), on the real services: the
ingestion thread and the passage embedder's ONNX Runtime threads are lowered, the caller's threads are not."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from app.kb.priority import lower_current_thread, run_lowered
from app.services import Services
from app.storage.catalog import DocumentStatus
from tests.conftest import make_settings

NICENESS = 7  # not the default, so the passage embedder is loaded here (embedders are shared per settings)


def niceness(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def thread_ids() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def test_indexing_threads_run_lowered_and_the_callers_do_not(tmp_path: Path, embedding_model_dir: Path) -> None:
    me = threading.get_native_id()
    assert niceness(me) == 0
    services = Services(make_settings(tmp_path, embedding_model_dir, ingest__niceness=NICENESS))
    try:
        before = thread_ids()
        services.passage_embedder()
        started = thread_ids() - before
        assert started, "loading the passage embedder started no thread (ONNX Runtime's pool)"
        assert {niceness(tid) for tid in started & thread_ids()} == {NICENESS}
        assert niceness(services.queue._thread.native_id) == NICENESS
        assert niceness(me) == 0

        kbs = services.knowledge_bases
        kbs.create("低优先")
        outcome = kbs.upload("低优先", "a.txt", io.BytesIO("索引在后台以较低的优先级运行。".encode()))
        assert services.queue.wait_idle(120)
        assert kbs.get_document("低优先", outcome.document.id).status is DocumentStatus.ready
        assert services.search.search("低优先", "优先级").hits
        assert niceness(me) == 0
    finally:
        services.close()


def test_lowering_never_raises_a_thread_and_errors_reach_the_caller() -> None:
    def lowered_twice() -> int:
        lower_current_thread(12)
        lower_current_thread(5)  # asks for less: keeps 12
        return niceness(threading.get_native_id())

    assert run_lowered(3, lowered_twice) == 12
    assert run_lowered(0, lambda: niceness(threading.get_native_id())) == 0  # 0: the caller's own thread

    def broken() -> None:
        raise ValueError("build failed")

    with pytest.raises(ValueError, match="build failed"):
        run_lowered(4, broken)
    assert niceness(threading.get_native_id()) == 0
