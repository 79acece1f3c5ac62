"""Turn uploaded files into text sections: PDF, Word (DOCX), Markdown, plain text and HTML.

Every loader is deterministic and only reads: nothing in a document is executed, rendered or fetched (HTML
scripts are dropped, links are not followed, PDF JavaScript and forms are ignored). Failures are raised as the
`DocumentLoadError` subclasses from `app.kb.documents`, whose messages are shown to the user as the reason.
What reading a file may inflate or allocate is bounded by `LoadLimits` (the `load_*` settings): past a limit the
file is refused with a `DocumentTooLarge` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.kb.documents import EmptyDocument, LoadedDocument, UnsupportedFileType
from app.kb.loaders._limits import LoadLimits, check_text_chars
from app.kb.loaders.docx_loader import _load_docx
from app.kb.loaders.html_loader import _load_html
from app.kb.loaders.markdown_loader import _load_markdown
from app.kb.loaders.pdf_loader import _load_pdf, clean_pdf_text
from app.kb.loaders.text_loader import _load_text

__all__ = ["SUPPORTED_EXTENSIONS", "LoadLimits", "clean_pdf_text", "load_document"]

SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".pdf": "PDF",
    ".docx": "Word (.docx)",
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".txt": "plain text",
    ".html": "HTML",
    ".htm": "HTML",
}


def load_document(path: Path, filename: str | None = None, limits: LoadLimits | None = None) -> LoadedDocument:
    """Read `path` as the type named by the extension of `filename` (the uploaded name) or of `path` itself,
    within `limits` (by default those of the settings' defaults)."""
    limits = limits or LoadLimits.from_settings()
    name = filename or path.name
    ext = Path(name).suffix.lower()
    loader = _LOADERS.get(ext)
    if loader is None:
        raise UnsupportedFileType(_unsupported_message(name, ext))
    if path.stat().st_size == 0:
        raise EmptyDocument(f"'{name}' is empty (0 bytes).")
    doc = loader(path, limits)
    check_text_chars(sum(len(s.text) for s in doc.sections), limits, (f"从“{name}”提取", f"'{name}'"))
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise EmptyDocument(f"'{name}' contains no text.")
    doc.metadata.setdefault("file_type", ext.lstrip("."))
    return doc


def _unsupported_message(name: str, ext: str) -> str:
    kinds = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    hint = " Save old .doc files as .docx first." if ext == ".doc" else ""
    what = f"'{ext}' files" if ext else f"'{name}' (no file extension)"
    return f"Unsupported file type: {what}. Supported types: {kinds}.{hint}"


_LOADERS: dict[str, Callable[[Path, LoadLimits], LoadedDocument]] = {
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".txt": _load_text,
    ".html": _load_html,
    ".htm": _load_html,
}
