"""Turn uploaded files into text sections: PDF, Word (DOCX), Markdown, plain text and HTML.

Every loader is deterministic and only reads: nothing in a document is executed, rendered or fetched (HTML
scripts are dropped, links are not followed, PDF JavaScript and forms are ignored). Failures are raised as the
`DocumentLoadError` subclasses from `app.kb.documents`, whose messages are shown to the user as the reason.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
import docx
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from docx.document import Document as DocxDocument
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from docx.oxml.xmlchemy import BaseOxmlElement
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from lxml import etree
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, PyPdfError

from app.kb.documents import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    LoadedDocument,
    Section,
    UnsupportedFileType,
)

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".pdf": "PDF",
    ".docx": "Word (.docx)",
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".txt": "plain text",
    ".html": "HTML",
    ".htm": "HTML",
}

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_WIDE = frozenset("WF")
_SENTENCE_END = "。！？!?.…"
_CLOSERS = "”’」』）)》〉】]\"'"


def load_document(path: Path, filename: str | None = None) -> LoadedDocument:
    """Read `path` as the type named by the extension of `filename` (the uploaded name) or of `path` itself."""
    name = filename or path.name
    ext = Path(name).suffix.lower()
    loader = _LOADERS.get(ext)
    if loader is None:
        raise UnsupportedFileType(_unsupported_message(name, ext))
    if path.stat().st_size == 0:
        raise EmptyDocument(f"'{name}' is empty (0 bytes).")
    doc = loader(path)
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


# ---------------------------------------------------------------------------------------------------- PDF


def _load_pdf(path: Path) -> LoadedDocument:
    """One Section per page (1-based `page`); the heading is the PDF outline entry in force on that page."""
    reader = _open_pdf(path)
    try:
        pages = list(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CorruptDocument(f"The PDF is damaged: its page tree cannot be read ({_reason(exc)}).") from exc
    if not pages:
        raise EmptyDocument("The PDF has no pages.")
    headings = _outline_headings(reader, len(pages))
    sections, failed = [], []
    for number, page in enumerate(pages, start=1):
        text = _page_text(page)
        if text is None:
            failed.append(number)
            continue
        sections.append(Section(text=text, page=number, heading=headings.get(number)))
    if len(failed) == len(pages):
        raise CorruptDocument("The PDF is damaged: no page's text could be read.")
    if not any(s.text.strip() for s in sections):
        raise EmptyDocument(
            "The PDF has no extractable text layer (probably scanned images); OCR is not supported, "
            "so upload a PDF with selectable text."
        )
    metadata = {"file_type": "pdf"}
    if failed:
        metadata["unreadable_pages"] = ",".join(map(str, failed))
    title = _pdf_title(reader)
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=sections, pages=len(pages), metadata=metadata)


def _open_pdf(path: Path) -> PdfReader:
    """Open leniently (`strict=False` repairs common damage) and try the empty user password."""
    try:
        reader = PdfReader(path, strict=False)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CorruptDocument(f"The PDF is damaged or not a PDF ({_reason(exc)}).") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except (DependencyError, NotImplementedError, PyPdfError) as exc:
            raise EncryptedDocument(
                f"The PDF is encrypted with a method that cannot be opened ({_reason(exc)})."
            ) from exc
        if opened == PasswordType.NOT_DECRYPTED:
            raise EncryptedDocument(
                "The PDF is encrypted and needs a password to open; remove the password and upload it again."
            )
    return reader


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _pdf_title(reader: PdfReader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return title.strip() if isinstance(title, str) and title.strip() else None


def _outline_headings(reader: PdfReader, page_count: int) -> dict[int, str]:
    """Map pages to bookmark paths: the first bookmark on the page, else the last one before it.

    The first bookmark on a page is usually near its top, so it describes the page better than the last one.
    """
    try:
        starts = sorted(_flatten_outline(reader, reader.outline, ()), key=lambda item: item[0])
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}
    first_on_page: dict[int, str] = {}
    last_on_page: dict[int, str] = {}
    for page, path in starts:
        first_on_page.setdefault(page, path)
        last_on_page[page] = path
    headings: dict[int, str] = {}
    in_force: str | None = None
    for page in range(1, page_count + 1):
        heading = first_on_page.get(page, in_force)
        if heading:
            headings[page] = heading
        in_force = last_on_page.get(page, in_force)
    return headings


def _flatten_outline(reader: PdfReader, items: list, parents: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """Yield (1-based page, "Parent > Child" path) for every bookmark; a nested list holds the children."""
    last_title: str | None = None
    for item in items:
        if isinstance(item, list):
            yield from _flatten_outline(reader, item, (*parents, last_title) if last_title else parents)
            continue
        last_title = " ".join(str(item.title or "").split())
        number = reader.get_destination_page_number(item)
        if last_title and number is not None and number >= 0:
            yield number + 1, " > ".join((*parents, last_title))


def _page_text(page: PageObject) -> str | None:
    """Extract one page, choosing between pypdf's two extraction modes; None when the page cannot be read.

    pypdf's default ("plain") mode emits text in content-stream order. Typesetters write multi-column pages
    column by column, so plain mode reads two-column prose in the right order, but it scatters tables: each
    table column may come out as its own run of lines. "layout" mode places text by its position on the page,
    which keeps table rows on one line and shows paragraph indents and gaps, but it reads across the columns of
    a multi-column page line by line, interleaving them. So layout mode is used unless the page looks like
    multi-column prose, or layout mode lost text (it drops rotated text), in which case plain mode is used.
    """
    try:
        plain = page.extract_text() or ""
    except Exception as exc:
        logger.warning("pypdf could not extract a page: %s", exc)
        return None
    try:
        layout = page.extract_text(extraction_mode="layout") or ""
    except Exception as exc:
        logger.debug("pypdf layout mode failed, using plain mode: %s", exc)
        layout = ""
    use_plain = _visible_chars(layout) < 0.9 * _visible_chars(plain) or _looks_multicolumn(layout)
    return clean_pdf_text(plain if use_plain else layout, layout=not use_plain)


def _visible_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


_GAP = re.compile(r"(?<=\S) {3,}(?=\S)")


def _looks_multicolumn(layout_text: str) -> bool:
    """True when many lines hold two to four wide runs of prose separated by gutters of 3+ spaces."""
    lines = [line.strip() for line in layout_text.splitlines() if line.strip()]
    if len(lines) < 8:
        return False
    prose_rows = 0
    for line in lines:
        parts = _GAP.split(line)
        if 2 <= len(parts) <= 4 and all(_is_prose(part) for part in parts):
            prose_rows += 1
    return prose_rows >= 0.3 * len(lines)


def _is_prose(part: str) -> bool:
    if sum(1 for ch in part if _is_wide(ch)) >= 10:
        return True
    letters = sum(1 for ch in part if ch.isalpha())
    return len(part) >= 20 and part.count(" ") >= 2 and letters >= 0.6 * len(part)


# ----------------------------------------------------------------------------------- PDF text clean-up

_CHAR_FIXES = str.maketrans(
    {
        "\u00a0": " ",
        "\u2002": " ",
        "\u2003": " ",
        "\u2009": " ",
        "\u00ad": "",  # soft hyphen
        "\ufeff": "",
        "\x00": "",
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\t": " ",
        "\r": "\n",
        "\f": "\n",
    }
)
_LIST_MARKER = re.compile(
    r"^(?:[•●○◆◇■□▪►✓\-*–—]\s|\(?\d{1,3}(?:[.)．](?!\d)|、)|\(?[a-zA-Z][.)]\s|[（(][一二三四五六七八九十\d]{1,3}[)）]"
    r"|[一二三四五六七八九十百]{1,3}[、.．]|第[一二三四五六七八九十百零〇\d]{1,4}[章节條条款部篇编]"
    r"|[①-⑳])"
)


@dataclass(frozen=True)
class _Line:
    text: str  # stripped, with runs of spaces collapsed
    indent: int
    width: int  # display width of the line's right edge (CJK counts 2)
    is_row: bool  # a table row: keep on its own line


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in _WIDE


def _display_width(text: str) -> int:
    return sum(2 if _is_wide(ch) else 1 for ch in text)


def clean_pdf_text(raw: str, layout: bool = False) -> str:
    """Rebuild paragraphs from pypdf's lines.

    pypdf ends a line wherever the PDF does, so a wrapped paragraph arrives as many lines and, in Chinese, a
    sentence is cut by newlines at arbitrary characters. A line is joined to the previous one when the previous
    line runs (nearly) to the page's usual right edge, i.e. it was wrapped; a short line ends a paragraph, and
    list markers, indents (layout mode) and table rows always start a new line. Blank lines are kept as
    paragraph breaks ("\n\n") unless the line before them was full. Joins drop a line-end hyphen inside a
    word, add no space between CJK characters and one space between Latin words.
    """
    raw = raw.translate(_CHAR_FIXES)
    lines = [_make_line(line, layout) if line.strip() else None for line in raw.split("\n")]
    real = [line for line in lines if line is not None]
    if not real:
        return ""
    ref = _reference_width(real)
    margin = min((line.indent for line in real if not line.is_row), default=0)
    blocks: list[str] = []
    prev: _Line | None = None
    blank_before = False
    for line in lines:
        if line is None:
            # Not a sure paragraph break: pypdf also emits blank lines for wide line spacing, so a full line
            # before the blank still joins the next one.
            blank_before = bool(blocks)
            continue
        if prev is not None and _continues(prev, line, ref, margin):
            blocks[-1] = _join(blocks[-1], line.text)
        else:
            if blocks:
                blocks[-1] += "\n\n" if blank_before else "\n"
            blocks.append(line.text)
        blank_before, prev = False, line
    return "".join(blocks).strip()


def _make_line(raw: str, layout: bool) -> _Line:
    body = raw.rstrip()
    stripped = body.lstrip()
    gaps = len(_GAP.findall(stripped)) if layout else 0
    numeric_cell = any(re.fullmatch(r"[-+]?[\d,.%]+", part) for part in _GAP.split(stripped)) if gaps else False
    return _Line(
        text=re.sub(r" {2,}", " ", stripped),
        indent=len(body) - len(stripped),
        width=_display_width(body),
        is_row=gaps >= 2 or (gaps == 1 and numeric_cell),
    )


def _reference_width(lines: list[_Line]) -> int:
    """The page's usual full-line width: the 90th percentile of its line widths (table rows excluded)."""
    widths = sorted(line.width for line in lines if not line.is_row) or sorted(line.width for line in lines)
    return widths[round(0.9 * (len(widths) - 1))]


