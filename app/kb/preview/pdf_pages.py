"""One PDF page rendered as a PNG with a chunk's lines highlighted.

Only the page asked for is opened and rendered (PDFium loads pages lazily), so a 300-page PDF costs what one page
does. The chunk is found on the page's text layer (PDFium's character boxes); a scanned page, whose text came from
OCR, is read again by Tesseract as the loader read it (same resolution) and the chunk is found in its word boxes.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pypdfium2
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageDraw, PngImagePlugin

from app.errors import InvalidInput, NotFound
from app.kb.loaders._limits import LoadLimits
from app.kb.loaders.ocr import OcrUnavailable, engine, ocr_words
from app.kb.loaders.pdf_loader import MIN_TEXT_LAYER_CHARS, PDFIUM_LOCK, render_for_ocr
from app.kb.preview.locate import Box, Glyph, highlight

PREVIEW_DPI = 120  # sharp enough to read body text on a screen; the pixel cap (preview_max_pixels) may lower it
_FILL = (255, 196, 0, 90)
_EDGE = (230, 110, 0, 220)
_PNG_COMPRESSION = 3  # zlib level: most of the size saving of the default (6) in half its time

Found = Literal["text_layer", "ocr", "none"]
_FOUND_KEY = "kbqa-highlight"  # the PNG text chunk that keeps `found`, so a cached image still tells it


@dataclass(frozen=True)
class Frame:
    """The visible part of a page (its crop box) in PDF points: where page coordinates start, and its size; and the
    page's /Rotate (clockwise degrees), which PDFium applies when it renders but not to the text layer's boxes."""

    left: float
    top: float
    width: float
    height: float
    rotation: int = 0

    @property
    def shown_width(self) -> float:
        return self.height if self.rotation in (90, 270) else self.width

    def box(self, left: float, bottom: float, right: float, top: float) -> Box:
        """A PDF rectangle (y upwards) as a Box from the frame's top-left corner, before the page's rotation."""
        return Box(left - self.left, self.top - top, right - self.left, self.top - bottom)

    def shown(self, box: Box) -> Box:
        """A Box from `box`, turned with the page as rendered (still from the top-left corner)."""
        if self.rotation == 90:
            return Box(self.height - box.bottom, box.left, self.height - box.top, box.right)
        if self.rotation == 180:
            return Box(self.width - box.right, self.height - box.bottom, self.width - box.left, self.height - box.top)
        if self.rotation == 270:
            return Box(box.top, self.width - box.right, box.bottom, self.width - box.left)
        return box


@dataclass(frozen=True)
class RenderedPage:
    png: bytes
    boxes: list[Box]  # the chunk's lines from the top-left corner of the page as shown, in PDF points (a
    # picture: in its pixels as OCR read it)
    found: Found  # where the chunk was found: on the text layer, in the OCR of the page, or not at all
    scale: float  # pixels of the PNG per unit of `boxes`


class PdfPages:
    def __init__(self, limits: LoadLimits, max_pixels: int) -> None:
        self.limits = limits
        self.max_pixels = max_pixels

    def render(self, path: Path, number: int, text: str | None = None) -> RenderedPage:
        """Page `number` (1-based) as a PNG, the lines of `text` on it highlighted when given; NotFound for a page
        the PDF does not have."""
        document = _open(path)
        try:
            image, frame, glyphs, scale = self._draw(document, number, want_glyphs=text is not None)
            boxes, found = self._locate(document, number, frame, glyphs, text) if text else ([], "none")
        finally:
            with PDFIUM_LOCK:
                document.close()
        return marked_page(image, boxes, found if text is not None else None, scale)

    def _draw(
        self, document: pypdfium2.PdfDocument, number: int, want_glyphs: bool
    ) -> tuple[Image.Image, Frame, list[Glyph], float]:
        with PDFIUM_LOCK:
            count = len(document)
            if not 1 <= number <= count:
                raise NotFound(
                    f"页码 {number} 不存在：该 PDF 共 {count} 页 (page {number} does not exist: the PDF has "
                    f"{count} pages)"
                )
            page = document[number - 1]
            try:
                left, bottom, right, top = page.get_bbox()  # the crop box, inherited ones included
                frame = Frame(left, top, right - left, top - bottom, page.get_rotation())
                glyphs = _text_layer(page, frame) if want_glyphs else []
                scale = min(PREVIEW_DPI / 72, (self.max_pixels / max(frame.width * frame.height, 1.0)) ** 0.5)
                image = page.render(scale=scale).to_pil().convert("RGB")
            finally:
                page.close()
        return image, frame, glyphs, scale

    def _locate(
        self, document: pypdfium2.PdfDocument, number: int, frame: Frame, glyphs: list[Glyph], text: str
    ) -> tuple[list[Box], Found]:
        boxes = _shown_lines(glyphs, text, frame)
        if boxes:
            return boxes, "text_layer"
        if len(glyphs) >= MIN_TEXT_LAYER_CHARS or not self.limits.ocr:
            return [], "none"
        boxes = highlight(self._ocr_glyphs(document, number, frame), text)
        return boxes, "ocr" if boxes else "none"

    def _ocr_glyphs(self, document: pypdfium2.PdfDocument, number: int, frame: Frame) -> list[Glyph]:
        """The page's characters as OCR reads them at the loader's resolution, in points."""
        image = render_for_ocr(document, number, self.limits.ocr_dpi)
        if image is None:
            return []
        pixels_per_point = image.width / max(frame.shown_width, 1.0)  # OCR reads the page as shown
        return [Glyph(g.char, _scaled(g.box, 1 / pixels_per_point)) for g in ocr_glyphs(image, self.limits)]


def ocr_glyphs(image: Image.Image, limits: LoadLimits) -> list[Glyph]:
    """The characters OCR reads in `image`, in its pixels, each word's box shared evenly among its characters
    (Tesseract reports each Chinese character as a word of its own)."""
    try:
        tsv = engine(limits.ocr_languages).tsv(image, limits.ocr_page_timeout_s)
    except (OcrUnavailable, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise InvalidInput(f"无法对该页做 OCR 以标出引用位置 (the page could not be read by OCR: {exc})") from exc
    glyphs = []
    for word in ocr_words(tsv):
        step = word.width / len(word.text)
        for k, ch in enumerate(word.text):
            left = word.left + k * step
            glyphs.append(Glyph(ch, Box(left, word.top, left + step, word.top + word.height)))
    return glyphs


def marked_page(image: Image.Image, boxes: list[Box], found: Found | None, scale: float) -> RenderedPage:
    """`image` as a PNG with `boxes` (in units of which `scale` pixels make one) marked, keeping `found` in it
    (None: no chunk was asked for)."""
    if boxes:
        _mark(image, boxes, scale)
    info = PngImagePlugin.PngInfo()
    if found is not None:
        info.add_text(_FOUND_KEY, found)
    png = io.BytesIO()
    image.save(png, format="PNG", compress_level=_PNG_COMPRESSION, pnginfo=info)
    return RenderedPage(png.getvalue(), boxes, found or "none", scale)


def _open(path: Path) -> pypdfium2.PdfDocument:
    try:
        with PDFIUM_LOCK:
            return pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as exc:
        raise InvalidInput(f"无法打开该 PDF 以显示页面 (the PDF cannot be opened to show its pages: {exc})") from exc


def _text_layer(page: pypdfium2.PdfPage, frame: Frame) -> list[Glyph]:
    """The page's visible characters with their boxes (the font's full height, so lines join up), before the
    page's rotation."""
    textpage = page.get_textpage()
    try:
        glyphs = []
        for index in range(textpage.count_chars()):
            char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, index))
            if char.isspace() or not char.isprintable():
                continue
            glyphs.append(Glyph(char, frame.box(*textpage.get_charbox(index, loose=True))))
        return glyphs
    finally:
        textpage.close()


