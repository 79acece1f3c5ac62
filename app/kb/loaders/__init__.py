"""Turn uploaded files into text sections: PDF, Word (DOCX), Excel (XLSX), CSV/TSV, PowerPoint (PPTX), Markdown,
plain text, HTML, and images; text in pictures (scanned PDF pages, image files, pictures in DOCX and PPTX) is read
by OCR (`ocr.py`), and each document's `report` says how its pages were read.

Every loader is deterministic and only reads: nothing in a document is executed, rendered or fetched (HTML
scripts are dropped, links are not followed, PDF JavaScript and forms are ignored, Excel formulas and macros are
not run). Failures are raised as the `DocumentLoadError` subclasses from `app.kb.documents`, whose messages are
shown to the user as the reason. What reading a file may inflate or allocate is bounded by `LoadLimits` (the
`settings.limits` and `settings.ocr`): past a limit the file is refused with a `DocumentTooLarge` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.kb.documents import EmptyDocument, LoadedDocument, UnsupportedFileType
from app.kb.loaders._limits import LoadLimits, check_text_chars
from app.kb.loaders.csv_loader import _load_csv, _load_tsv
from app.kb.loaders.docx_loader import _load_docx
from app.kb.loaders.html_loader import _load_html
from app.kb.loaders.image_loader import _load_image
from app.kb.loaders.markdown_loader import _load_markdown
from app.kb.loaders.ocr import OnPage
from app.kb.loaders.pdf_loader import _load_pdf, clean_pdf_text
from app.kb.loaders.pptx_loader import _load_pptx
from app.kb.loaders.text_loader import _load_text
from app.kb.loaders.xlsx_loader import _load_xlsx

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "FileType",
    "LoadLimits",
    "OnPage",
    "clean_pdf_text",
    "load_document",
    "unsupported_message",
]


@dataclass(frozen=True)
class FileType:
    label: str
    load: Callable[..., LoadedDocument]  # (path, limits), and on_page=OnPage when `paged`
    paged: bool = False  # reads page by page and reports each page done to `on_page`


# The one registry of what can be uploaded: extension -> what it is and the loader that reads it.
SUPPORTED_EXTENSIONS: dict[str, FileType] = {
    ".pdf": FileType("PDF", _load_pdf, paged=True),
    ".docx": FileType("Word (.docx)", _load_docx),
    ".xlsx": FileType("Excel (.xlsx)", _load_xlsx),
    ".xlsm": FileType("Excel (.xlsm)", _load_xlsx),
    ".csv": FileType("CSV", _load_csv),
    ".tsv": FileType("TSV", _load_tsv),
    ".pptx": FileType("PowerPoint (.pptx)", _load_pptx, paged=True),
    ".md": FileType("Markdown", _load_markdown),
    ".markdown": FileType("Markdown", _load_markdown),
    ".txt": FileType("plain text", _load_text),
    ".html": FileType("HTML", _load_html),
    ".htm": FileType("HTML", _load_html),
    ".png": FileType("PNG image", _load_image, paged=True),
    ".jpg": FileType("JPEG image", _load_image, paged=True),
    ".jpeg": FileType("JPEG image", _load_image, paged=True),
    ".bmp": FileType("BMP image", _load_image, paged=True),
    ".tif": FileType("TIFF image", _load_image, paged=True),
    ".tiff": FileType("TIFF image", _load_image, paged=True),
    ".webp": FileType("WebP image", _load_image, paged=True),
}

# Old binary Office formats: not read, but the refusal says what to convert them to and how.
_CONVERT_TO = {".doc": ".docx", ".xls": ".xlsx", ".ppt": ".pptx"}


def load_document(
    path: Path, filename: str | None = None, limits: LoadLimits | None = None, on_page: OnPage | None = None
) -> LoadedDocument:
    """Read `path` as the type named by the extension of `filename` (the uploaded name) or of `path` itself,
    within `limits` (by default those of the settings' defaults). A paged format (PDF, PowerPoint, images) calls
    `on_page(done, total)` as each page is read: OCR takes seconds a page, so a caller can show progress, or stop
    the reading by raising from it."""
    limits = limits or LoadLimits.from_settings()
    name = filename or path.name
    ext = Path(name).suffix.lower()
    file_type = SUPPORTED_EXTENSIONS.get(ext)
    if file_type is None:
        raise UnsupportedFileType(unsupported_message(name, ext))
    if path.stat().st_size == 0:
        raise EmptyDocument(f"'{name}' is empty (0 bytes).")
    doc = file_type.load(path, limits, on_page=on_page) if file_type.paged else file_type.load(path, limits)
    check_text_chars(sum(len(s.text) for s in doc.sections), limits, (f"从“{name}”提取", f"'{name}'"))
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise EmptyDocument(f"'{name}' contains no text.")
    doc.metadata.setdefault("file_type", ext.lstrip("."))
    return doc


def unsupported_message(name: str, ext: str) -> str:
    """Why `name` cannot be uploaded, the types that can, and for an old Office format how to convert it."""
    kinds = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    what = f"“{ext}” 文件" if ext else f"“{name}”（没有扩展名）"
    what_en = f"'{ext}' files" if ext else f"'{name}' (no file extension)"
    hint = hint_en = ""
    if ext in _CONVERT_TO:
        new = _CONVERT_TO[ext]
        command = f"libreoffice --headless --convert-to {new.lstrip('.')} file{ext}"
        hint = f"旧版二进制 {ext} 请先在 Office/WPS 中另存为 {new}，或运行 {command}。"
        hint_en = f" Old binary {ext} files: save them as {new} in Office/WPS, or run `{command}`."
    return (
        f"不支持的文件类型：{what}。支持：{kinds}。{hint} "
        f"(Unsupported file type: {what_en}. Supported types: {kinds}.{hint_en})"
    )
