"""Background indexing: file -> sections -> chunks -> embeddings (batched) -> Milvus.

One worker thread runs the queue, so the API keeps answering while large uploads are indexed and their
progress is visible in the catalog. Several API processes may share one catalog and one Milvus: a process claims a
document in the catalog (a conditional UPDATE: owner and lease) before it queues or indexes it, renews the leases
of the documents it holds, and takes over only documents whose owner's lease ran out (a process that died). Each
start of a document's indexing is counted first, so a document that keeps killing its process (a crash, the
out-of-memory killer) is failed with that reason once it used up its attempts, instead of being resumed forever.
Small documents waiting in the queue are embedded together, so a folder of short files keeps the model's batches
full. A document's vectors become visible when it is marked ready; any failure removes whatever part of it reached
Milvus and records the reason. What searches leave out meanwhile, and why they need not read the ready documents to
know it: app/kb/visibility.py.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import ColumnElement, and_, func, or_, select, update

from app.kb import visibility
from app.kb.documents import Chunk, DocumentLoadError, ReadReport
from app.kb.loaders import LoadLimits, OnPage, load_document
from app.kb.priority import lower_current_thread
from app.kb.splitter import split_document
from app.storage.catalog import Catalog, Document, DocumentStatus, KnowledgeBase, utcnow
from app.storage.diskspace import DiskFull, is_disk_full
from app.storage.vector_store import ChunkRow, MilvusStore

log = logging.getLogger(__name__)
INSERT_BATCH = 256
# At most GROUP_DOCUMENTS queued documents are taken at once; their chunks are embedded (and then stored) in
# batches of about GROUP_CHUNKS.
GROUP_DOCUMENTS = 256
GROUP_CHUNKS = 256


class PassageEncoder(Protocol):
    """What indexing needs of the embedding model (retrieval's Embedder is one), so this layer imports none."""

    def encode_passages(
        self, texts: Sequence[str], on_progress: Callable[[np.ndarray], Collection[int] | None] | None = None
    ) -> np.ndarray:
        """Unit vectors of `texts`; `on_progress(indices)` after each step may return indices no longer wanted."""
        ...


@dataclass
class _Job:
    doc_id: str
    kb_id: str
    collection: str
    filename: str
    path: Path
    chunk_size: int
    chunk_overlap: int
    replaces_id: str | None
    pages: int | None = None
    chunks: list[Chunk] = field(default_factory=list)
    embedded: int = 0
    cancelled: bool = False
    report: ReadReport | None = None
    pages_done: int | None = None
    pages_total: int | None = None

    def read_fields(self) -> dict[str, object]:
        """How the document was read, as its catalog columns."""
        report = self.report or ReadReport()
        confidence = report.ocr_confidence
        return {
            "pages": self.pages,
            "text_pages": report.text_pages,
            "ocr_pages": report.ocr_pages,
            "ocr_confidence": None if confidence is None else round(confidence, 4),
            "empty_pages": ",".join(map(str, report.empty_pages)),
            "ocr_pictures": report.ocr_pictures,
            "skipped_pictures": report.skipped_pictures,
            "pages_done": self.pages_done,
            "pages_total": self.pages_total,
        }


class ReadingCancelled(Exception):
    """Raised between two pages of a document being read once it was deleted, to stop its OCR."""


# Cleared when indexing starts: what an earlier reading of the document recorded.
_READ_COLUMNS = (
    "text_pages",
    "ocr_pages",
    "ocr_confidence",
    "empty_pages",
    "ocr_pictures",
    "skipped_pictures",
    "pages_done",
    "pages_total",
)


def new_owner_id() -> str:
    """Names this process in document claims: host, pid and a random part (pids repeat across restarts)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _failure_reason(exc: Exception) -> str:
    reason = str(exc) if isinstance(exc, DocumentLoadError) else f"{type(exc).__name__}: {exc}"
    return reason.replace("\x00", "\\x00")[:2000]  # PostgreSQL cannot store NUL in text


def _interrupted_reason(attempts: int) -> str:
    return (
        f"索引中断了 {attempts} 次（进程崩溃或超出内存），不再重试；检查文件后重新上传可再试。 "
        f"(Indexing was interrupted {attempts} times: the process crashed or ran out of memory. It is not retried "
        "again; check the file and upload it again to retry.)"
    )


class DocumentIndexer:
    def __init__(
        self,
        catalog: Catalog,
        store: MilvusStore,
        embedder: Callable[[], PassageEncoder],
        files_dir: Path,
        lease_s: float = 60.0,
        limits: LoadLimits | None = None,
        max_attempts: int = 2,
        progress_interval_s: float = 1.0,
    ) -> None:
        """`progress_interval_s`: how often at most the pages read so far of a document are recorded."""
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.files_dir = files_dir
        self.lease = timedelta(seconds=lease_s)
        self.limits = limits or LoadLimits.from_settings()
        self.max_attempts = max_attempts
        self.progress_interval_s = progress_interval_s
        self.owner = new_owner_id()
        self._cancelled: set[str] = set()  # deleted while queued or being indexed here
        # Failures the catalog could not take when they happened (its disk was full), retried by the heartbeat.
        self._unrecorded: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()

    # -- claims -------------------------------------------------------------------------------------------------------

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        """Unfinished documents that are unclaimed, claimed by this process, or whose owner's lease ran out."""
        return and_(
            Document.status.in_([DocumentStatus.queued, DocumentStatus.processing]),
            or_(Document.claimed_by.is_(None), Document.claimed_by == self.owner, Document.lease_until < now),
        )

    def claim(self, doc_ids: list[str], **fields: object) -> list[str]:
        """Claim the documents no live process holds (one conditional UPDATE, so of two processes racing for a
        document exactly one wins); the ids claimed, in the order given."""
        if not doc_ids:
            return []
        now = utcnow()
        with self.catalog.session() as session:
            session.execute(
                update(Document)
                .where(Document.id.in_(doc_ids), self._claimable(now))
                .values(claimed_by=self.owner, lease_until=now + self.lease, **fields)
                .execution_options(synchronize_session=False)
            )
            mine = set(
                session.scalars(select(Document.id).where(Document.id.in_(doc_ids), Document.claimed_by == self.owner))
            )
        return [d for d in doc_ids if d in mine]

    def renew(self, doc_ids: list[str]) -> None:
        """Extend the leases of documents this process holds."""
        if not doc_ids:
            return
        with self.catalog.session() as session:
            session.execute(
                update(Document)
                .where(Document.id.in_(doc_ids), Document.claimed_by == self.owner)
                .values(lease_until=utcnow() + self.lease)
                .execution_options(synchronize_session=False)
            )

    def claimable_ids(self) -> list[str]:
        """Unfinished documents no live process holds: left by a process that died, or never claimed."""
        with self.catalog.session() as session:
            return list(
                session.scalars(
                    select(Document.id)
                    .where(self._claimable(utcnow()))
                    .where(or_(Document.claimed_by.is_(None), Document.claimed_by != self.owner))
                    .order_by(Document.created_at)
                )
            )

    def give_up_interrupted(self, doc_ids: list[str]) -> list[str]:
        """Fail the documents whose indexing already started max_attempts times without finishing (each time its
        process died), instead of starting them again; the others, in the order given. A document a live process
        claimed meanwhile is left to it."""
        if not doc_ids:
            return []
        given_up: list[tuple[str, str]] = []
        with self.catalog.session() as session:
            spent = session.execute(
                select(Document.id, Document.index_attempts, KnowledgeBase.collection_name)
                .join(KnowledgeBase, Document.kb_id == KnowledgeBase.id)
                .where(Document.id.in_(doc_ids), Document.index_attempts >= self.max_attempts)
            ).all()
            for doc_id, attempts, collection in spent:
                failed = session.execute(
                    update(Document)
                    .where(Document.id == doc_id, self._claimable(utcnow()))
                    .values(
                        status=DocumentStatus.failed,
                        error=_interrupted_reason(attempts),
                        claimed_by=None,
                        lease_until=None,
                        index_attempts=0,
                    )
                    .execution_options(synchronize_session=False)
                )
                if failed.rowcount:
                    visibility.hold(session, collection, [doc_id])
                    given_up.append((collection, doc_id))
                    log.warning("document %s: indexing was interrupted %d times; marked failed", doc_id, attempts)
        self.remove_vectors(given_up)  # what an interrupted run stored
        dropped = {doc_id for _, doc_id in given_up}
        return [d for d in doc_ids if d not in dropped]

    def cancel(self, doc_ids: Iterable[str]) -> None:
        """Stop indexing documents that were deleted: the work on them is dropped after the embedding step under
        way (at most PROGRESS_STEP chunks), and the rest of their group goes on."""
        with self._lock:
            self._cancelled.update(doc_ids)

    def is_cancelled(self, doc_id: str) -> bool:
        with self._lock:
            return doc_id in self._cancelled

    def index_group(self, doc_ids: list[str]) -> None:
        """Load and split documents and embed their chunks in shared batches of about GROUP_CHUNKS. Each batch
        is stored by a second thread while the next one is embedded, so Milvus' insert time is hidden."""
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-store") as storer:
                pending: list[_Job] = []
                for job in self._start(doc_ids):
                    if not self._drop_cancelled([job]) and self._load(job):
                        pending.append(job)
                    if sum(len(j.chunks) for j in pending) >= GROUP_CHUNKS:
                        self._embed_then_store(pending, storer)
                        pending = []
                if pending:
                    self._embed_then_store(pending, storer)
        finally:
            with self._lock:
                self._cancelled.difference_update(doc_ids)

    def _embed_then_store(self, jobs: list[_Job], storer: ThreadPoolExecutor) -> None:
        self._update_many({job.doc_id: {**job.read_fields(), "chunk_count": len(job.chunks)} for job in jobs})
        try:
            vectors = self._embed(jobs)
        except Exception as exc:
            log.exception("embedding failed")
            self._fail([job for job in jobs if not job.cancelled], exc)
            return
        storer.submit(self._store, jobs, vectors)

    def _drop_cancelled(self, jobs: list[_Job], gone: Iterable[str] = ()) -> list[_Job]:
        """Mark the jobs of documents cancelled here, or found `gone` from the catalog (deleted through another
        process), as cancelled, and remove whatever of them reached Milvus; the jobs newly cancelled."""
        with self._lock:
            cancelled = self._cancelled.union(gone)
        dropped = [job for job in jobs if not job.cancelled and job.doc_id in cancelled]
        for job in dropped:
            job.cancelled = True
            log.info(
                "indexing of %s (%s) cancelled: the document was deleted; %d of its %d chunks had been embedded",
                job.doc_id,
                job.filename,
                job.embedded,
                len(job.chunks),
            )
        self.remove_vectors([(job.collection, job.doc_id) for job in dropped])
        return dropped

    def _store(self, jobs: list[_Job], vectors: np.ndarray) -> None:
        self._drop_cancelled(jobs)
        by_collection: dict[str, list[tuple[_Job, np.ndarray]]] = defaultdict(list)
        offset = 0
        for job in jobs:
            if not job.cancelled:
                by_collection[job.collection].append((job, vectors[offset : offset + len(job.chunks)]))
            offset += len(job.chunks)
        for collection, items in by_collection.items():
            group = [job for job, _ in items]
            try:
                self._insert(collection, items)
            except Exception as exc:
                log.exception("storing %d documents in %s failed", len(group), collection)
                self._fail(group, exc)
                continue
            self._finish(group)

    def _load(self, job: _Job) -> bool:
        try:
            if not job.path.exists():
                raise DocumentLoadError(f"the stored file {job.filename!r} is missing; upload it again")
            loaded = load_document(job.path, job.filename, self.limits, on_page=self._page_progress(job))
            job.pages, job.report = loaded.pages, loaded.report
            job.chunks = split_document(loaded, chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap)
            if not job.chunks:
                raise DocumentLoadError(f"{job.filename!r} has no text to index")
        except ReadingCancelled:
            job.cancelled = True
            log.info(
                "reading %s (%s) stopped after page %s of %s: the document was deleted",
                job.doc_id,
                job.filename,
                job.pages_done,
                job.pages_total,
            )
            return False
        except Exception as exc:
            if not isinstance(exc, DocumentLoadError):
                log.exception("loading %s failed", job.filename)
            self._fail([job], exc)
            return False
        return True

    def _page_progress(self, job: _Job) -> OnPage:
        """`on_page` for reading one document: between two pages it stops the reading (ReadingCancelled) once the
        document was deleted here, or through another process (found when recording); it records the pages read
        at most every progress_interval_s, and the last page too when it recorded any before, so that a fast read
        costs the catalog nothing and a slow one (OCR) shows its progress."""
        last_recorded, recorded = time.monotonic(), False

        def on_page(done: int, total: int) -> None:
            nonlocal last_recorded, recorded
            job.pages_done, job.pages_total = done, total
            if self.is_cancelled(job.doc_id):
                raise ReadingCancelled
            now = time.monotonic()
            if now - last_recorded < self.progress_interval_s and not (recorded and done == total):
                return
            last_recorded, recorded = now, True
            if not self._update_many({job.doc_id: {"pages_done": done, "pages_total": total}}):
                raise ReadingCancelled

        return on_page

    def _start(self, doc_ids: list[str]) -> list[_Job]:
        """Claim the documents and mark them processing, then read what indexing needs to know of them. Documents
        another process took over meanwhile (this one stalled past its lease) are left to it. The start is counted
        (committed before any work) so that a start that kills the process counts too."""
        attempts = func.coalesce(Document.index_attempts, 0) + 1
        claimed = self.claim(
            doc_ids,
            status=DocumentStatus.processing,
            error=None,
            chunks_embedded=0,
            index_attempts=attempts,
            **dict.fromkeys(_READ_COLUMNS),
        )
        jobs = []
        with self.catalog.session() as session:
            for doc_id in claimed:
                doc = session.get(Document, doc_id)
                if doc is None:
                    continue
                kb = doc.knowledge_base
                jobs.append(
                    _Job(
                        doc_id=doc.id,
                        kb_id=kb.id,
                        collection=kb.collection_name,
                        filename=doc.filename,
                        path=self.files_dir / doc.stored_path,
                        chunk_size=kb.chunk_size,
                        chunk_overlap=kb.chunk_overlap,
                        replaces_id=doc.replaces_id,
                    )
                )
        return jobs

    def _embed(self, jobs: list[_Job]) -> np.ndarray:
        """The vectors of all the jobs' chunks, in order. After each step, progress is recorded, and the chunks of
        documents deleted meanwhile are skipped (their jobs marked cancelled, their rows left undefined)."""
        texts = [chunk.text for job in jobs for chunk in job.chunks]
        ends = np.cumsum([len(job.chunks) for job in jobs])

        def on_progress(indices: np.ndarray) -> list[int]:
            owners = np.searchsorted(ends, indices, side="right")
            for i, count in zip(*np.unique(owners, return_counts=True), strict=True):
                jobs[i].embedded += int(count)
            touched = {jobs[i].doc_id: {"chunks_embedded": jobs[i].embedded} for i in np.unique(owners)}
            gone = set(touched) - self._update_many(touched)
            dropped = {job.doc_id for job in self._drop_cancelled(jobs, gone)}
            self.store.check_disk()  # a full disk fails the group now, not after embedding all of it
            spans = [(ends[i] - len(job.chunks), ends[i]) for i, job in enumerate(jobs) if job.doc_id in dropped]
            return [t for start, end in spans for t in range(start, end)]

        return self.embedder().encode_passages(texts, on_progress=on_progress)

    def _insert(self, collection: str, items: list[tuple[_Job, np.ndarray]]) -> None:
        """One delete (leftovers of an interrupted run) and batched inserts for all documents of a group."""
        self.store.delete_documents(collection, [job.doc_id for job, _ in items])
        rows = [_row(job, chunk, vectors[i]) for job, vectors in items for i, chunk in enumerate(job.chunks)]
        for start in range(0, len(rows), INSERT_BATCH):
            self.store.insert(collection, rows[start : start + INSERT_BATCH])

    def _finish(self, jobs: list[_Job]) -> None:
        """Mark the documents ready and retire the ones they replace (held from searches in the same transaction
        until their vectors are gone); drop the vectors of any deleted meanwhile."""
        orphans: list[tuple[str, str]] = []
        retired: list[tuple[str, str, str, bool]] = []
        with self.catalog.session() as session:
            now = utcnow()
            for job in jobs:
                doc = session.get(Document, job.doc_id)
                if doc is None:
                    orphans.append((job.collection, job.doc_id))
                    continue
                if doc.claimed_by != self.owner:
                    log.warning("document %s was taken over by %s; leaving it to that process", doc.id, doc.claimed_by)
                    continue
                doc.status, doc.indexed_at, doc.chunks_embedded = DocumentStatus.ready, now, doc.chunk_count
                doc.claimed_by, doc.lease_until, doc.index_attempts = None, None, 0
                old = session.get(Document, job.replaces_id) if job.replaces_id else None
                if old is not None and old.kb_id == job.kb_id:
                    retired.append((job.collection, old.id, old.stored_path, visibility.claim_is_live(old, now)))
                    visibility.hold(session, job.collection, [old.id])
                    session.delete(old)
        for _, _, stored_path, _ in retired:
            (self.files_dir / stored_path).unlink(missing_ok=True)
        self.remove_vectors(orphans + [(c, old_id) for c, old_id, _, live in retired if not live])
        self.remove_vectors([(c, old_id) for c, old_id, _, live in retired if live], release=False)

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        self.remove_vectors([(job.collection, job.doc_id) for job in jobs])
        self.record_failures([job.doc_id for job in jobs], exc)

    def record_failures(self, doc_ids: list[str], exc: Exception) -> None:
        """Mark the documents this process holds, unfinished, failed with the reason. If the catalog cannot take
        it (its disk is full), it is kept and recorded by `record_pending_failures` once there is room, so no
        document is left 'processing' with nothing working on it."""
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            exc = DiskFull(self.files_dir)
        failed = {
            "status": DocumentStatus.failed,
            "error": _failure_reason(exc),
            "claimed_by": None,
            "lease_until": None,
            "index_attempts": 0,
        }
        with self._lock:
            self._unrecorded.update({doc_id: failed for doc_id in doc_ids})
        try:
            self.record_pending_failures()
        except Exception as record_exc:
            if not is_disk_full(record_exc):
                with self._lock:
                    for doc_id in doc_ids:
                        self._unrecorded.pop(doc_id, None)
                raise
            log.warning("the disk is full: the failure of %s is recorded once there is room", doc_ids)

    def record_pending_failures(self) -> None:
        with self._lock:
            pending = dict(self._unrecorded)
        if not pending:
            return
        with self.catalog.session() as session:
            for doc_id, fields in pending.items():
                session.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.claimed_by == self.owner)
                    .where(Document.status.in_([DocumentStatus.queued, DocumentStatus.processing]))
                    .values(**fields)
                    .execution_options(synchronize_session=False)
                )
        with self._lock:
            for doc_id in pending:
                self._unrecorded.pop(doc_id, None)

    def remove_vectors(self, targets: list[tuple[str, str]], release: bool = True) -> None:
        """Delete the vectors of these (collection, document) and release their holds (see app/kb/visibility.py),
        unless `release` is False: an indexer may still insert them, and it or the heartbeat releases them later.
        Those Milvus would not delete are held instead, so searches keep leaving them out and the heartbeat
        tries again."""
        if not targets:
            return
        by_collection: dict[str, list[str]] = defaultdict(list)
        for collection, doc_id in targets:
            by_collection[collection].append(doc_id)
        removed: list[str] = []
        kept: dict[str, list[str]] = {}
        for collection, doc_ids in by_collection.items():
            try:
                self.store.delete_documents(collection, doc_ids)
                removed += doc_ids
            except Exception:
                log.exception("could not remove the vectors of %s; searches leave them out until they are", doc_ids)
                kept[collection] = doc_ids
        if not kept and not (release and removed):
            return
        try:
            with self.catalog.session() as session:
                for collection, doc_ids in kept.items():
                    visibility.hold(session, collection, doc_ids)
                if release:
                    visibility.release(session, removed)
        except Exception as exc:  # the catalog refuses writes (its disk is full, say)
            log.warning("could not record which vectors of %s are gone: %s", [d for _, d in targets], exc)

    def sweep_holds(self) -> None:
        """Finish the vector deletions left to whoever comes later: holds older than a lease."""
        with self.catalog.session() as session:
            stale = visibility.stale_holds(session, self.lease)
        self.remove_vectors(stale)

    def _update_many(self, changes: dict[str, dict[str, object]]) -> set[str]:
        """One transaction; rows deleted meanwhile are skipped. The ids that still exist."""
        if not changes:
            return set()
        with self.catalog.session() as session:
            existing = set(session.scalars(select(Document.id).where(Document.id.in_(list(changes)))))
            rows = [{"id": doc_id, **fields} for doc_id, fields in changes.items() if doc_id in existing]
            by_keys: dict[tuple[str, ...], list[dict[str, object]]] = defaultdict(list)
            for row in rows:
                by_keys[tuple(sorted(row))].append(row)
            for same_keys in by_keys.values():
                session.execute(update(Document), same_keys)
        return existing


