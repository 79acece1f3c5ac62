"""A full disk: recognised in the errors of every store, and writes refused before a store would lose them.

Milvus Lite 2.5.1 on a full disk answers "internal error" to a new collection, and accepts inserts it then loses
(counted while the process runs, gone after a restart), so writes to a Milvus Lite file are refused while the data
folder has less than `min_free_disk_mb` free.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from app.errors import InsufficientStorage

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# SQLITE_FULL, and the wal-index (<db>-shm) that could not be sized when a database is opened on a full disk.
_SQLITE_FULL_NAMES = {"SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"}


class DiskFull(InsufficientStorage):
    def __init__(self, folder: Path, why: str = "no space left") -> None:
        super().__init__(
            f"{folder} 所在磁盘已满，请释放空间后重试 (the disk holding {folder} is full: {why}; free some space and "
            "try again)"
        )
        self.folder = folder


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the disk is full: ENOSPC / EDQUOT from the OS, or
    SQLite's "database or disk is full"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFull):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorname", "") in _SQLITE_FULL_NAMES:
            return True
        original = getattr(current, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        current = original if isinstance(original, BaseException) else current.__cause__ or current.__context__
    return False


class DiskSpace:
    """The free space of the disk holding the data folder."""

    def __init__(self, folder: Path, min_free_mb: float) -> None:
        self.folder = folder
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.folder).free

    def check(self) -> None:
        """DiskFull unless the data folder has at least `min_free_mb` free."""
        free = self.free_bytes()
        if free < self.min_free_bytes:
            mb = 1024 * 1024
            limit = f"storage.min_free_disk_mb = {self.min_free_bytes / mb:g}"
            raise DiskFull(self.folder, f"{free / mb:.1f} MB free, less than {limit}")
