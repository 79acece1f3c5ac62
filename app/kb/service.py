"""Knowledge bases and their documents: create, list, upload, delete, rebuild, inspect chunks."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import (
    Conflict,
    DocumentNotFound,
    InvalidInput,
    KnowledgeBaseNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.kb import visibility
from app.kb.ingestion import IngestionQueue
from app.kb.loaders import SUPPORTED_EXTENSIONS, unsupported_message
from app.kb.names import (
    TEMPORARY_PREFIX,
    collection_name_for,
    file_extension,
    normalize_kb_name,
    sanitize_filename,
    validate_kb_name,
)
from app.kb.preview.cache import page_cache
from app.kb.views import ChunkInfo, DocumentInfo, KnowledgeBaseInfo, UploadOutcome
from app.settings import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, Settings
from app.storage.catalog import (
    Catalog,
    Document,
    DocumentCounts,
    DocumentStatus,
    KnowledgeBase,
    document_counts,
    documents_of,
    kb_by_name,
    utcnow,
)
from app.storage.diskspace import DiskSpace
from app.storage.vector_store import MilvusStore

_COPY_BLOCK = 1024 * 1024


class Staged(NamedTuple):
    """An uploaded file copied to the staging folder, checked and hashed, not yet stored."""

    filename: str
    path: Path
    sha256: str
    size: int


class StoredDocument(NamedTuple):
    """A document as the catalog has it, where its uploaded file lies and its knowledge base's collection."""

    info: DocumentInfo
    path: Path
    collection: str


