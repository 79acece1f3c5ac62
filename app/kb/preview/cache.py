"""Rendered page images kept on disk under <data_dir>/cache/pages, within `preview_cache_mb`: each time one is
added, the least recently shown are removed until the rest fit (a hit refreshes its file's time). Names are made
here from server-made ids and digests, never from a file's name."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path

from app.settings import Settings

MB = 1024 * 1024


def page_cache(settings: Settings) -> PageCache:
    return PageCache(settings.storage.data_dir / "cache" / "pages", int(settings.preview.cache_mb * MB))


class PageCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._trim_lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        path = self.folder / key
        try:
            data = path.read_bytes()
            os.utime(path)
        except FileNotFoundError:  # never rendered, or removed by a trim meanwhile
            return None
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{uuid.uuid4().hex}.part"
        partial.write_bytes(data)
        os.replace(partial, self.folder / key)  # readers see the whole file or none
        self.trim()

    def trim(self) -> None:
        """Remove the least recently used images until the rest fit within max_bytes."""
        with self._trim_lock:
            entries = []
            with os.scandir(self.folder) as found:
                for entry in found:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_file() and not entry.name.startswith("."):
                            stat = entry.stat()
                            entries.append((stat.st_mtime_ns, stat.st_size, entry.path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                total -= size

    def forget(self, doc_ids: list[str]) -> None:
        """Remove the images of deleted documents (keys start with the document's id)."""
        if not self.folder.is_dir():
            return
        for doc_id in doc_ids:
            for path in self.folder.glob(f"{doc_id}-*"):
                path.unlink(missing_ok=True)

    @property
    def size_bytes(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.folder.iterdir() if not path.name.startswith("."))
