"""A picture file (or one page of a multi-page TIFF) as a PNG with a chunk's words highlighted.

The chunk's text came from OCR, so the page is read again by Tesseract as the loader read it (upright, grayscale,
at most the loader's pixel count) and the chunk is found in its word boxes, as on a scanned PDF page. What is shown
is the picture in its own colours, upright, within the preview's pixel cap.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from app.errors import NotFound
from app.kb.loaders._limits import LoadLimits
from app.kb.loaders.ocr import decode, frame, frame_count, open_picture, upright_on_white
from app.kb.preview.locate import highlight
from app.kb.preview.pdf_pages import RenderedPage, marked_page, ocr_glyphs

_KIND = ("图片", "the picture")


class PicturePages:
    def __init__(self, limits: LoadLimits, max_pixels: int) -> None:
        self.limits = limits
        self.max_pixels = max_pixels

    def render(self, path: Path, number: int, text: str | None = None) -> RenderedPage:
        """Page `number` (1-based; a picture that is not a multi-page TIFF has page 1 only) as a PNG, the words of
        `text` on it highlighted when given; NotFound for a page the file does not have."""
        with open_picture(path, self.limits, _KIND) as picture:
            count = frame_count(picture, self.limits)
            if not 1 <= number <= count:
                raise NotFound(
                    f"页码 {number} 不存在：该图片共 {count} 页 (page {number} does not exist: the picture has "
                    f"{count} pages)"
                )
            shown = _shown(frame(picture, number - 1, self.limits, _KIND), self.max_pixels)
            read = decode(picture, _KIND) if text is not None else None
        if read is None or text is None:
            return marked_page(shown, [], None, 1.0)
        boxes = highlight(ocr_glyphs(read, self.limits), text) if self.limits.ocr else []
        return marked_page(shown, boxes, "ocr" if boxes else "none", shown.width / read.width)


def _shown(picture: Image.Image, max_pixels: int) -> Image.Image:
    """The picture as a viewer shows it: upright (EXIF), transparency on white, in RGB, within `max_pixels`."""
    image = upright_on_white(picture).convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image