def _continues(prev: _Line, line: _Line, ref: int, margin: int) -> bool:
    """Whether `line` continues the paragraph that `prev` is the last line of."""
    if prev.is_row or line.is_row or _LIST_MARKER.match(line.text):
        return False
    a, b = prev.text[-1], line.text[0]
    if _is_wide(a) and _is_wide(b) and len(line.text) <= 2 and b not in "（(":
        return True  # a lone character or two wrapped from a narrow table cell, a title or a full line
    if line.indent > max(prev.indent, margin) + 1:
        return False  # an indented first line starts a paragraph (layout mode only)
    if prev.indent > margin + 8:
        return False  # a centred or right-aligned line (a title, "单位：万元") is not wrapped prose
    if a == "-" and len(prev.text) > 1 and prev.text[-2].isalpha() and b.isalpha():
        return True
    full = ref >= 20 and prev.width >= 0.8 * ref
    last = prev.text.rstrip(_CLOSERS)[-1:]
    if last and last in _SENTENCE_END:
        return False  # maybe a paragraph end; a kept break after a full stop never cuts a sentence
    if b.islower() and (a.isalnum() or a in ",;)”’\"'"):
        return True  # a Latin sentence running on: proportional fonts make "full" lines vary in length
    return full


def _join(left: str, right: str) -> str:
    if left.endswith("-") and len(left) > 1 and left[-2].isalpha() and right[0].islower():
        return left[:-1] + right
    if left[-1] in "-/–—" or _is_wide(left[-1]) or _is_wide(right[0]):
        return left + right
    return f"{left} {right}"


