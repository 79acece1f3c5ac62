"""PowerPoint (.pptx) loading with python-pptx: one Section per slide, text in reading order, tables as rows, notes;
text in the slide's pictures read by OCR into a Section of its own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.base import BaseShape
from pptx.slide import Slide

from app.kb.documents import DocumentLoadError, LoadedDocument, ReadReport, Section
from app.kb.loaders._common import damaged_package, reject_ole_file
from app.kb.loaders._limits import LoadLimits, check_zip
from app.kb.loaders.ocr import OnPage, Picture, PictureReader

_KIND = ("PowerPoint 文件", "the PowerPoint file")
# Shapes whose tops lie within this distance read as one line, left to right (EMU: 914400 to the inch).
_LINE_EMU = 914400 // 5


def _load_pptx(path: Path, limits: LoadLimits, on_page: OnPage | None = None) -> LoadedDocument:
    """One Section per slide: `page` is the slide number, the heading its title; speaker notes follow the slide's
    text. Text in the slide's pictures follows as a Section flagged `ocr`; charts and SmartArt are skipped."""
    reject_ole_file(path, _KIND, ".ppt", ".pptx")
    check_zip(path, limits, _KIND)
    try:
        with path.open("rb") as handle:
            presentation = pptx.Presentation(handle)  # a file object: uploads are stored under generated names
            slides = list(presentation.slides)
            read = [(_slide_section(slide, n), list(_pictures(slide.shapes))) for n, slide in enumerate(slides, 1)]
            title = (presentation.core_properties.title or "").strip()
    except DocumentLoadError:
        raise
    except Exception as exc:
        raise damaged_package(_KIND, ".pptx", exc) from exc
    loaded = LoadedDocument(sections=[], pages=len(slides), metadata={"slides": str(len(slides))})
    reader = PictureReader(limits, loaded.report)
    with closing(reader.read_grouped([pictures for _, pictures in read], _KIND)) as texts:
        for number, ((section, _), slide_texts) in enumerate(zip(read, texts, strict=True), start=1):
            loaded.sections += _with_pictures(section, slide_texts, number, loaded.report)
            if on_page is not None:
                on_page(number, len(slides))
    if not loaded.sections and reader.pictures_seen:
        raise reader.nothing_readable(_KIND)
    if title:
        loaded.metadata["title"] = title
    return loaded


def _with_pictures(section: Section | None, read: list[str], number: int, report: ReadReport) -> list[Section]:
    """The slide's text Section, then one of the text OCR `read` in its pictures; the slide counted in `report`."""
    sections = [section] if section is not None else []
    if read:
        heading = section.heading if section is not None else None
        sections.append(Section(text="\n\n".join(read), page=number, heading=heading, ocr=True))
    if section is not None:
        report.text_pages += 1
    elif not read:
        report.empty_pages.append(number)
    return sections


def _pictures(shapes: Iterable[BaseShape]) -> Iterator[Picture]:
    """The slide's embedded pictures in reading order, inside groups too (a linked picture is never fetched); each
    known by its content's SHA-1."""
    for shape in _reading_order(shapes):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _pictures(shape.shapes)  # type: ignore[attr-defined]
            continue
        try:
            image = shape.image  # type: ignore[attr-defined]
        except (AttributeError, KeyError, ValueError):  # not a picture, or a linked one
            continue
        yield image.sha1, lambda image=image: image.blob


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
