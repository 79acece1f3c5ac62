"""Indexing runs below searches and answers: on a busy CPU the kernel gives its threads less time.

Linux keeps a niceness per thread, and a thread starts with its creator's: the ingestion thread lowers itself, so
what it starts (the storing threads, OCR's tesseract processes) runs lower too, and the passage embedder is loaded
from a lowered thread, so ONNX Runtime's pool threads, created with the session, do as well. A process may lower
its threads but not raise them back (that needs privileges), so nothing here is undone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def lower_current_thread(niceness: int) -> None:
    """At least `niceness` for the calling thread (never less than it has)."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))


def run_lowered(niceness: int, build: Callable[[], T]) -> T:
    """`build()` on a thread of its own lowered to `niceness`: threads it starts keep that niceness."""
    if niceness <= 0:
        return build()
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            lower_current_thread(niceness)
            result.append(build())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="kbqa-lowered-start")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