def _row(job: _Job, chunk: Chunk, vector: np.ndarray) -> ChunkRow:
    return ChunkRow(**asdict(chunk), doc_id=job.doc_id, file_name=job.filename, vector=vector)


class IngestionQueue:
    """A single background worker; `submit` returns at once. A second thread renews the leases of the documents
    this process holds, and now and then takes over the documents of processes that died."""

    def __init__(self, indexer: DocumentIndexer, niceness: int = 0) -> None:
        """`niceness`: the ingestion thread's (app/kb/priority.py), inherited by the threads and processes it starts."""
        self.indexer = indexer
        self.niceness = niceness
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="kbqa-ingest", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._held: dict[str, int] = {}  # submitted, not yet done: how many times it is in the queue
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="kbqa-ingest-lease", daemon=True)
        self._thread.start()
        self._heartbeat.start()

    def submit(self, doc_id: str) -> bool:
        """Queue a document unless another live process holds it (then that one indexes it); True if queued."""
        return bool(self.submit_many([doc_id]))

    def submit_many(self, doc_ids: list[str]) -> int:
        """`submit` for several documents with one claim; how many were queued."""
        return len(self._submit_claimed(self.indexer.claim(doc_ids)))

    def _submit_claimed(self, doc_ids: list[str]) -> list[str]:
        for doc_id in doc_ids:
            with self._held_lock:
                self._held[doc_id] = self._held.get(doc_id, 0) + 1
            self._idle.clear()
            self._queue.put(doc_id)
        return doc_ids

    def resume_unfinished(self) -> int:
        """Queue the documents that are unfinished and held by no live process: left queued or half-indexed by a
        run that died (their partial vectors are replaced), unless their indexing was interrupted too often.
        Documents other running processes hold stay theirs."""
        with self._held_lock:
            held = set(self._held)
        orphans = [d for d in self.indexer.claimable_ids() if d not in held]
        return self.submit_many(self.indexer.give_up_interrupted(orphans))

    def _beat(self) -> None:
        interval = max(self.indexer.lease.total_seconds() / 4, 0.2)
        sweeps_every = 4  # look for abandoned documents once per lease
        beats, disk_full = 0, False
        while not self._stopping.wait(interval):
            beats += 1
            try:
                self.indexer.record_pending_failures()
                with self._held_lock:
                    held = list(self._held)
                self.indexer.renew(held)
                if beats % sweeps_every == 0:
                    self.indexer.sweep_holds()
                    if self.resume_unfinished():
                        log.info("took over unfinished documents of a process that stopped")
                disk_full = False
            except Exception as exc:
                if not is_disk_full(exc):
                    log.exception("renewing document leases failed")
                elif not disk_full:  # once, not every beat
                    log.warning("the disk is full: document leases are not renewed until there is room")
                disk_full = is_disk_full(exc)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._heartbeat.join(timeout=30)

    def _next_group(self) -> list[str | None]:
        group = [self._queue.get()]
        while group[-1] is not None and len(group) < GROUP_DOCUMENTS:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return group

    def _work(self) -> None:
        lower_current_thread(self.niceness)
        while True:
            group = self._next_group()
            doc_ids = [d for d in group if d is not None]
            try:
                if doc_ids:
                    self.indexer.index_group(doc_ids)
            except Exception as exc:
                log.exception("ingestion worker error on %s", doc_ids)
                self._fail_unfinished(doc_ids, exc)
            finally:
                self._release(doc_ids)
                if self._queue.empty():
                    self._idle.set()
            if None in group:
                return

    def _fail_unfinished(self, doc_ids: list[str], exc: Exception) -> None:
        """A group that broke off (its catalog's disk filled up, say) leaves none of its documents 'processing'."""
        try:
            self.indexer.record_failures(doc_ids, exc)
        except Exception:
            log.exception("could not record the failure of %s", doc_ids)

    def cancel(self, doc_ids: list[str]) -> None:
        """Stop indexing deleted documents in this process (see DocumentIndexer.cancel)."""
        with self._held_lock:
            held = [doc_id for doc_id in doc_ids if doc_id in self._held]
        self.indexer.cancel(held)

    def _release(self, doc_ids: list[str]) -> None:
        with self._held_lock:
            for doc_id in doc_ids:
                left = self._held.get(doc_id, 0) - 1
                if left > 0:
                    self._held[doc_id] = left
                else:
                    self._held.pop(doc_id, None)
