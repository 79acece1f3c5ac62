"""Rendered page images kept on disk under <data_dir>/cache/pages, within `preview.cache_mb`: when one added takes
the cache past its bound, the least recently shown are removed until the rest fit (a hit refreshes its file's time).
Names are made here from server-made ids and digests, never from a file's name."""

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


LOW_WATER = 0.9


class PageCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._trim_lock = threading.Lock()
        # What the folder holds as far as this instance knows: None until the first scan; writes add to it, so a
        # write scans the folder only when the cache may have passed its bound. Another instance's removals make
        # it an overestimate, which costs at most one early scan.
        self._known_bytes: int | None = None

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
        with self._trim_lock:
            if self._known_bytes is not None:
                self._known_bytes += len(data)
            over = self._known_bytes is None or self._known_bytes > self.max_bytes
        if over:
            self.trim()

    def trim(self) -> None:
        """Remove the least recently used images until the rest fit within LOW_WATER of max_bytes: the room left
        lets the next writes pass without another scan of the folder."""
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
                if total <= self.max_bytes * LOW_WATER:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                total -= size
            self._known_bytes = total

    def forget(self, doc_ids: list[str]) -> None:
        """Remove the images of deleted documents (keys start with the document's id)."""
        prefixes = tuple(f"{doc_id}-" for doc_id in doc_ids)
        if not prefixes or not self.folder.is_dir():
            return
        with os.scandir(self.folder) as found:
            doomed = [entry.path for entry in found if entry.name.startswith(prefixes)]
        for path in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @property
    def size_bytes(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.folder.iterdir() if not path.name.startswith("."))
