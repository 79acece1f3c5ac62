"""`kbqa doc upload` of a folder: files checked here first, sent several per request and several requests at once,
then indexing followed to the end on one progress bar; what was refused is listed at the end with its reason.

The server refuses a whole request when one of its files is refused (413, 415, 422), so what can be checked here
is (empty, over the upload limit, a type the server does not accept: it says which in GET /api/status), and a
batch refused anyway is sent again one file per request, so one bad file does not drop its neighbours.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from threading import Lock
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from kbqa_client import ApiError, KbqaClient
from kbqa_client.client import IDS_PER_REQUEST

BATCH_FILES = 32
BATCH_MB = 16.0
PARALLEL_REQUESTS = 3
REFUSED_STATUSES = {413, 415, 422}  # about a file of the request; anything else stops the upload
POLL_S = 1.0
FOLLOW_WINDOW = IDS_PER_REQUEST
_MULTIPART_ROOM = 64 * 1024  # per-file headers and boundaries, kept free under the server's request limit


@dataclass(frozen=True)
class ServerRules:
    """What the server accepts, from GET /api/status."""

    file_types: frozenset[str]
    max_upload_bytes: int
    max_request_bytes: int

    @classmethod
    def of(cls, status: dict[str, Any]) -> ServerRules:
        limits = status["limits"]
        upload = int(limits["max_upload_mb"] * 1024 * 1024)
        request = int(limits.get("max_request_mb", limits["max_upload_mb"]) * 1024 * 1024)
        return cls(frozenset(status["file_types"]), upload, request)


@dataclass(frozen=True)
class Refused:
    name: str
    reason: str


@dataclass
class Plan:
    """The files to send, in batches, and those refused or skipped before sending."""

    batches: list[list[Path]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # files of a folder of an unsupported type, by extension

    @property
    def file_count(self) -> int:
        return sum(len(batch) for batch in self.batches)


def expand(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files given or found in the folders, folder files), folders walked in sorted order."""
    files: list[Path] = []
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file())
            files += inside
            found += inside
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a folder")
    return files, found


def plan(paths: list[Path], rules: ServerRules, batch_files: int = BATCH_FILES, batch_mb: float = BATCH_MB) -> Plan:
    """Check each file against the server's rules and group the rest into batches bounded by count and bytes."""
    files, in_folders = expand(paths)
    from_folders = set(in_folders)
    result = Plan()
    budget = max(min(int(batch_mb * 1024 * 1024), rules.max_request_bytes - _MULTIPART_ROOM), 1)
    batch: list[Path] = []
    batch_bytes = 0
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in rules.file_types:
            if path in from_folders:
                result.skipped[suffix or "(no extension)"] += 1
            else:
                result.refused.append(Refused(path.name, f"unsupported file type {suffix or '(no extension)'!r}"))
            continue
        size = path.stat().st_size
        if reason := _size_problem(size, rules):
            result.refused.append(Refused(path.name, reason))
            continue
        if batch and (len(batch) >= batch_files or batch_bytes + size > budget):
            result.batches.append(batch)
            batch, batch_bytes = [], 0
        batch.append(path)
        batch_bytes += size + 512
    if batch:
        result.batches.append(batch)
    return result


def _size_problem(size: int, rules: ServerRules) -> str | None:
    if size == 0:
        return "empty (0 bytes)"
    if size > rules.max_upload_bytes:
        return f"larger than the server's upload limit of {rules.max_upload_bytes / 1024 / 1024:g} MB"
    return None


