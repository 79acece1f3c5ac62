"""Documents of a knowledge base: upload, list with status and progress, inspect chunks, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile, status
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE

from app.api.deps import knowledge_bases
from app.kb.service import KnowledgeBaseService
from app.kb.views import ChunkInfo, DocumentInfo, UploadOutcome
from app.settings import Settings
from app.storage.catalog import DocumentStatus

router = APIRouter(prefix="/api/kbs/{kb_name}/documents", tags=["documents"])
KBs = Annotated[KnowledgeBaseService, Depends(knowledge_bases)]
# Ids one list may ask for: 1000 ids are 37 KB of query string, within limits.max_header_kb's default of 64 KB.
MAX_LISTED_IDS = 1000
IdsFilter = Annotated[
    list[str] | None,
    Query(max_length=MAX_LISTED_IDS, description=f"Only these documents (repeatable, at most {MAX_LISTED_IDS})"),
]
StatusFilter = Annotated[list[DocumentStatus] | None, Query(description="Only documents in these states (repeatable)")]


def part_header_too_long(exc: BaseException) -> bool:
    """Whether a 400 from the multipart parser (Starlette's "Invalid multipart data.") was python-multipart's limit
    on one header line of a part: in an upload, the line holding the file name. The parser's error is the cause of
    Starlette's, which the 400 was raised while handling."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MultipartParseError) and "header size" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def name_too_long(settings: Settings) -> str:
    return (
        f"文件名过长：文件名所在的头部不能超过 {DEFAULT_MAX_HEADER_SIZE} 字节 (file name too long: the header line "
        f"holding it may be at most {DEFAULT_MAX_HEADER_SIZE} bytes; names within that are shortened to "
        f"ingest.max_filename_chars, {settings.ingest.max_filename_chars} characters)"
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def upload_documents(kb_name: str, kbs: KBs, files: Annotated[list[UploadFile], File()]) -> list[UploadOutcome]:
    """Upload one or more files; each is stored and queued for indexing in the background.

    Identical content already in the knowledge base is not indexed again (`duplicate: true`); a file with the
    name of an existing document but new content replaces it once indexed. 415 for unsupported types, 413 over
    the size limit, 422 for empty files or unusable names. Names and types of all files are checked before any
    is stored, so one unsupported file rejects the whole request.
    """
    return kbs.upload_many(kb_name, [(upload.filename or "", upload.file) for upload in files])


@router.get("")
def list_documents(
    kb_name: str,
    kbs: KBs,
    ids: IdsFilter = None,
    status: StatusFilter = None,
) -> list[DocumentInfo]:
    """Documents with status (queued, processing, ready, failed + reason), progress, pages, chunks, size, sha256;
    oldest first. `ids` and `status` narrow the list (both: documents matching both), so a client following its
    uploads asks only for those still indexing; an unknown id is simply absent."""
    return kbs.list_documents(kb_name, ids, status)


@router.get("/{doc_id}")
def get_document(kb_name: str, doc_id: str, kbs: KBs) -> DocumentInfo:
    return kbs.get_document(kb_name, doc_id)


@router.get("/{doc_id}/chunks")
def document_chunks(
    kb_name: str,
    doc_id: str,
    kbs: KBs,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ChunkInfo]:
    """The document's chunks in order, as stored in Milvus."""
    return kbs.document_chunks(kb_name, doc_id, offset, limit)


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_document(kb_name: str, doc_id: str, kbs: KBs) -> None:
    """Delete the document, its vectors in Milvus and its stored file."""
    kbs.delete_document(kb_name, doc_id)
