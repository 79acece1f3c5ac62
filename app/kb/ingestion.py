"""Background indexing: file -> sections -> chunks -> embeddings (batched) -> Milvus.

One worker thread runs the queue, so the API keeps answering while large uploads are indexed and their
progress is visible in the catalog. A document's vectors become visible all at once when it is ready; any
failure removes whatever part of it reached Milvus and records the reason.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from app.kb.catalog import Catalog, Document, DocumentStatus, utcnow
from app.kb.documents import Chunk, DocumentLoadError
from app.kb.loaders import load_document
from app.kb.splitter import split_document
from app.kb.vector_store import ChunkRow, MilvusStore
from app.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)
INSERT_BATCH = 256


@dataclass(frozen=True)
class _Job:
    doc_id: str
    kb_id: str
    collection: str
    filename: str
    path: Path
    chunk_size: int
    chunk_overlap: int
    replaces_id: str | None


class DocumentIndexer:
    def __init__(self, catalog: Catalog, store: MilvusStore, embedder: Callable[[], Embedder], files_dir: Path) -> None:
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.files_dir = files_dir

    def index(self, doc_id: str) -> None:
        job = self._start(doc_id)
        if job is None:
            return
        try:
            self._run(job)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DocumentLoadError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, DocumentLoadError):
                log.exception("indexing %s failed", job.filename)
            self._discard_vectors(job)
            self._update(doc_id, status=DocumentStatus.failed, error=reason[:2000])

    def _start(self, doc_id: str) -> _Job | None:
        with self.catalog.session() as session:
            doc = session.get(Document, doc_id)
            if doc is None:
                return None
            doc.status, doc.error, doc.chunks_embedded = DocumentStatus.processing, None, 0
            kb = doc.knowledge_base
            return _Job(
                doc_id=doc.id,
                kb_id=kb.id,
                collection=kb.collection_name,
                filename=doc.filename,
                path=self.files_dir / doc.stored_path,
                chunk_size=kb.chunk_size,
                chunk_overlap=kb.chunk_overlap,
                replaces_id=doc.replaces_id,
            )

    def _run(self, job: _Job) -> None:
        if not job.path.exists():
            raise DocumentLoadError(f"the stored file {job.filename!r} is missing; upload it again")
        loaded = load_document(job.path, job.filename)
        chunks = split_document(loaded, chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap)
        if not chunks:
            raise DocumentLoadError(f"{job.filename!r} has no text to index")
        self._update(job.doc_id, pages=loaded.pages, chunk_count=len(chunks))
        vectors = self.embedder().encode_passages(
            [c.text for c in chunks], on_batch=lambda done: self._update(job.doc_id, chunks_embedded=done)
        )
        self.store.delete_documents(job.collection, [job.doc_id])
        rows = [self._row(job, chunk, vectors[i]) for i, chunk in enumerate(chunks)]
        for start in range(0, len(rows), INSERT_BATCH):
            self.store.insert(job.collection, rows[start : start + INSERT_BATCH])
        if not self._finish(job):
            self._discard_vectors(job)

    @staticmethod
    def _row(job: _Job, chunk: Chunk, vector) -> ChunkRow:  # type: ignore[no-untyped-def]
        return ChunkRow(
            doc_id=job.doc_id,
            chunk_index=chunk.index,
            text=chunk.text,
            file_name=job.filename,
            page=chunk.page,
            heading=chunk.heading,
            vector=vector,
        )

    def _finish(self, job: _Job) -> bool:
        """Mark ready and retire the document this one replaces; False if it was deleted meanwhile."""
        with self.catalog.session() as session:
            doc = session.get(Document, job.doc_id)
            if doc is None:
                return False
            doc.status, doc.indexed_at, doc.chunks_embedded = DocumentStatus.ready, utcnow(), doc.chunk_count
            old = session.get(Document, job.replaces_id) if job.replaces_id else None
            if old is not None and old.kb_id == job.kb_id:
                session.delete(old)
        if job.replaces_id and old is not None:
            self.store.delete_documents(job.collection, [job.replaces_id])
            shutil.rmtree(self.files_dir / job.kb_id / job.replaces_id, ignore_errors=True)
        return True

    def _discard_vectors(self, job: _Job) -> None:
        try:
            self.store.delete_documents(job.collection, [job.doc_id])
        except Exception:
            log.exception("could not remove partial vectors of %s", job.doc_id)

    def _update(self, doc_id: str, **fields: object) -> None:
        with self.catalog.session() as session:
            doc = session.get(Document, doc_id)
            if doc is not None:
                for key, value in fields.items():
                    setattr(doc, key, value)


class IngestionQueue:
    """A single background worker; `submit` returns at once."""

    def __init__(self, indexer: DocumentIndexer) -> None:
        self.indexer = indexer
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="kbqa-ingest", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._thread.start()

    def submit(self, doc_id: str) -> None:
        self._idle.clear()
        self._queue.put(doc_id)

    def resume_unfinished(self) -> int:
        """Requeue documents a previous run left queued or half-indexed (their partial vectors are replaced)."""
        with self.indexer.catalog.session() as session:
            ids = session.scalars(
                select(Document.id)
                .where(Document.status.in_([DocumentStatus.queued, DocumentStatus.processing]))
                .order_by(Document.created_at)
            ).all()
        for doc_id in ids:
            self.submit(doc_id)
        return len(ids)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            doc_id = self._queue.get()
            if doc_id is None:
                return
            try:
                self.indexer.index(doc_id)
            except Exception:
                log.exception("ingestion worker error on %s", doc_id)
            finally:
                if self._queue.empty():
                    self._idle.set()
