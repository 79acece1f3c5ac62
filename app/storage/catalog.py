"""The catalog: knowledge bases and their documents in a relational database (SQLite by default, PostgreSQL for
several API processes). The schema behaves the same on both: times come back as UTC-aware datetimes, text limits
count characters, names compare case-sensitively, and a claim with a lease says which process indexes a document."""

from __future__ import annotations

import enum
import logging
import shutil
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from app.errors import InvalidInput
from app.storage.diskspace import DiskFull, is_disk_full

log = logging.getLogger(__name__)
_REOPEN_MIN_FREE = 1024 * 1024  # a read-only catalog is reopened read-write once its disk has this much room


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class DocumentStatus(enum.StrEnum):
    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back UTC-aware on every database (SQLite returns naive datetimes,
    PostgreSQL returns them in the server's time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        return _as_utc(value)

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        return _as_utc(value)


def _as_utc(value: datetime | None) -> datetime | None:
    """Naive values are taken as UTC; aware ones are converted to it."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    collection_name: Mapped[str] = mapped_column(String(64), unique=True)
    embedding_model: Mapped[str] = mapped_column(Text)
    embedding_dim: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    documents: Mapped[list[Document]] = relationship(
        back_populates="knowledge_base", cascade="all, delete-orphan", passive_deletes=True
    )


class Document(Base):
    __tablename__ = "documents"
    # Searches read the documents of a knowledge base that may have vectors while not ready (see
    # app/kb/visibility.py) through the first index, so a query reads no ready document. A list of given documents
    # (`documents_of` with ids) finds them through the second: with only the primary key and kb_id's index, SQLite
    # (no statistics) reads every document of the knowledge base by kb_id once a few ids are asked for.
    __table_args__ = (
        Index("ix_documents_kb_status_attempts", "kb_id", "status", "index_attempts"),
        Index("ix_documents_kb_id_id", "kb_id", "id", unique=True),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    file_type: Mapped[str] = mapped_column(String(16))
    stored_path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[DocumentStatus] = mapped_column(
        Enum(DocumentStatus, native_enum=False, length=16), default=DocumentStatus.queued
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    chunks_embedded: Mapped[int] = mapped_column(Integer, default=0)
    replaces_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Which API process indexes the document (queued in its memory or being processed), until when: the owner
    # renews the lease while it works, so another process takes the document over only after the owner died.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Times indexing started since the document last finished (committed before the work): a document whose indexing
    # keeps killing its process (a crash, the out-of-memory killer) is failed instead of resumed forever.
    index_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)
    # How the document was read (its loader's ReadReport), kept once it was read; NULL before, and for documents
    # read before these columns existed. Pages from the text layer and by OCR (with OCR's mean confidence, 0-1), the
    # numbers of the pages with nothing readable ("2,5"), pictures inside a Word or PowerPoint file read by OCR or
    # skipped.
    text_pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ocr_pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ocr_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    empty_pages: Mapped[str | None] = mapped_column(Text, nullable=True)
    ocr_pictures: Mapped[int | None] = mapped_column(Integer, nullable=True)
    skipped_pictures: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Pages read so far of a paged document (PDF, slides, multi-page picture) while it is read: OCR takes seconds a
    # page, so the indexing process records them now and then (load_ocr_progress_interval_s).
    pages_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pages_total: Mapped[int | None] = mapped_column(Integer, nullable=True)

    knowledge_base: Mapped[KnowledgeBase] = relationship(back_populates="documents")


class VectorDeletion(Base):
    """A document whose vectors may still be in Milvus after its row was deleted (or it failed): searches leave it
    out until its vectors are gone and no indexer can still insert them (see app/kb/visibility.py)."""

    __tablename__ = "vector_deletions"
    collection_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Conversation(Base):
    """A chat the server keeps, so a client can send its id instead of the whole history."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    messages: Mapped[list[ConversationMessage]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ConversationMessage.seq",
    )


class ConversationMessage(Base):
    __tablename__ = "conversation_messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16), default="")
    rewritten_question: Mapped[str | None] = mapped_column(Text, nullable=True)
    sources_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL loses nothing on a process crash; a power cut may drop the last commits, never corrupt.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _add_missing_columns_and_indexes(engine: Engine) -> None:
    """Columns (all nullable) and indexes added to the schema since a catalog was created, added in place:
    create_all only creates missing tables, with their indexes."""
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            indexed = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexed:
                    index.create(connection)


def _reject_nul(session: Session, _context: object, _instances: object) -> None:
    """PostgreSQL cannot store NUL in text (SQLite can): refuse it on every database, naming the field."""
    for obj in (*session.new, *session.dirty):
        for attr in obj.__mapper__.column_attrs:
            value = obj.__dict__.get(attr.key)
            if isinstance(value, str) and "\x00" in value:
                raise InvalidInput(f"{attr.key.replace('_', ' ')} must not contain NUL (\\x00) characters")


