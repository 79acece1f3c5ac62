"""Text from pictures (OCR): scanned PDF pages, image files, and pictures inside Word and PowerPoint files.

The engine is Debian's Tesseract 5 (`tesseract-ocr` with the `chi_sim` and `eng` packs, installed by
scripts/setup.sh); its models are files of those packages, never downloaded. It was measured against
rapidocr-onnxruntime 1.4.4 (PP-OCRv4) on the same generated pages (scripts/bench_ocr.py, docs/benchmarks.md): nearly
as accurate on printed Chinese and English (0.997 of characters against 0.999 at 200 DPI), half the CPU time per
page, and it keeps the spaces between English words, which PP-OCRv4 often drops ("componentranks": a fifth of the
words wrong), breaking keyword search.

Tesseract runs as one child process per page or picture, on one thread (OMP_THREAD_LIMIT=1: with two OpenMP
threads a page took ten times longer on the busy 2-core machine), and is killed past `settings.ocr.page_timeout_s`:
a page that takes too long costs at most that and counts as unreadable. The scanned pages of one PDF, the pages of a
multi-page TIFF and the pictures inside one Word or PowerPoint file are read by `settings.ocr.workers` such processes
at once (0: one per core; `recognise_in_order`), each counted in the document's order. The command line is called
directly rather than through pytesseract, which can give the child its thread limit only by changing the environment
of the whole server (and with it of the LLM workers it starts). The engine (binary and language packs) is looked up
once per process, on first use.

A picture is decoded only after its size is checked against `settings.ocr.max_image_pixels` (a decompression bomb is
refused before it allocates), and reduced to at most an A4 page at 300 DPI before OCR.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import subprocess
import threading
import unicodedata
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageOps, UnidentifiedImageError

from app.kb.documents import CorruptDocument, DocumentLoadError, DocumentTooLarge, NothingReadable, ReadReport
from app.kb.loaders._common import Kind, _reason
from app.kb.loaders._limits import LoadLimits, too_large
from app.settings import setting_ref

logger = logging.getLogger(__name__)

OnPage = Callable[[int, int], None]  # (pages done, pages in all): called as each page of a document is read
Picture = tuple[str, Callable[[], bytes]]  # a picture inside a document: its identity and a reader of its bytes
Item = TypeVar("Item")
Result = TypeVar("Result")
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-chi-sim"
LANGUAGES_SETTING = setting_ref("ocr.languages")
MAX_OCR_PIXELS = 9_000_000  # an A4 page at 300 DPI (8.7 MP): larger pictures are reduced before OCR
_MIN_PICTURE_SIDE = 16  # pictures narrower or lower than this (bullets, rules, spacers) hold no readable text
# Tesseract reads a page as one column of text of varying sizes (--psm 4): its automatic layout analysis
# (--psm 3) drops the first characters of Chinese lines on sparse pages and whole lines on some, and one uniform
# block (--psm 6) garbles a heading set larger than the body.
_PAGE_SEGMENTATION = "4"
_INK_LEVEL = 60  # a pixel this much darker than the page's median is ink
_BLANK_INK_SHARE = 0.0001  # below this share of ink pixels (in a 600-pixel thumbnail) a page is blank


class OcrUnavailable(Exception):
    """Tesseract or one of the configured language packs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class OcrText:
    text: str
    confidence: float  # mean word confidence, 0-1, weighted by the characters of each word