def _shown_lines(glyphs: list[Glyph], text: str, frame: Frame) -> list[Box]:
    """The chunk's line boxes on the page as shown. Glyphs join into a line where their text runs across: in the
    page's own coordinates (text that /Rotate turns on its side), or on the page as shown (a landscape page whose
    content is drawn turned so that /Rotate sets it upright); whichever gives fewer lines."""
    lines = [frame.shown(box) for box in highlight(glyphs, text)]
    if not frame.rotation:
        return lines
    turned = highlight([Glyph(g.char, frame.shown(g.box)) for g in glyphs], text)
    return min(lines, turned, key=len)


def _scaled(box: Box, factor: float) -> Box:
    return Box(box.left * factor, box.top * factor, box.right * factor, box.bottom * factor)


def _mark(image: Image.Image, boxes: list[Box], scale: float) -> None:
    """Semi-transparent boxes over the lines, blended into `image` in place."""
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        scaled = _scaled(box, scale)
        draw.rectangle((scaled.left, scaled.top, scaled.right, scaled.bottom), fill=_FILL, outline=_EDGE, width=2)
    image.paste(Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB"))


def found_in(png: bytes) -> Found | None:
    """Where the chunk was found, as a rendered page's PNG keeps it (None for a page rendered without one)."""
    with Image.open(io.BytesIO(png)) as image:
        found = image.info.get(_FOUND_KEY)
    return found if found in ("text_layer", "ocr", "none") else None
