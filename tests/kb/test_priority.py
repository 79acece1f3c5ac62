"""Indexing runs at a lower priority than searches and answers (ingest.niceness), on the real services and both
int8 runtimes: the CPU time of encoding passages is spent on lowered threads, that of a query on the caller's.
OpenVINO shares one pool of threads among all the models of a process, with the niceness of the thread that first
needed it, so this is measured where the work lands, in a fresh process as `kbqa serve` is (another test here may
have built an embedder directly, at niceness 0)."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.kb.priority import lower_current_thread, run_lowered
from app.services import Services
from app.storage.catalog import DocumentStatus
from tests.conftest import make_settings

NICENESS = 7  # not the default, so the embedders are loaded here (embedders are shared per settings)
# Without the lowering, a passage batch spends about half of its CPU time on threads at niceness 0 (the pool's
# workers beside the caller on 2 cores, more on more), and a query on OpenVINO's lowered pool about half as well.
MOST = 0.8


def niceness(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def cpu_ticks() -> dict[int, int]:
    """CPU time (user + system, in clock ticks) each thread of this process has used so far."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile (either, by when it ended)
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def lowered_share(work: Callable[[], object]) -> float:
    """The share of the CPU time `work` made this process spend that ran on lowered threads."""
    before = cpu_ticks()
    work()
    spent = {tid: ticks - before.get(tid, 0) for tid, ticks in cpu_ticks().items()}
    total = sum(spent.values())
    assert total > 0, "the work used no measurable CPU time"
    return sum(ticks for tid, ticks in spent.items() if niceness(tid) > 0) / total


def on_lowered_thread(work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        def target() -> None:
            lower_current_thread(NICENESS)  # as the ingestion thread does
            work()

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    return run


def lowered_shares(data_dir: str, model_dir: str, backend: str) -> tuple[float, float]:
    """The lowered shares of encoding passages on a lowered thread and of queries on this one, as the services
    of a fresh process do them."""
    settings = make_settings(Path(data_dir), Path(model_dir), ingest__niceness=NICENESS, embedding__backend=backend)
    services = Services(settings)
    try:
        passages = [f"第{i}段：索引在后台以较低的优先级运行，搜索和回答优先使用处理器。" * 12 for i in range(48)]
        query_embedder = services.query_embedder()  # first, as when a search comes before any upload
        passage_embedder = services.passage_embedder()
        passages_share = lowered_share(on_lowered_thread(lambda: passage_embedder.encode_passages(passages)))
        questions = [f"第{i}个问题：索引以什么优先级运行？" for i in range(60)]
        return passages_share, lowered_share(lambda: [query_embedder.encode_query(q) for q in questions])
    finally:
        services.close()


@pytest.mark.parametrize("backend", ["openvino-int8", "onnx-int8"])
def test_indexing_threads_run_lowered_and_the_callers_do_not(
    tmp_path: Path, embedding_model_dir: Path, backend: str
) -> None:
    with multiprocessing.get_context("spawn").Pool(1) as fresh:
        passages, queries = fresh.apply(lowered_shares, (str(tmp_path / "fresh"), str(embedding_model_dir), backend))
    assert passages >= MOST
    assert queries <= 1 - MOST

    me = threading.get_native_id()
    assert niceness(me) == 0
    services = Services(make_settings(tmp_path, embedding_model_dir, ingest__niceness=NICENESS))
    try:
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