# ---------------------------------------------------------------------------------------------------- DOCX

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_CN_CHAPTER = re.compile(r"^第[一二三四五六七八九十百零〇\d]{1,4}([章篇编部]|节)")


def _load_docx(path: Path) -> LoadedDocument:
    """Paragraphs and tables in body order; headings start new Sections and give them a heading path."""
    _reject_ole_file(path)
    try:
        document = docx.Document(str(path))
        blocks = list(_iter_blocks(document))
    except Exception as exc:  # zip, XML and package errors all mean a damaged file
        raise CorruptDocument(f"The Word file is damaged or not a .docx file ({_docx_reason(exc)}).") from exc
    builder = _SectionBuilder()
    for block in blocks:
        if isinstance(block, Table):
            builder.add_text("\n".join(_table_rows(block)))
            continue
        text = block.text.strip()
        level = _heading_level(block, text) if text else None
        if level is not None:
            builder.start_heading(level, text)
        builder.add_text(text)
    metadata = {"file_type": "docx"}
    title = (document.core_properties.title or "").strip()
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=builder.finish(), pages=None, metadata=metadata)


def _docx_reason(exc: Exception) -> str:
    if isinstance(exc, zipfile.BadZipFile):
        return "it is not a valid zip package"
    if isinstance(exc, PackageNotFoundError):
        return "it is not a zip package with a Word document inside"
    if isinstance(exc, etree.XMLSyntaxError):
        return f"broken XML: {_reason(exc)}"
    return f"{type(exc).__name__}: {_reason(exc)}"


