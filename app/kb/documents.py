"""Plain data passed between the loaders, the splitter and ingestion."""

from __future__ import annotations

from dataclasses import dataclass, field


class DocumentLoadError(Exception):
    """A file could not be turned into text; the message is shown to the user as the failure reason."""


class UnsupportedFileType(DocumentLoadError):
    pass


class EncryptedDocument(DocumentLoadError):
    pass


class CorruptDocument(DocumentLoadError):
    pass


class EmptyDocument(DocumentLoadError):
    pass


class DocumentTooLarge(DocumentLoadError):
    """Reading the file would inflate or allocate past a limit (a `load_*` setting), as a zip bomb does."""


class NothingReadable(EmptyDocument):
    """Every page or picture is an image, and OCR found no text in them or was not run (switched off, missing)."""


@dataclass(frozen=True)
class Section:
    """A run of text from one place in a document: one PDF page, or the text under one heading.

    A spreadsheet row is a Section of its own with `rows` set to (row, row): the splitter packs neighbouring rows
    of one sheet into chunks of whole rows and names their range in the chunk's heading (see `rows_heading`).
    """

    text: str
    page: int | None = None
    heading: str | None = None
    rows: tuple[int, int] | None = None
    ocr: bool = False  # the text was read from a picture by OCR (a scanned page, an image file, a picture in a file)


def rows_heading(label: str | None, rows: tuple[int, int]) -> str:
    """Where a chunk of spreadsheet rows lies: "Sheet1 · 第 2–15 行 (rows 2-15)" (no label for a CSV file)."""
    first, last = rows
    where = f"第 {first} 行 (row {first})" if first == last else f"第 {first}–{last} 行 (rows {first}-{last})"
    return f"{label} · {where}" if label else where


@dataclass
class ReadReport:
    """How a document was read: pages (slides, image frames) by their text layer and by OCR, and those where
    nothing readable was found. `ocr_pictures` counts pictures inside a Word or PowerPoint file read by OCR."""

    text_pages: int = 0
    ocr_pages: int = 0
    ocr_pictures: int = 0
    empty_pages: list[int] = field(default_factory=list)
    ocr_confidences: list[float] = field(default_factory=list)  # one per page or picture OCR read text from, 0-1
    skipped_pictures: int = 0  # pictures not read: past ocr.max_pictures, too small, or undecodable

    @property
    def ocr_confidence(self) -> float | None:
        """The mean OCR confidence (0-1) over what OCR read; None when OCR read nothing."""
        return sum(self.ocr_confidences) / len(self.ocr_confidences) if self.ocr_confidences else None


@dataclass
class LoadedDocument:
    sections: list[Section]
    pages: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    report: ReadReport = field(default_factory=ReadReport)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as the splitter cuts it; ingestion adds the document to make the stored record
    (app/storage/chunks.py), whose field names these are."""

    text: str
    chunk_index: int
    page: int | None = None
    heading: str | None = None
    ocr: bool = False  # some of its text was read from a picture by OCR