@dataclass(frozen=True)
class Tesseract:
    binary: str
    languages: str

    def read(self, image: Image.Image, timeout_s: float) -> OcrText:
        """The text of `image` (grayscale), a paragraph per line; subprocess.TimeoutExpired past `timeout_s`."""
        return parse_tsv(self.tsv(image, timeout_s))

    def tsv(self, image: Image.Image, timeout_s: float) -> str:
        """Tesseract's TSV of `image`: a row per word with its box (see `parse_tsv`, `ocr_words`)."""
        png = io.BytesIO()
        image.save(png, format="PNG", compress_level=1)
        command = [self.binary, "stdin", "stdout", "-l", self.languages, "--psm", _PAGE_SEGMENTATION, "tsv"]
        done = subprocess.run(
            command, input=png.getvalue(), capture_output=True, timeout=timeout_s, env=_child_env(), check=False
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit {done.returncode}")
        return done.stdout.decode("utf-8", "replace")


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


_engines: dict[str, Tesseract] = {}
_engines_lock = threading.Lock()


def engine(languages: str) -> Tesseract:
    """The Tesseract to read `languages` ("chi_sim+eng") with, looked up once per process; OcrUnavailable when
    the binary or a language pack is missing."""
    with _engines_lock:
        if languages not in _engines:
            _engines[languages] = _find_engine(languages)
        return _engines[languages]


def _find_engine(languages: str) -> Tesseract:
    binary = shutil.which("tesseract")
    if binary is None:
        raise OcrUnavailable(
            f"OCR 引擎 Tesseract 没有安装（{INSTALL_HINT}）。 "
            f"(The OCR engine, Tesseract, is not installed: {INSTALL_HINT}.)"
        )
    listed = subprocess.run(
        [binary, "--list-langs"], capture_output=True, text=True, timeout=30, env=_child_env(), check=False
    )
    installed = {line.strip() for line in listed.stdout.splitlines()[1:]}
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        packs = " ".join(f"tesseract-ocr-{lang.replace('_', '-').lower()}" for lang in missing)
        raise OcrUnavailable(
            f"OCR 缺少语言包 {'+'.join(missing)}（apt-get install {packs}，或修改设置 {LANGUAGES_SETTING}） "
            f"(OCR lacks the language packs {'+'.join(missing)}: apt-get install {packs}, "
            f"or change {LANGUAGES_SETTING})"
        )
    return Tesseract(binary, languages)


def parse_tsv(tsv: str) -> OcrText:
    """Tesseract's TSV (one row per word, with its block, paragraph and line) as text: a paragraph per line, its
    wrapped lines joined again. Words and lines join with a space, except next to a CJK character (Tesseract
    reports each Chinese character or word as a word of its own) and after a hyphen that split a word."""
    paragraphs: dict[tuple[str, str], list[str]] = {}
    weighted = chars = 0.0
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) != 12 or cells[0] != "5" or not cells[11].strip():
            continue
        word, confidence = cells[11].strip(), max(float(cells[10]), 0.0) / 100
        paragraphs.setdefault((cells[2], cells[3]), []).append(word)  # (block, paragraph): lines in order
        weighted += confidence * len(word)
        chars += len(word)
    text = "\n".join(_join(words) for words in paragraphs.values())
    return OcrText(text=text, confidence=weighted / chars if chars else 0.0)


@dataclass(frozen=True)
class OcrWord:
    """A word Tesseract read and its box in the picture's pixels."""

    text: str
    left: int
    top: int
    width: int
    height: int


def ocr_words(tsv: str) -> list[OcrWord]:
    """The words of Tesseract's TSV with their boxes, in reading order."""
    words = []
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            left, top, width, height = (int(cell) for cell in cells[6:10])
            words.append(OcrWord(cells[11].strip(), left, top, width, height))
    return words


def _join(words: list[str]) -> str:
    text = words[0]
    for word in words[1:]:
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and word[0].islower():
            text = text[:-1] + word
        elif _is_wide(text[-1]) or _is_wide(word[0]):
            text += word
        else:
            text += f" {word}"
    return text


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


# ------------------------------------------------------------------------------------------------- pictures