class KnowledgeBaseService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: MilvusStore,
        queue: IngestionQueue,
        embedding_dim: int,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.queue = queue
        self.embedding_dim = embedding_dim
        self.disk = DiskSpace(settings.storage.data_dir, settings.storage.min_free_disk_mb)
        self.page_cache = page_cache(settings)

    # -- knowledge bases ------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        description: str = "",
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        temporary: bool = False,
    ) -> KnowledgeBaseInfo:
        """`chunk_size` / `chunk_overlap` (characters) are set at creation (settings give the defaults) and change
        only with a rebuild that is given new ones.
        `temporary`: an evaluation's copy, named with TEMPORARY_PREFIX and left out of `list`."""
        name = validate_kb_name(name, self.settings.ingest.max_kb_name_chars, temporary)
        chunk_size, chunk_overlap = self.chunking(chunk_size, chunk_overlap)
        self.disk.check()
        try:
            kb = self._insert_kb(name, description, chunk_size, chunk_overlap)
        except IntegrityError:  # another API process created the same name between our check and our insert
            raise Conflict(f"knowledge base {name!r} already exists") from None
        try:
            self.store.create_collection(kb.collection_name, self.embedding_dim)
        except Exception:  # e.g. the disk filled up meanwhile: no knowledge base without its collection
            with self.catalog.session() as session:
                session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
            raise
        return KnowledgeBaseInfo.of(kb, DocumentCounts())

    def _insert_kb(self, name: str, description: str, chunk_size: int, chunk_overlap: int) -> KnowledgeBase:
        with self.catalog.session() as session:
            if kb_by_name(session, name):
                raise Conflict(f"knowledge base {name!r} already exists")
            kb = KnowledgeBase(
                name=name,
                description=description.strip(),
                embedding_model=self.settings.resolved_embedding_model,
                embedding_dim=self.embedding_dim,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
            )
            kb.id = uuid.uuid4().hex
            kb.collection_name = collection_name_for(kb.id)
            session.add(kb)
        return kb

    def list(self) -> list[KnowledgeBaseInfo]:
        with self.catalog.session() as session:
            visible = ~KnowledgeBase.name.startswith(TEMPORARY_PREFIX, autoescape=True)
            kbs = session.scalars(select(KnowledgeBase).where(visible).order_by(KnowledgeBase.created_at)).all()
            counts = document_counts(session, [kb.id for kb in kbs])
            return [KnowledgeBaseInfo.of(kb, counts.get(kb.id, DocumentCounts())) for kb in kbs]

    def get(self, name: str) -> KnowledgeBaseInfo:
        with self.catalog.session() as session:
            kb = self._kb(session, name)
            return KnowledgeBaseInfo.of(kb, document_counts(session, [kb.id]).get(kb.id, DocumentCounts()))

    def require(self, name: str) -> None:
        """NotFound unless the knowledge base exists (without counting its documents, as `get` does)."""
        with self.catalog.session() as session:
            self._kb(session, name)

    def delete(self, name: str) -> None:
        with self.catalog.session() as session:
            kb = self._kb(session, name)
            kb_id, collection = kb.id, kb.collection_name
            doc_ids = list(session.scalars(select(Document.id).where(Document.kb_id == kb_id)))
            session.delete(kb)
        self.queue.cancel(doc_ids)
        self.store.drop_collection(collection)
        shutil.rmtree(self.settings.storage.files_dir / kb_id, ignore_errors=True)
        self.page_cache.forget(doc_ids)

    def chunking(self, chunk_size: int | None, chunk_overlap: int | None) -> tuple[int, int]:
        """Chunk size and overlap with the settings' defaults filled in, or InvalidInput. Without an overlap, a
        size other than the default gets the default overlap scaled to it (500/50 -> 300/30)."""
        size = self.settings.ingest.chunk_size if chunk_size is None else chunk_size
        if not CHUNK_SIZE_MIN <= size <= CHUNK_SIZE_MAX:
            raise InvalidInput(
                f"chunk_size must be between {CHUNK_SIZE_MIN} and {CHUNK_SIZE_MAX} characters, got {size}"
            )
        if chunk_overlap is None:
            chunk_overlap = self.settings.ingest.chunk_overlap * size // self.settings.ingest.chunk_size
        if not 0 <= chunk_overlap < size:
            raise InvalidInput(
                f"chunk_overlap must be at least 0 and smaller than chunk_size ({size}), got {chunk_overlap}"
            )
        return size, chunk_overlap

    def rebuild(
        self, name: str, chunk_size: int | None = None, chunk_overlap: int | None = None
    ) -> KnowledgeBaseInfo:
        """Drop the collection and index every stored file again, e.g. after changing the embedding model. The
        knowledge base keeps its own chunking unless new values are given."""
        with self.catalog.session() as session:
            kb = self._kb(session, name)
            if chunk_size is not None or chunk_overlap is not None:
                kb.chunk_size, kb.chunk_overlap = self.chunking(
                    kb.chunk_size if chunk_size is None else chunk_size, chunk_overlap
                )
            kb.embedding_model, kb.embedding_dim = self.settings.resolved_embedding_model, self.embedding_dim
            collection = kb.collection_name
            doc_ids = []
            for doc in kb.documents:
                doc.status, doc.error, doc.chunks_embedded = DocumentStatus.queued, None, 0
                # Taken from any process indexing it now (with the old settings); that one leaves it to this one.
                doc.claimed_by, doc.lease_until = None, None
                doc_ids.append(doc.id)
        self.store.drop_collection(collection)
        self.store.create_collection(collection, self.embedding_dim)
        self.queue.submit_many(doc_ids)
        return self.get(name)

    def search_scope(self, name: str) -> visibility.SearchScope:
        """What a search of the knowledge base may see, read without its ready documents (app/kb/visibility.py)."""
        with self.catalog.session() as session:
            kb = self._kb(session, name)
            if kb.embedding_dim != self.embedding_dim:
                raise Conflict(
                    f"knowledge base {kb.name!r} was indexed with {kb.embedding_model} ({kb.embedding_dim}-d vectors); "
                    f"the configured model makes {self.embedding_dim}-d vectors: rebuild the knowledge base"
                )
            return visibility.search_scope(session, kb)

    # -- documents --------------------------------------------------------------------------------------------------

    def _check_upload_name(self, raw_filename: str) -> str:
        """The cleaned file name, or 422 (unusable name) / 415 (unsupported type)."""
        filename = sanitize_filename(raw_filename, self.settings.ingest.max_filename_chars)
        extension = file_extension(filename)
        if extension not in SUPPORTED_EXTENSIONS:
            raise UnsupportedMediaType(f"{filename!r}: {unsupported_message(filename, extension)}")
        return filename

    def upload(self, kb_name: str, raw_filename: str, source: BinaryIO) -> UploadOutcome:
        """Store an uploaded file and queue it for indexing; the same content twice is indexed once."""
        return self.upload_many(kb_name, [(raw_filename, source)])[0]

    def upload_many(self, kb_name: str, files: list[tuple[str, BinaryIO]]) -> list[UploadOutcome]:
        """Store files and queue them for indexing. A refused request changes nothing: every file is checked (name
        and type first, then size and emptiness while it is staged) before any is stored, and all are registered
        in one transaction (404 first for a missing knowledge base, and if it is deleted meanwhile)."""
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            kb_id, kb_name = kb.id, kb.name
        names = [self._check_upload_name(raw_filename) for raw_filename, _ in files]
        self.disk.check()
        staged: list[Staged] = []
        try:
            for filename, (_, source) in zip(names, files, strict=True):
                staged.append(self._stage(source, filename))
            outcomes = self._register(kb_id, kb_name, staged)
        finally:
            for item in staged:
                item.path.unlink(missing_ok=True)
        self.queue.submit_many([o.document.id for o in outcomes if not o.duplicate])
        return outcomes

    def _stage(self, source: BinaryIO, filename: str) -> Staged:
        tmp_dir = self.settings.storage.files_dir / "_incoming"
        if not tmp_dir.is_dir():
            tmp_dir.mkdir(parents=True, exist_ok=True)
        staged = tmp_dir / uuid.uuid4().hex
        digest, size, limit = hashlib.sha256(), 0, self.settings.ingest.max_upload_bytes
        try:
            with staged.open("wb") as out:
                while block := source.read(_COPY_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise PayloadTooLarge(
                            f"{filename!r} is larger than the upload limit of {self.settings.ingest.max_upload_mb:g} MB"
                        )
                    digest.update(block)
                    out.write(block)
        except BaseException:  # over the limit, or the disk filled up: no partial file is left behind
            staged.unlink(missing_ok=True)
            raise
        if size == 0:
            staged.unlink(missing_ok=True)
            raise InvalidInput(f"{filename!r} is empty (0 bytes)")
        return Staged(filename, staged, digest.hexdigest(), size)

    def _register(self, kb_id: str, kb_name: str, staged: list[Staged]) -> list[UploadOutcome]:
        """Move the staged files into the knowledge base's folder and add their documents, all or none."""
        stored: list[Path] = []
        try:
            with self.catalog.session() as session:
                # The knowledge base's row is written first, so it stays locked until this transaction ends (on
                # SQLite, the whole database): a delete of the knowledge base waits, and so does another upload into
                # it, which then sees these documents, so the same content uploaded twice at once is stored once.
                touched = session.execute(
                    update(KnowledgeBase).where(KnowledgeBase.id == kb_id).values(name=KnowledgeBase.name)
                )
                if not touched.rowcount:
                    raise self._deleted_meanwhile(kb_name)
                return [self._add_document(session, kb_id, kb_name, item, stored) for item in staged]
        except BaseException as exc:
            for path in stored:
                path.unlink(missing_ok=True)
            if isinstance(exc, IntegrityError) and not self._kb_exists(kb_id):  # deleted after the check above
                with contextlib.suppress(OSError):
                    (self.settings.storage.files_dir / kb_id).rmdir()  # recreated for our files; empty again
                raise self._deleted_meanwhile(kb_name) from None
            raise

    def _add_document(
        self, session: Session, kb_id: str, kb_name: str, item: Staged, stored: list[Path]
    ) -> UploadOutcome:
        same_content = session.scalars(
            select(Document).where(
                Document.kb_id == kb_id, Document.sha256 == item.sha256, Document.status != DocumentStatus.failed
            )
        ).first()
        if same_content:
            return UploadOutcome(
                document=DocumentInfo.of(same_content, kb_name),
                duplicate=True,
                message=f"identical content is already in this knowledge base as {same_content.filename!r}",
            )
        previous = session.scalars(
            select(Document)
            .where(Document.kb_id == kb_id, Document.filename == item.filename)
            .order_by(Document.created_at.desc())
        ).first()
        extension = file_extension(item.filename)
        doc = Document(
            id=uuid.uuid4().hex,
            kb_id=kb_id,
            filename=item.filename,
            file_type=extension.lstrip("."),
            sha256=item.sha256,
            size_bytes=item.size,
            status=DocumentStatus.queued,
            replaces_id=previous.id if previous else None,
            stored_path="",
        )
        # On disk the file is named by its id: display names may exceed the file system's 255-byte limit.
        target = self.settings.storage.files_dir / kb_id / f"{doc.id}{extension}"
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(item.path, target)
        stored.append(target)
        doc.stored_path = str(target.relative_to(self.settings.storage.files_dir))
        session.add(doc)
        session.flush()
        message = "queued for indexing" + (f"; replaces the earlier {item.filename!r} when ready" if previous else "")
        return UploadOutcome(document=DocumentInfo.of(doc, kb_name), message=message)

    def _kb_exists(self, kb_id: str) -> bool:
        with self.catalog.session() as session:
            return session.get(KnowledgeBase, kb_id) is not None

    @staticmethod
    def _deleted_meanwhile(kb_name: str) -> KnowledgeBaseNotFound:
        return KnowledgeBaseNotFound(
            f"知识库 {kb_name!r} 在上传过程中被删除 (knowledge base {kb_name!r} was deleted during the upload)"
        )

    def copy_ready_documents(self, source_kb: str, target_kb: str, batch: int = 100) -> dict[str, str]:
        """Upload the stored files of the source's ready documents into the target (indexed there with its own
        chunking). Returns {target document id: source document id}."""
        with self.catalog.session() as session:
            kb = self._kb(session, source_kb)
            files = [
                (d.id, d.filename, self.settings.storage.files_dir / d.stored_path)
                for d in sorted(kb.documents, key=lambda d: d.created_at)
                if d.status is DocumentStatus.ready
            ]
        copies: dict[str, str] = {}
        for start in range(0, len(files), batch):
            part = files[start : start + batch]
            handles = [path.open("rb") for _, _, path in part]
            try:
                named = [(name, handle) for (_, name, _), handle in zip(part, handles, strict=True)]
                outcomes = self.upload_many(target_kb, named)
            finally:
                for handle in handles:
                    handle.close()
            for (source_id, _, _), outcome in zip(part, outcomes, strict=True):
                copies.setdefault(outcome.document.id, source_id)
        return copies

    def list_documents(
        self,
        kb_name: str,
        ids: Collection[str] | None = None,
        statuses: Collection[DocumentStatus] | None = None,
    ) -> list[DocumentInfo]:
        """Oldest first; only the documents among `ids` and in `statuses` when either is given."""
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            return [DocumentInfo.of(d, kb.name) for d in documents_of(session, kb.id, ids, statuses)]

    def get_document(self, kb_name: str, doc_id: str) -> DocumentInfo:
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            return DocumentInfo.of(self._doc(session, kb, doc_id), kb.name)

    def delete_document(self, kb_name: str, doc_id: str) -> None:
        """The row goes, held from searches in the same transaction until its vectors are gone; if an indexer
        holds the document it may still insert some, so that one (or the heartbeat) releases the hold."""
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            doc = self._doc(session, kb, doc_id)
            collection, stored = kb.collection_name, self.settings.storage.files_dir / doc.stored_path
            indexing = visibility.claim_is_live(doc, utcnow())
            visibility.hold(session, collection, [doc_id])
            session.delete(doc)
        self.queue.cancel([doc_id])
        self.queue.indexer.remove_vectors([(collection, doc_id)], release=not indexing)
        stored.unlink(missing_ok=True)
        self.page_cache.forget([doc_id])

    def stored_document(self, kb_name: str, doc_id: str) -> StoredDocument:
        """NotFound unless the document is in the knowledge base (a deleted one is not)."""
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            doc = self._doc(session, kb, doc_id)
            info = DocumentInfo.of(doc, kb.name)
            return StoredDocument(info, self.settings.storage.files_dir / doc.stored_path, kb.collection_name)

    def document_chunks(self, kb_name: str, doc_id: str, offset: int = 0, limit: int = 100) -> list[ChunkInfo]:
        with self.catalog.session() as session:
            kb = self._kb(session, kb_name)
            self._doc(session, kb, doc_id)
            collection = kb.collection_name
        chunks = self.store.document_chunks(collection, doc_id, offset=offset, limit=limit)
        return [chunk.to(ChunkInfo) for chunk in chunks]

    # -- lookups ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _kb(session: Session, name: str) -> KnowledgeBase:
        kb = kb_by_name(session, normalize_kb_name(name))
        if kb is None:
            raise KnowledgeBaseNotFound(f"knowledge base {name!r} does not exist")
        return kb

    @staticmethod
    def _doc(session: Session, kb: KnowledgeBase, doc_id: str) -> Document:
        doc = session.get(Document, doc_id)
        if doc is None or doc.kb_id != kb.id:
            raise DocumentNotFound(f"document {doc_id!r} does not exist in knowledge base {kb.name!r}")
        return doc