def _reject_ole_file(path: Path) -> None:
    """Password-protected .docx files (and old .doc files) are OLE2 containers, not zip packages."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head != _OLE_MAGIC:
        return
    if "EncryptedPackage".encode("utf-16-le") in path.read_bytes():
        raise EncryptedDocument("The Word file is encrypted with a password; remove it and upload it again.")
    raise CorruptDocument("This is an old binary Word (.doc) file, not .docx; save it as .docx first.")


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


class _SectionBuilder:
    """Collects text blocks under the current heading path and cuts a Section whenever a heading starts."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._sections: list[Section] = []

    def start_heading(self, level: int, title: str) -> None:
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, " ".join(title.split())))

    def reset_headings(self) -> None:
        self._flush()
        self._stack = []

    def add_text(self, text: str) -> None:
        if text.strip():
            self._blocks.append(text.strip("\n"))

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        text = "\n\n".join(self._blocks).strip()
        if text:
            heading = " > ".join(title for _, title in self._stack) or None
            self._sections.append(Section(text=text, heading=heading))
        self._blocks = []


# ------------------------------------------------------------------------------------------------ Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _load_markdown(path: Path) -> LoadedDocument:
    """One Section per heading block; heading lines (without '#') stay as the first line of their block."""
    text, encoding = _decode_bytes(path.read_bytes())
    text, title = _strip_front_matter(text)
    builder = _SectionBuilder()
    for kind, level, content in _markdown_blocks(text):
        if kind == "heading":
            builder.start_heading(level, content)
        builder.add_text(content)
    metadata = {"file_type": "markdown", "encoding": encoding}
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=builder.finish(), pages=None, metadata=metadata)


