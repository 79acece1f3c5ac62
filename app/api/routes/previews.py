"""A cited source in the original: the uploaded file, a chunk with its neighbours, a PDF page or a picture with the
chunk marked."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response

from app.api.deps import previews
from app.kb.names import file_extension
from app.kb.preview.service import MAX_NEIGHBOURS, ChunkContext, PreviewService

router = APIRouter(prefix="/api/kbs/{kb_name}/documents/{doc_id}", tags=["previews"])
Previews = Annotated[PreviewService, Depends(previews)]
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# Nothing a served file holds may run or load anything under the API's origin (PDFs are left out: browsers' PDF
# viewers do not work in a sandbox, and a PDF's scripts run in the viewer, not the page).
SANDBOX = {"Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"}


def content_disposition(filename: str, inline: bool) -> str:
    """The original name for any browser: RFC 5987's UTF-8 `filename*`, and an ASCII `filename` for those that
    read only that one (a name with no ASCII letters falls back to "document" with its extension)."""
    extension = file_extension(filename)
    stem = filename[: len(filename) - len(extension)] if extension else filename
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    ascii_stem = re.sub(r"[^A-Za-z0-9._()\- ]+", "", ascii_stem).strip(" .") or "document"
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{ascii_stem}{extension}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/file", response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}}})
def original_file(
    kb_name: str,
    doc_id: str,
    service: Previews,
    download: Annotated[bool, Query(description="Always as an attachment, even for a PDF or a picture")] = False,
) -> FileResponse:
    """The exact bytes uploaded, under the original file name. PDFs, pictures and plain text may be shown in place
    (`inline`); every other type, HTML above all, is an attachment."""
    found = service.original_file(kb_name, doc_id)
    inline = found.inline and not download
    headers = {"Content-Disposition": content_disposition(found.filename, inline), "Cache-Control": "private, no-cache"}
    headers |= NOSNIFF if found.media_type == "application/pdf" else NOSNIFF | SANDBOX
    response = FileResponse(found.path, media_type=found.media_type, headers=headers)
    response.headers["content-type"] = found.media_type  # no charset added: the file's own encoding is unknown
    return response


@router.get("/chunks/{index}")
def chunk_context(
    kb_name: str,
    doc_id: str,
    index: Annotated[int, Path(ge=0)],
    service: Previews,
    before: Annotated[int, Query(ge=0, le=MAX_NEIGHBOURS)] = 2,
    after: Annotated[int, Query(ge=0, le=MAX_NEIGHBOURS)] = 2,
) -> ChunkContext:
    """The chunk with up to `before` chunks before it and `after` after it, its heading and page, how to show it
    (`kind`), and the links of the original file and, for a PDF, of its page with the chunk highlighted."""
    return service.chunk_context(kb_name, doc_id, index, before, after)


@router.get("/pages/{page}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def page_image(
    kb_name: str,
    doc_id: str,
    page: Annotated[int, Path(ge=1)],
    service: Previews,
    chunk: Annotated[int | None, Query(ge=0, description="The chunk to highlight; it must lie on this page")] = None,
) -> Response:
    """A PDF page, or a picture read by OCR (page 1; a multi-page TIFF's page `page`), as a PNG, rendered when first
    asked for and then cached; with `chunk`, its lines are marked.
    `X-Highlight` says where the chunk was found: `text_layer`, `ocr` (a scanned page) or `none`."""
    image = service.page_image(kb_name, doc_id, page, chunk)
    headers = NOSNIFF | {"Cache-Control": "private, max-age=300"}
    if image.found is not None:
        headers["X-Highlight"] = image.found
    return Response(image.png, media_type="image/png", headers=headers)
