"""Previews of a cited source: the original file, a chunk in its context, and a PDF page or a picture with the chunk
marked."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel

from app.errors import InvalidInput, NotFound
from app.kb.loaders._limits import LoadLimits
from app.kb.names import file_extension
from app.kb.preview.cache import page_cache
from app.kb.preview.links import file_link, page_link
from app.kb.preview.pdf_pages import Found, PdfPages, found_in
from app.kb.preview.pictures import PicturePages
from app.kb.service import KnowledgeBaseService, StoredDocument
from app.kb.views import ChunkInfo
from app.settings import Settings
from app.storage.vector_store import MilvusStore

MAX_NEIGHBOURS = 10  # chunks before and after the cited one that a context may hold

# The media type a file is served with, by extension; those not listed go out as application/octet-stream.
MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xlsm": "application/vnd.ms-excel.sheet.macroEnabled.12",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
}
# What a browser may show in place: formats it displays without running anything the file holds. HTML (and SVG,
# were it accepted) is always a download: shown in place, its scripts would run under the API's origin.
INLINE = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".webp", ".txt"})
_ROWS = frozenset({"xlsx", "xlsm", "csv", "tsv"})
_PICTURES = frozenset({"png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"})

PreviewKind = Literal["pdf_page", "text", "rows", "slide", "picture"]


class OriginalFile(NamedTuple):
    path: Path
    filename: str
    media_type: str
    inline: bool  # safe to show in a browser in place


class ChunkContext(BaseModel):
    """A chunk with the chunks around it, and how a client shows it in the original."""

    kb_name: str
    doc_id: str
    file_name: str
    file_type: str
    pages: int | None
    kind: PreviewKind  # pdf_page, picture: show page_image_url; rows: spreadsheet rows; slide: a slide's text;
    # else text
    chunk: ChunkInfo
    before: list[ChunkInfo]
    after: list[ChunkInfo]
    file_url: str
    page_image_url: str | None = None


class PageImage(NamedTuple):
    png: bytes
    found: Found | None  # where the chunk was found (None when no chunk was asked for)


class PreviewService:
    def __init__(self, settings: Settings, knowledge_bases: KnowledgeBaseService, store: MilvusStore) -> None:
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self.store = store
        limits = LoadLimits.from_settings(settings)
        self.pages = PdfPages(limits, settings.preview.max_pixels)
        self.pictures = PicturePages(limits, settings.preview.max_pixels)
        self.cache = page_cache(settings)

    def original_file(self, kb_name: str, doc_id: str) -> OriginalFile:
        doc = self.knowledge_bases.stored_document(kb_name, doc_id)
        if not doc.path.is_file():  # deleted between the lookup and now
            raise NotFound(f"document {doc_id!r} has no stored file")
        extension = file_extension(doc.info.filename)
        media_type = MEDIA_TYPES.get(extension, "application/octet-stream")
        return OriginalFile(doc.path, doc.info.filename, media_type, extension in INLINE)

    def chunk_context(self, kb_name: str, doc_id: str, index: int, before: int = 2, after: int = 2) -> ChunkContext:
        if not (0 <= before <= MAX_NEIGHBOURS and 0 <= after <= MAX_NEIGHBOURS):
            raise InvalidInput(f"before and after must be between 0 and {MAX_NEIGHBOURS}")
        doc = self.knowledge_bases.stored_document(kb_name, doc_id)
        start = max(0, index - before)
        chunks = self.store.document_chunks(doc.collection, doc_id, offset=start, limit=index - start + after + 1)
        cited = next((c for c in chunks if c.chunk_index == index), None)
        if cited is None:
            raise self._no_chunk(doc, index)
        kb, file_type = doc.info.kb_name, doc.info.file_type
        kind = _kind(file_type, cited.page)
        return ChunkContext(
            kb_name=kb,
            doc_id=doc_id,
            file_name=doc.info.filename,
            file_type=file_type,
            pages=doc.info.pages,
            kind=kind,
            chunk=cited.to(ChunkInfo),
            before=[c.to(ChunkInfo) for c in chunks if c.chunk_index < index],
            after=[c.to(ChunkInfo) for c in chunks if c.chunk_index > index],
            file_url=file_link(kb, doc_id),
            page_image_url=_page_image_url(kb, doc_id, kind, cited.page, index),
        )

    def page_image(self, kb_name: str, doc_id: str, page: int, chunk_index: int | None = None) -> PageImage:
        """The PDF page or the picture (a page of a multi-page TIFF) as a PNG, the chunk's lines highlighted when
        `chunk_index` is given: rendered once, then served from the cache."""
        doc = self.knowledge_bases.stored_document(kb_name, doc_id)
        file_type = doc.info.file_type
        if file_type != "pdf" and file_type not in _PICTURES:
            raise NotFound(
                f"页面图片只适用于 PDF 文档和图片；{doc.info.filename!r} 是 {file_type} 文件 (page images exist "
                f"for PDF documents and pictures only; {doc.info.filename!r} is a {file_type} file)"
            )
        if doc.info.pages is not None and not 1 <= page <= doc.info.pages:
            zh, en = ("PDF", "PDF") if file_type == "pdf" else ("图片", "picture")
            raise NotFound(
                f"页码 {page} 不存在：该{zh}共 {doc.info.pages} 页 (page {page} does not exist: the {en} has "
                f"{doc.info.pages} pages)"
            )
        text = self._chunk_text_on(doc, chunk_index, page) if chunk_index is not None else None
        key = _cache_key(doc_id, page, text, self.settings.preview.max_pixels)
        cached = self.cache.get(key)
        if cached is not None:
            return PageImage(cached, found_in(cached))
        renderer = self.pages if file_type == "pdf" else self.pictures
        rendered = renderer.render(doc.path, page, text)
        self.cache.put(key, rendered.png)
        return PageImage(rendered.png, rendered.found if text is not None else None)

    def _chunk_text_on(self, doc: StoredDocument, index: int, page: int) -> str:
        found = self.store.document_chunks(doc.collection, doc.info.id, offset=index, limit=1)
        if not found:
            raise self._no_chunk(doc, index)
        on_page = found[0].page or 1  # a picture's only page has no number
        if on_page != page:
            raise InvalidInput(
                f"片段 {index} 位于第 {on_page} 页，不在第 {page} 页 (chunk {index} lies on page {on_page}, not on "
                f"page {page})"
            )
        return found[0].text

    @staticmethod
    def _no_chunk(doc: StoredDocument, index: int) -> NotFound:
        return NotFound(
            f"片段 {index} 不存在：{doc.info.filename!r} 有 {doc.info.chunk_count} 个片段 (chunk {index} does not "
            f"exist: {doc.info.filename!r} has {doc.info.chunk_count} chunks)"
        )


def _kind(file_type: str, page: int | None) -> PreviewKind:
    if file_type == "pdf":
        return "pdf_page" if page else "text"
    if file_type in _ROWS:
        return "rows"
    if file_type == "pptx":
        return "slide"
    return "picture" if file_type in _PICTURES else "text"


def _page_image_url(kb: str, doc_id: str, kind: PreviewKind, page: int | None, index: int) -> str | None:
    """The chunk's highlighted page: a PDF chunk's page (none for one without a page), a picture's (page 1 when
    the picture has no pages)."""
    if kind == "picture":
        return page_link(kb, doc_id, page or 1, index)
    return page_link(kb, doc_id, page, index) if kind == "pdf_page" and page else None


def _cache_key(doc_id: str, page: int, text: str | None, max_pixels: int) -> str:
    """A name for the image made of server-made parts only: the document's id, the page, a digest of the chunk's
    text (a rebuild with another chunk size changes what chunk N is) and the pixel cap."""
    marked = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] if text is not None else "plain"
    return f"{doc_id}-p{page}-{marked}-{max_pixels}.png"