def _strip_front_matter(text: str) -> tuple[str, str | None]:
    """Drop a leading YAML front-matter block ('---' ... '---'), keeping its `title:` as metadata."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return text, None
    for end in range(1, min(len(lines), 60)):
        if lines[end].strip() in ("---", "..."):
            title = None
            for line in lines[1:end]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "title" and value.strip():
                    title = value.strip().strip("\"'")
            return "\n".join(lines[end + 1 :]), title
    return text, None


def _markdown_blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """Yield ("heading", level, title) and ("text", 0, block) in order; '#' inside code fences is not a heading."""
    buffer: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            buffer.append(line)
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            buffer.append(line)
            continue
        atx = _ATX.match(line)
        setext = _SETEXT.match(line) if buffer and buffer[-1].strip() else None
        if atx and (atx.group(2) or "").strip():
            yield "text", 0, "\n".join(buffer)
            buffer = []
            yield "heading", len(atx.group(1)), atx.group(2).strip()
        elif setext and not _is_list_or_quote(buffer[-1]):
            title = buffer.pop().strip()
            yield "text", 0, "\n".join(buffer)
            buffer = []
            yield "heading", 1 if setext.group(1)[0] == "=" else 2, title
        else:
            buffer.append(line)
    yield "text", 0, "\n".join(buffer)


def _is_list_or_quote(line: str) -> bool:
    return bool(re.match(r"^ {0,3}(?:[-*+>]|\d+[.)])(?:\s|$)", line)) or line.startswith("    ")


# ---------------------------------------------------------------------------------------------- plain text


def _load_text(path: Path) -> LoadedDocument:
    text, encoding = _decode_bytes(path.read_bytes())
    text = _normalize_newlines(text)
    if _control_ratio(text) > 0.05:
        raise CorruptDocument("The file does not look like text (it contains binary data).")
    return LoadedDocument(
        sections=[Section(text=text.strip())], pages=None, metadata={"file_type": "txt", "encoding": encoding}
    )


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _control_ratio(text: str) -> float:
    if not text:
        return 0.0
    control = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t\f\v")
    return control / len(text)


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_GB_FAMILY = frozenset({"gb18030", "gbk", "gb2312", "hz", "cp936", "euc_cn"})
_BIG5_FAMILY = frozenset({"big5", "big5hkscs", "cp950"})


def _decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode text, Chinese first: BOM, strict UTF-8, then charset-normalizer with GB18030/Big5 preferred.

    GBK and GB2312 are read as GB18030, their superset. Short Chinese texts are ambiguous to detectors (GBK
    bytes also decode as Korean cp949 or as Big5), so among the least chaotic candidates a Chinese encoding
    wins, and GB18030 vs Big5 is settled by which decoding yields more of that encoding's common characters.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _normalize_newlines(data.decode(encoding, errors="replace")).lstrip("\ufeff"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = _detect_encoding(data)
    return data.decode(encoding, errors="replace"), encoding


def _detect_encoding(data: bytes) -> str:
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return "gb18030" if _decodes(data, "gb18030") else "latin-1"
    least = min(match.chaos for match in matches)
    close = [match.encoding for match in matches if match.chaos <= least + 0.02]
    gb = any(name in _GB_FAMILY for name in close) and _decodes(data, "gb18030")
    big5 = any(name in _BIG5_FAMILY for name in close) and _decodes(data, "big5")
    if gb and big5:
        return "big5" if _common_share(data, "big5") > _common_share(data, "gb18030") else "gb18030"
    if gb:
        return "gb18030"
    if big5:
        return "big5"
    best = matches[0].encoding
    return "gb18030" if best in _GB_FAMILY else best


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _common_share(data: bytes, encoding: str) -> float:
    """Share of non-ASCII characters in the encoding's frequent-character zone (GB2312 level 1 / Big5 A440-C67E)."""
    chars = [ch for ch in data.decode(encoding) if ord(ch) > 127]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if _is_common(ch, encoding)) / len(chars)


def _is_common(ch: str, encoding: str) -> bool:
    try:
        if encoding == "big5":
            raw = ch.encode("big5")
            return len(raw) == 2 and 0xA4 <= raw[0] <= 0xC6
        raw = ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(raw) == 2 and 0xB0 <= raw[0] <= 0xD7


# ---------------------------------------------------------------------------------------------------- HTML

