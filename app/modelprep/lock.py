"""One preparation at a time per models folder: `scripts/run.sh`, `scripts/test.sh` and the test fixtures may all
prepare the same models at once, and two exports into one staging folder break each other."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".prepare.lock"


@contextmanager
def preparing(models_dir: Path) -> Iterator[None]:
    """Hold the models folder's preparation lock (an flock, released by the kernel if the process dies)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
