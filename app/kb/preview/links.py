"""The API paths of a document's previews, which search hits and chat sources carry for a client to open."""

from __future__ import annotations

from urllib.parse import quote


def _document_path(kb_name: str, doc_id: str) -> str:
    return f"/api/kbs/{quote(kb_name, safe='')}/documents/{quote(doc_id, safe='')}"


def chunk_link(kb_name: str, doc_id: str, chunk_index: int) -> str:
    """The chunk with its neighbours (and, for a PDF, the link of its highlighted page)."""
    return f"{_document_path(kb_name, doc_id)}/chunks/{chunk_index}"


def file_link(kb_name: str, doc_id: str) -> str:
    return f"{_document_path(kb_name, doc_id)}/file"


def page_link(kb_name: str, doc_id: str, page: int, chunk_index: int | None = None) -> str:
    link = f"{_document_path(kb_name, doc_id)}/pages/{page}.png"
    return link if chunk_index is None else f"{link}?chunk={chunk_index}"