class CatalogUnavailable(RuntimeError):
    """The catalog database cannot be reached (the API answers 503)."""


class Catalog:
    """Owns the engine and hands out sessions; the schema is created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        # What error messages show: the URL without its password.
        self.display_url = self.engine.url.render_as_string(hide_password=True)
        # Set while a SQLite catalog is open read-only because its disk was full when it was opened.
        self.full_disk: Path | None = None
        self._reopen_lock = threading.Lock()
        try:
            Base.metadata.create_all(self.engine)
            _add_missing_columns_and_indexes(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            if not (self.engine.dialect.name == "sqlite" and is_disk_full(exc)):
                raise CatalogUnavailable(f"cannot open the catalog database at {self.display_url}: {exc.orig}") from exc
            self._open_read_only()
        self._sessions = _sessionmaker(self.engine)

    def _open_read_only(self) -> None:
        """SQLite cannot open a database in WAL mode without room for its wal-index (<db>-shm), which it removes
        on a clean close. Then the file is complete, so it is read as it is (immutable) until the disk has room:
        the API still lists and searches, and refuses writes with 507."""
        database = Path(self.engine.url.database or "").absolute()
        self.full_disk = database.parent
        uri = f"file:{urllib.parse.quote(str(database))}?mode=ro&immutable=1"
        self.engine = create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
        )
        log.warning("the disk holding %s is full: the catalog is read-only until there is room", database)

    def _reopen_writable(self) -> None:
        """Back to read-write once the disk has room again."""
        with self._reopen_lock:
            if self.full_disk is None or shutil.disk_usage(self.full_disk).free < _REOPEN_MIN_FREE:
                return
            engine = _engine(self.url)
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            except OperationalError:
                engine.dispose()
                return
            read_only, self.engine, self._sessions = self.engine, engine, _sessionmaker(engine)
            read_only.dispose()
            self.full_disk = None
            log.info("the catalog is writable again")

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self.full_disk is not None:
            self._reopen_writable()
        full_disk = self.full_disk
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            if full_disk is not None and "readonly database" in str(exc.orig):
                raise DiskFull(full_disk) from exc
            raise

    def dispose(self) -> None:
        self.engine.dispose()


def _engine(url: str) -> Engine:
    is_sqlite = url.startswith("sqlite")
    # A PostgreSQL server that does not answer is reported after connect_timeout seconds instead of hanging.
    connect_args = {"check_same_thread": False, "timeout": 30} if is_sqlite else {"connect_timeout": 5}
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not is_sqlite)
    if is_sqlite:
        _enable_sqlite_foreign_keys(engine)
    return engine


def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    sessions = sessionmaker(engine, expire_on_commit=False)
    event.listen(sessions, "before_flush", _reject_nul)
    return sessions


def kb_by_name(session: Session, name: str) -> KnowledgeBase | None:
    return session.scalar(select(KnowledgeBase).where(KnowledgeBase.name == name))


class DocumentCounts(NamedTuple):
    documents: int = 0
    ready: int = 0
    ready_chunks: int = 0


def document_counts(session: Session, kb_ids: Collection[str]) -> dict[str, DocumentCounts]:
    """Documents, ready documents and their chunks per knowledge base, counted by the database in one query (a
    listing of knowledge bases must not load 100,000 document rows). Knowledge bases without documents are absent."""
    query = (
        select(Document.kb_id, Document.status, func.count(), func.coalesce(func.sum(Document.chunk_count), 0))
        .where(Document.kb_id.in_(kb_ids))
        .group_by(Document.kb_id, Document.status)
    )
    counts: dict[str, DocumentCounts] = {}
    for kb_id, status, documents, chunks in session.execute(query):
        total, ready, ready_chunks = counts.get(kb_id, DocumentCounts())
        if status is DocumentStatus.ready:
            ready, ready_chunks = ready + documents, ready_chunks + chunks
        counts[kb_id] = DocumentCounts(total + documents, ready, ready_chunks)
    return counts


def documents_of(
    session: Session,
    kb_id: str,
    ids: Collection[str] | None = None,
    statuses: Collection[DocumentStatus] | None = None,
) -> list[Document]:
    """The knowledge base's documents, oldest first, in one query; given `ids` or `statuses`, only those. With ids
    the database looks them up by primary key, with statuses through ix_documents_kb_status_attempts, so a filtered
    list costs what it returns, not the size of the knowledge base. Unknown ids are simply absent."""
    query = select(Document).where(Document.kb_id == kb_id)
    if ids is not None:
        query = query.where(Document.id.in_(ids))
    if statuses is not None:
        query = query.where(Document.status.in_(statuses))
    return list(session.scalars(query.order_by(Document.created_at, Document.id)))
