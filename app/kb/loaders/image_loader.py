"""Image files (.png .jpg/.jpeg .bmp .tif/.tiff .webp) read by OCR: one Section per picture, or per page of a
multi-page TIFF."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from app.kb.documents import LoadedDocument, Section
from app.kb.loaders._limits import LoadLimits
from app.kb.loaders.ocr import OcrText, OnPage, PictureReader, frame_count, open_picture

_KIND = ("图片", "the picture")
_PAGES_KIND = ("多页图片", "the multi-page picture")


def _load_image(path: Path, limits: LoadLimits, on_page: OnPage | None = None) -> LoadedDocument:
    """A single picture has no page number; the pages of a multi-page TIFF are numbered from 1."""
    loaded = LoadedDocument(sections=[], metadata={"file_type": "image"})
    reader = PictureReader(limits, loaded.report)
    with open_picture(path, limits, _KIND) as image:
        total = frame_count(image, limits)
        with closing(reader.read_frames(image, _KIND)) as pages:
            for number, result in pages:
                _add_page(loaded, number, result, total)
                if on_page is not None:
                    on_page(number, total)
    loaded.pages = total
    if not loaded.sections:
        raise reader.nothing_readable(_KIND, picture=True) if total == 1 else reader.nothing_readable(_PAGES_KIND)
    return loaded


def _add_page(loaded: LoadedDocument, number: int, result: OcrText | None, total: int) -> None:
    if result is None:
        loaded.report.empty_pages.append(number)
    else:
        loaded.report.ocr_pages += 1
        loaded.sections.append(Section(text=result.text, page=number if total > 1 else None, ocr=True))
