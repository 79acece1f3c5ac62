"""What the knowledge-base services return: plain pydantic models, also used as API response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, computed_field

from app.storage.catalog import Document, DocumentCounts, DocumentStatus, KnowledgeBase
from app.storage.chunks import ChunkRecord


class KnowledgeBaseInfo(BaseModel):
    id: str
    name: str
    description: str
    collection_name: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    created_at: datetime
    document_count: int = 0
    ready_count: int = 0
    chunk_count: int = 0

    @classmethod
    def of(cls, kb: KnowledgeBase, counts: DocumentCounts) -> KnowledgeBaseInfo:
        return cls(
            id=kb.id,
            name=kb.name,
            description=kb.description,
            collection_name=kb.collection_name,
            embedding_model=kb.embedding_model,
            chunk_size=kb.chunk_size,
            chunk_overlap=kb.chunk_overlap,
            created_at=kb.created_at,
            document_count=counts.documents,
            ready_count=counts.ready,
            chunk_count=counts.ready_chunks,
        )


class DocumentReading(BaseModel):
    """How a document's text was read: pages (slides, frames of a picture) from their text layer, pages read by OCR
    with OCR's mean confidence (0-1), the numbers of pages where nothing readable was found, and pictures inside a
    Word or PowerPoint file read by OCR or skipped."""

    text_pages: int
    ocr_pages: int
    ocr_confidence: float | None
    empty_pages: list[int]
    ocr_pictures: int
    skipped_pictures: int

    @classmethod
    def of(cls, doc: Document) -> DocumentReading | None:
        """None until the document was read (and for documents read before the catalog kept this)."""
        if doc.text_pages is None:
            return None
        return cls(
            text_pages=doc.text_pages,
            ocr_pages=doc.ocr_pages or 0,
            ocr_confidence=doc.ocr_confidence,
            empty_pages=[int(n) for n in (doc.empty_pages or "").split(",") if n],
            ocr_pictures=doc.ocr_pictures or 0,
            skipped_pictures=doc.skipped_pictures or 0,
        )


class DocumentInfo(BaseModel):
    id: str
    kb_name: str
    filename: str
    file_type: str
    status: DocumentStatus
    error: str | None
    pages: int | None
    chunk_count: int
    chunks_embedded: int
    progress: float  # of the embedding: chunks_embedded / chunk_count
    # While a paged document (PDF, slides, multi-page picture) is read: pages read so far, of how many.
    pages_done: int | None = None
    pages_total: int | None = None
    reading: DocumentReading | None = None
    size_bytes: int
    sha256: str
    replaces_id: str | None
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None

    @classmethod
    def of(cls, doc: Document, kb_name: str) -> DocumentInfo:
        if doc.status is DocumentStatus.ready:
            progress = 1.0
        elif doc.chunk_count:
            progress = round(doc.chunks_embedded / doc.chunk_count, 4)
        else:
            progress = 0.0
        return cls(
            id=doc.id,
            kb_name=kb_name,
            filename=doc.filename,
            file_type=doc.file_type,
            status=doc.status,
            error=doc.error,
            pages=doc.pages,
            chunk_count=doc.chunk_count,
            chunks_embedded=doc.chunks_embedded,
            progress=progress,
            pages_done=doc.pages_done,
            pages_total=doc.pages_total,
            reading=DocumentReading.of(doc),
            size_bytes=doc.size_bytes,
            sha256=doc.sha256,
            replaces_id=doc.replaces_id,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            indexed_at=doc.indexed_at,
        )


class UploadOutcome(BaseModel):
    document: DocumentInfo
    duplicate: bool = False
    message: str


class ChunkInfo(ChunkRecord):
    """A chunk as the API lists it: the record and its id."""

    chunk_id = computed_field(ChunkRecord.chunk_id)  # type: ignore[assignment]
