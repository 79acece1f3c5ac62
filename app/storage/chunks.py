"""The one chunk record: what Milvus keeps of a chunk, and what every listing, search hit, chat source and evaluation
hit says of it. Those extend the record with their own fields (scores, a number, a rank) and are built from one
another with `ChunkRef.to`, never field by field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

Extended = TypeVar("Extended", bound="ChunkRef")


class ChunkRef(BaseModel):
    """Which chunk: its document and its place in the document's order."""

    doc_id: str
    file_name: str
    chunk_index: int

    @property
    def chunk_id(self) -> str:
        """Its primary key in the knowledge base's collection."""
        return f"{self.doc_id}_{self.chunk_index}"

    def to(self, model: type[Extended], **fields: Any) -> Extended:
        """This chunk as `model` (another extension of the record), given the fields of its own that this one
        lacks; fields `model` does not have are left behind."""
        return model.model_validate({**self.model_dump(), **fields})


class ChunkRecord(ChunkRef):
    """A chunk with where it lies in its document, its text, and whether OCR read that text from a picture (a
    scanned page, an image file, a picture in a document). Collections made before chunks carried the flag give
    False."""

    page: int | None  # the page; for a spreadsheet the sheet's number, for a presentation the slide's
    heading: str | None = None  # the heading above it; for spreadsheet rows the sheet and the row range
    text: str
    ocr: bool = False
