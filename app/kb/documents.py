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


@dataclass(frozen=True)
class Section:
    """A run of text from one place in a document: one PDF page, or the text under one heading."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass
class LoadedDocument:
    sections: list[Section]
    pages: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    page: int | None = None
    heading: str | None = None