_DROP_TAG_NAMES = "script style nav noscript template svg math iframe object embed canvas head select button"
_BLOCK_TAG_NAMES = (
    "p div section article main aside header footer ul ol li dl dt dd table thead tbody tfoot tr blockquote "
    "pre figure figcaption form fieldset address details summary hr caption body html"
)
_DROP_TAGS = frozenset(_DROP_TAG_NAMES.split())
_BLOCK_TAGS = frozenset(_BLOCK_TAG_NAMES.split())
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}
_SKIP_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)


def _load_html(path: Path) -> LoadedDocument:
    """Visible text only; h1-h6 start Sections, table rows become "A | B | C" lines, <pre> keeps its spacing."""
    data = path.read_bytes()
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as exc:
        raise CorruptDocument(f"The HTML file cannot be parsed ({_reason(exc)}).") from exc
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    walker = _HtmlWalker(title or None)
    walker.walk(soup)
    metadata = {"file_type": "html", "encoding": soup.original_encoding or "utf-8"}
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=walker.finish(), pages=None, metadata=metadata)


_LINE, _BLOCK, _PRE = "\x02", "\x03", "\x00"


class _HtmlWalker:
    """Depth-first walk that collects text with line/block break markers and cuts Sections at headings.

    Whitespace inside text nodes is collapsed as a browser does; breaks come only from <br>, table rows and
    block elements, and <pre> keeps its spacing.
    """

    def __init__(self, title: str | None) -> None:
        self._builder = _SectionBuilder()
        self._pieces: list[str] = []
        self._titled = bool(title)
        if title:  # text before the first heading sits under the page title
            self._builder.start_heading(0, title)

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, _SKIP_STRINGS):
                continue
            if isinstance(child, NavigableString):
                self._pieces.append(" ".join(str(child).split()) if str(child).strip() else " ")
            elif isinstance(child, Tag):
                self._visit(child)

    def finish(self) -> list[Section]:
        self._flush_text()
        return self._builder.finish()

    def _visit(self, tag: Tag) -> None:
        name = tag.name.lower()
        if name in _DROP_TAGS or tag.has_attr("hidden"):
            return
        if name in _HEADING_TAGS:
            self._heading(_HEADING_TAGS[name], " ".join(tag.get_text(" ").split()))
        elif name == "br":
            self._pieces.append(_LINE)
        elif name == "pre":
            self._pieces.append(f"{_BLOCK}{_PRE}{tag.get_text()}{_PRE}{_BLOCK}")
        elif name == "tr":
            cells = [" ".join(c.get_text(" ").split()) for c in tag.find_all(["td", "th"], recursive=False)]
            self._pieces.append(f"{' | '.join(cells)}{_LINE}")  # rows sit inside <table>, a block
        elif name in _BLOCK_TAGS:
            self._pieces.append(_BLOCK)
            self.walk(tag)
            self._pieces.append(_BLOCK)
        else:
            self.walk(tag)

    def _heading(self, level: int, title: str) -> None:
        self._flush_text()
        if not title:
            return
        if self._titled:  # the page title stops being the heading once the page has headings of its own
            self._builder.reset_headings()
            self._titled = False
        self._builder.start_heading(level, title)
        self._builder.add_text(title)

    def _flush_text(self) -> None:
        self._builder.add_text(_render_breaks("".join(self._pieces)))
        self._pieces = []


def _render_breaks(text: str) -> str:
    """Turn break markers into newlines: a run with a block break is a blank line, line breaks count up to 2."""
    parts = text.split(_PRE)
    for index in range(0, len(parts), 2):  # even parts are outside <pre>
        part = re.sub(rf" *([{_LINE}{_BLOCK}]+) *", r"\1", parts[index])
        parts[index] = re.sub(rf"[{_LINE}{_BLOCK}]+", _break_run, part)
    return "".join(parts).strip()


def _break_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return "\n\n" if _BLOCK in run else "\n" * min(len(run), 2)


_LOADERS: dict[str, Callable[[Path], LoadedDocument]] = {
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".txt": _load_text,
    ".html": _load_html,
    ".htm": _load_html,
}
