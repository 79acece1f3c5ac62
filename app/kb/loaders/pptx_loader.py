"""PowerPoint (.pptx) loading with python-pptx: one Section per slide, text in reading order, tables as rows, notes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.base import BaseShape
from pptx.slide import Slide

from app.kb.documents import DocumentLoadError, LoadedDocument, Section
from app.kb.loaders._common import damaged_package, reject_ole_file
from app.kb.loaders._limits import LoadLimits, check_zip

_KIND = ("PowerPoint 文件", "the PowerPoint file")
# Shapes whose tops lie within this distance read as one line, left to right (EMU: 914400 to the inch).
_LINE_EMU = 914400 // 5


def _load_pptx(path: Path, limits: LoadLimits) -> LoadedDocument:
    """One Section per slide: `page` is the slide number, the heading its title; speaker notes follow the slide's
    text. Pictures, charts and SmartArt carry no text python-pptx can read and are skipped."""
    reject_ole_file(path, _KIND, ".ppt", ".pptx")
    check_zip(path, limits, _KIND)
    try:
        with path.open("rb") as handle:
            presentation = pptx.Presentation(handle)  # a file object: uploads are stored under generated names
            slides = list(presentation.slides)
            sections = [section for n, slide in enumerate(slides, start=1) if (section := _slide_section(slide, n))]
            title = (presentation.core_properties.title or "").strip()
    except DocumentLoadError:
        raise
    except Exception as exc:
        raise damaged_package(_KIND, ".pptx", exc) from exc
    metadata = {"slides": str(len(slides))}
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=sections, pages=len(slides), metadata=metadata)


def _slide_section(slide: Slide, number: int) -> Section | None:
    blocks = [block for block in _shape_texts(slide.shapes) if block]
    notes = _notes(slide)
    if notes:
        blocks.append(f"备注 (notes): {notes}")
    if not blocks:
        return None
    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
    return Section(text="\n\n".join(blocks), page=number, heading=title or None)


def _reading_order(shapes: Iterable[BaseShape]) -> list[BaseShape]:
    """Top to bottom, and left to right among shapes whose tops are on one line. A placeholder without a position
    of its own inherits its layout's."""
    return sorted(shapes, key=lambda shape: ((shape.top or 0) // _LINE_EMU, shape.left or 0))


def _shape_texts(shapes: Iterable[BaseShape]) -> Iterator[str]:
    for shape in _reading_order(shapes):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_texts(shape.shapes)  # type: ignore[attr-defined]
        elif getattr(shape, "has_table", False):
            yield "\n".join(_table_rows(shape.table))  # type: ignore[attr-defined]
        elif shape.has_text_frame:
            yield _text(shape.text_frame.text)  # type: ignore[attr-defined]


def _table_rows(table: object) -> list[str]:
    """One line per row, cells joined by " | "; a merged cell appears once."""
    rows = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells = [" ".join(cell.text.split()) for cell in row.cells if not cell.is_spanned]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _notes(slide: Slide) -> str:
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return _text(frame.text) if frame is not None else ""


def _text(raw: str) -> str:
    """python-pptx writes a line break inside a paragraph as a vertical tab."""
    lines = (" ".join(line.split()) for line in raw.replace("\v", "\n").split("\n"))
    return "\n".join(line for line in lines if line)