class RateColumn(ProgressColumn):
    """Documents finished per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} docs/s")


@dataclass
class Tally:
    """What the upload did so far; updated from the sending threads."""

    files: int
    uploaded: int = 0
    duplicates: int = 0
    doc_ids: dict[str, None] = field(default_factory=dict)  # in the order the server answered: an ordered set
    refused: list[Refused] = field(default_factory=list)
    requests: int = 0
    lock: Lock = field(default_factory=Lock)


class FolderUpload:
    def __init__(self, api: KbqaClient, kb: str, console: Console, parallel: int = PARALLEL_REQUESTS) -> None:
        self.api = api
        self.kb = kb
        self.console = console
        self.parallel = parallel

    def run(self, planned: Plan, wait: bool) -> tuple[Tally, list[dict[str, Any]]]:
        """Send every batch, then (with `wait`) follow indexing until each document is ready or failed. The
        tally, and the documents followed as they ended."""
        tally = Tally(files=planned.file_count, refused=list(planned.refused))
        with self._progress() as progress:
            task = progress.add_task("uploading", total=max(planned.file_count, 1), **_fields(tally, {}))
            with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="kbqa-upload") as pool:
                for _ in pool.map(lambda batch: self._send(batch, tally, progress, task), planned.batches):
                    pass
            if not wait or not tally.doc_ids:
                return tally, []
            progress.reset(task, total=len(tally.doc_ids), description="indexing")
            return tally, self._follow(tally, progress, task)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("uploaded {task.fields[uploaded]}/{task.fields[files]}"),
            TextColumn("ready {task.fields[ready]} failed {task.fields[failed]}"),
            TextColumn("{task.fields[chunks]} chunks"),
            RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )

    def _send(self, batch: list[Path], tally: Tally, progress: Progress, task: Any) -> None:
        try:
            outcomes = self._post(batch, tally)
        except ApiError as exc:
            if exc.status not in REFUSED_STATUSES:
                raise
            if len(batch) > 1:  # one of them is bad: find which, keep the others
                for path in batch:
                    self._send([path], tally, progress, task)
                return
            with tally.lock:
                tally.refused.append(Refused(batch[0].name, f"{exc.status}: {exc.detail_text}"))
            progress.update(task, advance=1)
            return
        with tally.lock:
            tally.uploaded += len(outcomes)
            tally.duplicates += sum(1 for o in outcomes if o.get("duplicate"))
            tally.doc_ids.update(dict.fromkeys(o["document"]["id"] for o in outcomes))
        progress.update(task, advance=len(batch), **_fields(tally, {}))

    def _post(self, batch: list[Path], tally: Tally) -> list[dict[str, Any]]:
        with ExitStack() as files:
            handles = [(path.name, files.enter_context(path.open("rb"))) for path in batch]
            with tally.lock:
                tally.requests += 1
            return self.api.upload_many(self.kb, handles)

    def _follow(self, tally: Tally, progress: Progress, task: Any) -> list[dict[str, Any]]:
        """Poll the oldest documents not yet ready or failed, by id, in one request of at most FOLLOW_WINDOW: the
        server indexes them in about the order they were sent, so the count moves as it works, while a poll costs
        the same for 100 files as for 100,000 (polling every pending document cost the server's indexing 10-25%
        of the CPU at 3,000 files). Every document is asked about before the end."""
        finished: dict[str, dict[str, Any]] = {}
        while True:
            pending = list(islice((d for d in tally.doc_ids if d not in finished), FOLLOW_WINDOW))
            docs = self.api.documents_by_id(self.kb, pending)
            for doc_id in set(pending) - docs.keys():  # deleted meanwhile
                finished[doc_id] = {"id": doc_id, "status": "deleted", "chunk_count": 0}
            finished.update({i: d for i, d in docs.items() if d["status"] in {"ready", "failed"}})
            progress.update(task, completed=len(finished), **_fields(tally, finished))
            if len(finished) >= len(tally.doc_ids):
                return list(finished.values())
            time.sleep(POLL_S)



def _fields(tally: Tally, finished: dict[str, dict[str, Any]]) -> dict[str, Any]:
    statuses = Counter(d["status"] for d in finished.values())
    chunks = sum(d.get("chunk_count") or 0 for d in finished.values())
    return {
        "uploaded": tally.uploaded,
        "files": tally.files,
        "ready": statuses["ready"],
        "failed": statuses["failed"],
        "chunks": chunks,
    }


def report(console: Console, planned: Plan, tally: Tally, finished: list[dict[str, Any]], seconds: float) -> None:
    """One summary line, then each failed document, refused file and skipped type with its reason."""
    statuses = Counter(d["status"] for d in finished)
    chunks = sum(d.get("chunk_count") or 0 for d in finished)
    requests = f"{tally.requests} request" + ("s" if tally.requests != 1 else "")
    line = f"{tally.uploaded} of {tally.files + len(planned.refused)} files uploaded ({requests})"
    if tally.duplicates:
        line += f" ({tally.duplicates} already there)"
    if finished:
        line += f"; {statuses['ready']} ready, {statuses['failed']} failed, {chunks} chunks"
    console.print(f"{line} in {seconds:.1f} s", highlight=False)
    for doc in finished:
        if doc["status"] == "failed":
            console.print(f"[red]{doc['filename']}: failed ({doc['error']})[/red]", highlight=False)
    for refused in tally.refused:
        console.print(f"[red]{refused.name}: refused, {refused.reason}[/red]", highlight=False)
    for suffix, count in sorted(planned.skipped.items()):
        console.print(f"skipped {count} file(s) of unsupported type {suffix!r} in the folders", highlight=False)
