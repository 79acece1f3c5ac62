"""PDF loading with pypdf: one Section per page, a choice between pypdf's extraction modes, and paragraph repair.
A page without a usable text layer (a scan) is rendered with pypdfium2 and read by OCR."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pypdfium2
from PIL import Image
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, LimitReachedError, PyPdfError

from app.kb.documents import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    LoadedDocument,
    ReadReport,
    Section,
)
from app.kb.loaders._common import _reason
from app.kb.loaders._limits import LoadLimits, check_text_chars, too_large
from app.kb.loaders.ocr import (
    MAX_OCR_PIXELS,
    OcrText,
    OnPage,
    PictureReader,
    Recognised,
    recognise_in_order,
    worker_count,
)

logger = logging.getLogger(__name__)

_WIDE = frozenset("WF")
_SENTENCE_END = "。！？!?.…"
_CLOSERS = "”’」』）)》〉】]\"'"
_KIND = ("PDF", "the PDF")
# A text layer with fewer visible characters than this is not the page's text when the page draws a picture (a
# scan with its page number as text); a page with no text layer at all is always rendered for OCR.
MIN_TEXT_LAYER_CHARS = 20
PDFIUM_LOCK = threading.Lock()  # PDFium is not thread-safe: one call into it at a time in the process


def _load_pdf(path: Path, limits: LoadLimits, on_page: OnPage | None = None) -> LoadedDocument:
    """One Section per page (1-based `page`); the heading is the PDF outline entry in force on that page.

    pypdf bounds what one stream may inflate to and how much a content stream may hold (its LimitReachedError);
    the page count and the text extracted are bounded here. Pages with a usable text layer are read first, then
    the scanned ones by OCR, each reported to `on_page` as it is done.
    """
    reader = _open_pdf(path)
    _check_page_count(_declared_page_count(reader), limits)
    try:
        pages = list(reader.pages)
    except LimitReachedError as exc:
        raise _pypdf_limit(exc) from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CorruptDocument(f"The PDF is damaged: its page tree cannot be read ({_reason(exc)}).") from exc
    if not pages:
        raise EmptyDocument("The PDF has no pages.")
    _check_page_count(len(pages), limits)
    headings = _outline_headings(reader, len(pages))
    sections, failed, scanned = [], [], {}
    report = ReadReport()
    chars = done = 0
    for number, page in enumerate(pages, start=1):
        text = _page_text(page)
        if text is None:
            failed.append(number)
        elif _needs_ocr(page, text):
            scanned[number] = text
            continue
        else:
            chars += len(text)
            check_text_chars(chars, limits, (f"PDF 的前 {number} 页", f"the first {number} pages of the PDF"))
            sections.append(Section(text=text, page=number, heading=headings.get(number)))
            report.text_pages += 1
        done += 1
        if on_page is not None:
            on_page(done, len(pages))
    if len(failed) == len(pages):
        raise CorruptDocument("The PDF is damaged: no page's text could be read.")
    reader_ocr = PictureReader(limits, report)
    with closing(_read_scans(path, list(scanned), limits, reader_ocr)) as scans:
        for number, result in scans:
            text, ocr = (result.text, True) if result is not None else (scanned[number], False)
            if text.strip():
                chars += len(text)
                check_text_chars(chars, limits, ("PDF 扫描页识别出", "the scanned pages of the PDF"))
                sections.append(Section(text=text, page=number, heading=headings.get(number), ocr=ocr))
                if ocr:
                    report.ocr_pages += 1
                else:
                    report.text_pages += 1
            else:
                report.empty_pages.append(number)
            done += 1
            if on_page is not None:
                on_page(done, len(pages))
    sections.sort(key=lambda section: section.page or 0)
    report.empty_pages = sorted(report.empty_pages + failed)
    if not any(s.text.strip() for s in sections):
        raise reader_ocr.nothing_readable(_KIND)
    metadata = {"file_type": "pdf"}
    if failed:
        metadata["unreadable_pages"] = ",".join(map(str, failed))
    title = _pdf_title(reader)
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=sections, pages=len(pages), metadata=metadata, report=report)


def _needs_ocr(page: PageObject, text: str) -> bool:
    """A page is read by OCR when its text layer is empty, or holds only a few characters and the page draws a
    picture. Characters PDF fonts leave without a Unicode meaning (U+FFFD, private-use, controls) do not count."""
    usable = sum(1 for ch in text if not ch.isspace() and ch != "\ufffd" and unicodedata.category(ch)[0] != "C")
    if usable == 0:
        return True
    if usable >= MIN_TEXT_LAYER_CHARS:
        return False
    try:
        return len(page.images) > 0
    except Exception as exc:  # a broken image dictionary: the page's text layer is all there is
        logger.debug("pypdf could not list a page's images: %s", exc)
        return False


def _read_scans(
    path: Path, numbers: list[int], limits: LoadLimits, reader: PictureReader
) -> Iterator[tuple[int, OcrText | None]]:
    """OCR of each page in `numbers` (1-based), in that order, rendered with PDFium at ocr.dpi, or fewer dots for a
    page larger than MAX_OCR_PIXELS at that resolution (a poster, or a hostile 200-inch page).

    `worker_count` pages are rendered and recognised at once (`recognise_in_order`: PDFium under its lock), at most
    twice that many ahead of the page the caller is given; each page is counted in the report in page order.
    Closing the generator (the caller stopped: a document deleted) cancels the pages not begun and waits for those
    being read.
    """
    if not numbers:
        return
    if not limits.ocr:
        yield from ((number, None) for number in numbers)
        return
    try:
        with PDFIUM_LOCK:
            document = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as exc:
        logger.warning("PDFium cannot open the PDF to render its scanned pages: %s", exc)
        yield from ((number, None) for number in numbers)
        return

    def recognise(number: int) -> Recognised:
        image = render_for_ocr(document, number, limits.ocr_dpi)
        return reader.recognise(image) if image is not None else Recognised()

    pages = recognise_in_order(numbers, recognise, worker_count(limits, len(numbers)))
    try:
        for number, recognised in pages:
            yield number, reader.count(recognised)
    finally:
        pages.close()
        with PDFIUM_LOCK:
            document.close()


def render_for_ocr(document: pypdfium2.PdfDocument, number: int, dpi: int) -> Image.Image | None:
    """Page `number` (1-based) in grey at `dpi`, or fewer dots where that would pass MAX_OCR_PIXELS; None when
    PDFium cannot render it. The source preview renders with this too, so its OCR sees what the loader saw."""
    try:
        with PDFIUM_LOCK:
            page = document[number - 1]
            try:
                width, height = page.get_size()
                scale = min(dpi / 72, (MAX_OCR_PIXELS / max(width * height, 1.0)) ** 0.5)
                return page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
    except (pypdfium2.PdfiumError, ValueError, MemoryError) as exc:
        logger.warning("PDFium could not render page %d for OCR: %s", number, exc)
        return None


def _declared_page_count(reader: PdfReader) -> int:
    """The page count the page tree declares, read before the tree itself (0 when it cannot be read)."""
    try:
        return int(reader.root_object["/Pages"]["/Count"])  # type: ignore[index]
    except Exception:
        return 0


def _check_page_count(pages: int, limits: LoadLimits) -> None:
    if pages > limits.max_pdf_pages:
        raise too_large(
            f"PDF 有 {pages:,} 页", f"the PDF has {pages:,} pages", "max_pdf_pages", f"{limits.max_pdf_pages:,}"
        )


def _pypdf_limit(exc: LimitReachedError) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"PDF 中的数据超出了 pypdf 的安全上限：某个数据流解压后过大，或内容过于复杂（{_reason(exc)}）。 "
        f"(The PDF goes past a safety limit of pypdf: a stream inflates too far or holds too much ({_reason(exc)}).)"
    )


def _open_pdf(path: Path) -> PdfReader:
    """Open leniently (`strict=False` repairs common damage) and try the empty user password."""
    try:
        reader = PdfReader(path, strict=False)
    except LimitReachedError as exc:
        raise _pypdf_limit(exc) from exc
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
    except LimitReachedError as exc:
        raise _pypdf_limit(exc) from exc
    except Exception as exc:
        logger.warning("pypdf could not extract a page: %s", exc)
        return None
    try:
        layout = page.extract_text(extraction_mode="layout") or ""
    except LimitReachedError as exc:
        raise _pypdf_limit(exc) from exc
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