def open_picture(source: Path | bytes, limits: LoadLimits, kind: Kind) -> Image.Image:
    """Open a picture without decoding it, refusing one past `settings.ocr.max_image_pixels`: Pillow reads only the
    header here, so a 20000 x 20000 PNG costs nothing before it is refused. Unknown bytes are a CorruptDocument."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own bound is checked below
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as exc:  # past twice Pillow's own bound: it does not say the size
        more = f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        raise _too_many_pixels(kind, (f"超过 {more} 个", f"more than {more}"), limits) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptDocument(
            f"{kind[0]}已损坏，或不是能识别的图片（{_reason(exc)}）。 "
            f"({kind[1][:1].upper() + kind[1][1:]} is damaged or not a picture that can be read ({_reason(exc)}).)"
        ) from exc
    try:
        check_pixels(image, limits, kind)
    except DocumentTooLarge:
        image.close()
        raise
    return image


def check_pixels(image: Image.Image, limits: LoadLimits, kind: Kind) -> None:
    width, height = image.size
    if width * height > limits.ocr_max_image_pixels:
        size = f"{width:,} x {height:,}"
        raise _too_many_pixels(kind, (size, size), limits)


def _too_many_pixels(kind: Kind, size: tuple[str, str], limits: LoadLimits) -> DocumentTooLarge:
    return too_large(
        f"{kind[0]}有 {size[0]} 像素",
        f"{kind[1]} has {size[1]} pixels",
        "ocr_max_image_pixels",
        f"{limits.ocr_max_image_pixels:,}",
    )


def upright_on_white(image: Image.Image) -> Image.Image:
    """The picture as a viewer shows it: upright (as its EXIF orientation says), any transparency on white."""
    upright = ImageOps.exif_transpose(image) or image
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, "white")
        flat.alpha_composite(rgba)
        return flat
    return upright


def decode(image: Image.Image, kind: Kind) -> Image.Image:
    """The picture upright (as its EXIF orientation says), on white, grayscale, at most MAX_OCR_PIXELS."""
    try:
        image.load()
        gray = upright_on_white(image).convert("L")
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's "image file is truncated" is an OSError
        raise CorruptDocument(
            f"{kind[0]}已损坏，图片数据不完整或无法解码（{_reason(exc)}）。 "
            f"({kind[1][:1].upper() + kind[1][1:]} is damaged: the picture's data is cut short or cannot be "
            f"decoded ({_reason(exc)}).)"
        ) from exc
    return reduced(gray)


def reduced(image: Image.Image) -> Image.Image:
    pixels = image.width * image.height
    if pixels <= MAX_OCR_PIXELS:
        return image
    scale = (MAX_OCR_PIXELS / pixels) ** 0.5
    return image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.BOX)


def worth_reading(image: Image.Image) -> bool:
    """Whether a picture inside a document is big enough to hold text (not a bullet, a rule or a spacer)."""
    return min(image.size) >= _MIN_PICTURE_SIDE


def frame_count(image: Image.Image, limits: LoadLimits) -> int:
    """The pages of a multi-page TIFF (a fax, a scanner's batch) to read, at most `settings.limits.max_pdf_pages`; other
    formats have one (an animation's later frames are not pages)."""
    count = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    return min(count, limits.max_pdf_pages)


def frame(image: Image.Image, index: int, limits: LoadLimits, kind: Kind) -> Image.Image:
    """`image` sought to page `index` (0-based), its size checked as `open_picture` checks the first: one page
    at a time."""
    if image.tell() != index:
        image.seek(index)
    check_pixels(image, limits, kind)
    return image


def decoded_frame(image: Image.Image, index: int, limits: LoadLimits, kind: Kind) -> Image.Image:
    """Page `index` (0-based) of a picture `decode`d (see `frame`)."""
    return decode(frame(image, index, limits, kind), kind)


def looks_blank(image: Image.Image) -> bool:
    """True when a page holds no ink: no pixel of a 600-pixel thumbnail is much darker than the page's median
    (the averaging of the thumbnail drowns a scanner's noise). Blank pages are not sent to OCR."""
    thumbnail = image.copy()
    thumbnail.thumbnail((600, 600), Image.Resampling.BOX)
    histogram = thumbnail.histogram()
    total = sum(histogram)
    seen, median = 0, 255
    for level, count in enumerate(histogram):
        seen += count
        if seen * 2 >= total:
            median = level
            break
    ink = sum(histogram[: max(0, median - _INK_LEVEL)])
    return ink < _BLANK_INK_SHARE * total


# ------------------------------------------------------------------------------------------------- a document


@dataclass(frozen=True)
class Recognised:
    """What OCR of one picture came to: its text (None: nothing read), or why it could not run."""

    text: OcrText | None = None
    unavailable: str | None = None  # OcrUnavailable's message
    timed_out: bool = False


def worker_count(limits: LoadLimits, pages: int) -> int:
    """How many pages of one document OCR reads at once: `settings.ocr.workers`, 0 meaning this process's cores,
    never more than the pages."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(limits.ocr_workers or cores, pages))


def recognise_in_order(
    items: Iterable[Item], recognise: Callable[[Item], Result], workers: int
) -> Iterator[tuple[Item, Result]]:
    """`recognise` of each of `items` on `workers` threads (Tesseract runs as a child process), each (item, result)
    yielded in the order of `items`; an exception of `recognise` is raised when its item's turn comes.

    At most 2 x `workers` items are submitted ahead of the one the caller is given, and `items` is drawn from only
    as that room frees up. A loader renders or decodes its picture inside `recognise`, so a decoded picture exists
    only while a worker reads it: at most `workers` at once, whatever the document holds; the results waiting in
    the look-ahead are text. `recognise` must change nothing shared (`PictureReader.recognise`): the caller counts
    each result as it is given it (`PictureReader.count`), in order. Closing the generator (the caller stopped: a
    document deleted, or it failed) cancels the items not begun and waits for those being read, so no thread
    outlives it.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ocr-page")
    try:
        waiting = iter(items)
        ahead: deque[tuple[Item, Future[Result]]] = deque()
        for item in itertools.islice(waiting, 2 * workers):
            ahead.append((item, pool.submit(recognise, item)))
        while ahead:
            item, future = ahead.popleft()
            result = future.result()
            for following in itertools.islice(waiting, 1):
                ahead.append((following, pool.submit(recognise, following)))
            yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class PictureReader:
    """Reads the pictures of one document (its scanned pages, its frames or the pictures in it) within its
    limits, and keeps the account of what was read in `report`."""

    def __init__(self, limits: LoadLimits, report: ReadReport) -> None:
        self.limits = limits
        self.report = report
        self.unavailable: str | None = None  # why OCR cannot run here, once it was found not to
        self.timeouts = 0
        self._pictures: set[str] = set()  # the pictures inside the document seen so far, by content or part name

    def recognise(self, image: Image.Image) -> Recognised:
        """OCR of a decoded grayscale picture, not yet counted in the report: it changes nothing, so several
        pages of one document may be recognised at once and then counted (`count`) in page order."""
        if not self.limits.ocr or self.unavailable or looks_blank(image):
            return Recognised()
        try:
            tesseract = engine(self.limits.ocr_languages)
            result = tesseract.read(image, self.limits.ocr_page_timeout_s)
        except OcrUnavailable as exc:
            return Recognised(unavailable=str(exc))
        except subprocess.TimeoutExpired:
            logger.warning("OCR of a page ran past ocr.page_timeout_s=%s s", self.limits.ocr_page_timeout_s)
            return Recognised(timed_out=True)
        except (OSError, RuntimeError) as exc:
            logger.warning("OCR failed on a page: %s", exc)
            return Recognised()
        return Recognised(result if result.text.strip() else None)

    def count(self, recognised: Recognised) -> OcrText | None:
        """Count one picture's OCR in the report; its text, or None."""
        if recognised.unavailable and not self.unavailable:
            self.unavailable = recognised.unavailable
            logger.warning("OCR cannot run: %s", recognised.unavailable)
        self.timeouts += recognised.timed_out
        if recognised.text is not None:
            self.report.ocr_confidences.append(recognised.text.confidence)
        return recognised.text

    @property
    def pictures_seen(self) -> int:
        return len(self._pictures)

    def read_frames(self, image: Image.Image, kind: Kind) -> Iterator[tuple[int, OcrText | None]]:
        """Each page of a picture `frame_count` counts (1-based) and its text, or None, counted in page order. The
        pages are read at once as a PDF's scans are (`recognise_in_order`); one file seeks from page to page, so
        each is found and decoded under a lock, then recognised outside it. Decoded pages held: one per worker, and
        the file's own copy of the page it last decoded."""
        seeking = threading.Lock()

        def recognise(number: int) -> Recognised:
            with seeking:
                page = decoded_frame(image, number - 1, self.limits, kind)
            return self.recognise(page)

        total = frame_count(image, self.limits)
        with closing(recognise_in_order(range(1, total + 1), recognise, worker_count(self.limits, total))) as pages:
            for number, recognised in pages:
                yield number, self.count(recognised)

    def read_pictures(self, pictures: list[Picture], kind: Kind) -> Iterator[OcrText | None]:
        """OCR of the pictures inside a Word or PowerPoint file, in their order: one result each, the text or None,
        counted in the report. A picture is read once however often the document shows it (a logo on every slide),
        at most settings.ocr.max_pictures of them, and skipped when it is too small to hold text or cannot be decoded
        within the limits (the rest of the document still loads). Which ones are read is settled first, in order;
        those are then decoded and recognised on `recognise_in_order`'s workers."""
        chosen = [self._choose(key) for key, _ in pictures]
        blobs = [blob for (_, blob), read in zip(pictures, chosen, strict=True) if read]
        recognised = recognise_in_order(
            blobs, lambda blob: self._recognise_picture(blob, kind), worker_count(self.limits, len(blobs))
        )
        return self._counted_pictures(chosen, recognised)

    def read_grouped(self, groups: list[list[Picture]], kind: Kind) -> Iterator[list[str]]:
        """`read_pictures` of pictures in groups (a paragraph's, a slide's): for each group, in order, the texts
        read from its pictures."""
        with closing(self.read_pictures([picture for group in groups for picture in group], kind)) as read:
            for group in groups:
                yield [result.text for result in itertools.islice(read, len(group)) if result is not None]

    def _counted_pictures(
        self, chosen: list[bool], recognised: Iterator[tuple[Callable[[], bytes], Recognised | None]]
    ) -> Iterator[OcrText | None]:
        with closing(recognised):
            for read in chosen:
                yield self._count_picture(next(recognised)[1]) if read else None

    def _choose(self, key: str) -> bool:
        """Whether a picture is to be read: not seen before, OCR on and within settings.ocr.max_pictures."""
        if key in self._pictures:
            return False
        self._pictures.add(key)
        if not self.limits.ocr or len(self._pictures) > self.limits.ocr_max_pictures:
            self.report.skipped_pictures += 1
            return False
        return True

    def _recognise_picture(self, blob: Callable[[], bytes], kind: Kind) -> Recognised | None:
        """`recognise` of a picture inside a document, on a worker; None when it is skipped (too small to hold text,
        or not decodable within the limits)."""
        try:
            with open_picture(blob(), self.limits, kind) as image:
                if not worth_reading(image):
                    return None
                return self.recognise(decode(image, kind))
        except (DocumentLoadError, OSError, ValueError) as exc:
            logger.info("A picture in %s was not read: %s", kind[1], exc)
            return None

    def _count_picture(self, recognised: Recognised | None) -> OcrText | None:
        if recognised is None:
            self.report.skipped_pictures += 1
            return None
        result = self.count(recognised)
        if result is not None:
            self.report.ocr_pictures += 1
        return result

    def nothing_readable(self, kind: Kind, picture: bool = False) -> NothingReadable:
        """The failure of a document whose every page is a picture (or of an image file, `picture`) from which
        OCR got no text, saying why."""
        if not self.limits.ocr:
            ref = setting_ref("ocr.enabled")
            why = (f"OCR 已关闭（设置 {ref}）", f"OCR is switched off (setting {ref})")
        elif self.unavailable:
            why = ("OCR 无法运行", "OCR cannot run")
        elif self.timeouts:
            limit, ref = f"{self.limits.ocr_page_timeout_s:g}", setting_ref("ocr.page_timeout_s")
            why = (
                f"OCR 在 {self.timeouts} 页上超过了 {limit} 秒的时限（设置 {ref}）",
                f"OCR ran past its {limit} s limit on {self.timeouts} page(s) (setting {ref})",
            )
        else:
            why = ("OCR 也没有识别出文字", "OCR found nothing")
        where = ("这是一张图片", "this is a picture") if picture else (
            f"{kind[0]}的每一页都是图片",
            f"every page of {kind[1]} is an image",
        )
        message = f"没有找到文字：{where[0]}，{why[0]}。 (No text found: {where[1]} and {why[1]}.)"
        return NothingReadable(f"{message} {self.unavailable}" if self.unavailable else message)
