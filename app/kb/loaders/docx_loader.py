"""Word (.docx) loading with python-docx: paragraphs and tables in body order, sections cut at headings; text in
pictures read by OCR where the picture stands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import docx
from docx.document import Document as DocxDocument
from docx.oxml.ns import qn
from docx.oxml.xmlchemy import BaseOxmlElement
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from app.kb.documents import LoadedDocument, ReadReport
from app.kb.loaders._common import _SectionBuilder, damaged_package, reject_ole_file
from app.kb.loaders._limits import LoadLimits, check_zip
from app.kb.loaders.ocr import Picture, PictureReader

_KIND = ("Word 文件", "the Word file")
_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_CN_CHAPTER = re.compile(r"^第[一二三四五六七八九十百零〇\d]{1,4}([章篇编部]|节)")


def _load_docx(path: Path, limits: LoadLimits) -> LoadedDocument:
    """Paragraphs and tables in body order; headings start new Sections and give them a heading path.

    python-docx reads every part of the package into memory and parses its XML whole, so the package is checked
    against the limits first. Its XML parser leaves lxml's huge_tree off, which keeps libxml2's own limits on one
    text node and on nesting depth.
    """
    reject_ole_file(path, _KIND, ".doc", ".docx")
    check_zip(path, limits, _KIND)
    try:
        with path.open("rb") as handle:  # a file object: an error then names no server path
            document = docx.Document(handle)
            blocks = list(_iter_blocks(document))
    except Exception as exc:
        raise damaged_package(_KIND, ".docx", exc) from exc
    builder = _SectionBuilder()
    report = ReadReport()
    pictures = PictureReader(limits, report)
    shown = [list(_pictures(document, block)) for block in blocks]
    with closing(pictures.read_grouped(shown, _KIND)) as read:
        for block, texts in zip(blocks, read, strict=True):
            _add_block(builder, block)
            for text in texts:
                builder.add_ocr_text(text)
    sections = builder.finish()
    if not sections and pictures.pictures_seen:
        raise pictures.nothing_readable(_KIND)
    metadata = {"file_type": "docx"}
    title = (document.core_properties.title or "").strip()
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=sections, pages=None, metadata=metadata, report=report)


def _add_block(builder: _SectionBuilder, block: Paragraph | Table) -> None:
    if isinstance(block, Table):
        builder.add_text("\n".join(_table_rows(block)))
        return
    text = block.text.strip()
    level = _heading_level(block, text) if text else None
    if level is not None:
        builder.start_heading(level, text)
    builder.add_text(text)


def _pictures(document: DocxDocument, block: Paragraph | Table) -> Iterator[Picture]:
    """(part name, a reader of its bytes) of each picture embedded in a paragraph or table; linked pictures (a
    path or address outside the file) are never fetched."""
    element = block._p if isinstance(block, Paragraph) else block._tbl
    for rel_id in element.xpath(".//a:blip/@r:embed"):
        part = document.part.related_parts.get(rel_id)
        if part is not None:
            yield str(part.partname), lambda part=part: part.blob


def _iter_blocks(document: DocxDocument) -> Iterator[Paragraph | Table]:
    """Body paragraphs and tables in document order, including those inside content controls."""
    yield from _iter_children(document.element.body, document)


def _iter_children(parent: BaseOxmlElement, document: DocxDocument) -> Iterator[Paragraph | Table]:
    for child in parent.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, document)
        elif child.tag == qn("w:tbl"):
            yield Table(child, document)
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _iter_children(content, document)


def _table_rows(table: Table) -> list[str]:
    """One line per row, cells joined by " | "; a horizontally merged cell appears once."""
    rows = []
    for row in table.rows:
        cells = [" ".join(_Cell(tc, table).text.split()) for tc in row._tr.tc_lst]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _heading_level(paragraph: Paragraph, text: str) -> int | None:
    """Heading level from the style ("Heading 2", "标题 2", Title), an outline level, or "第X章/节" text."""
    element = paragraph._p
    levels = element.xpath("./w:pPr/w:outlineLvl/@w:val")
    style = paragraph.style if element.pPr is not None and element.pPr.pStyle is not None else None
    while style is not None and not levels:
        match = _HEADING_STYLE.match((style.name or "").strip())
        if match:
            return max(1, int(match.group(1)))
        if (style.name or "").strip().lower() == "title":
            return 1
        levels = style.element.xpath("./w:pPr/w:outlineLvl/@w:val")
        style = style.base_style
    if levels and levels[0].isdigit() and int(levels[0]) < 9:
        return int(levels[0]) + 1
    chapter = _CN_CHAPTER.match(text)
    if chapter and len(text) <= 40 and not text.endswith(("。", "；", ";")):
        return 2 if chapter.group(1) == "节" else 1
    return None
