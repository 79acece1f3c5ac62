"""Where a chunk's text lies on a page: the page's glyphs (from its text layer or OCR) that spell the chunk, merged
into one box per line.

The chunk was cut from text a loader cleaned (lines joined, spaces collapsed, ligatures and line-end hyphens undone),
so the comparison ignores white space and Unicode compatibility forms; where the two still differ (a hyphen the
loader dropped, a character OCR read otherwise), the runs they share are taken instead of one exact match.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

_MIN_SHARED_RUN = 4  # shorter runs in common are chance (a frequent character, a word that repeats)
_MIN_MOVED_RUN = 8  # a run found out of order is taken only from this length: a shorter one may be anywhere
_PAD = 1.0  # page units added around each line's box


@dataclass(frozen=True)
class Box:
    """A rectangle on the page in PDF points, from its top-left corner (y grows downwards)."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def union(self, other: Box) -> Box:
        return Box(
            min(self.left, other.left),
            min(self.top, other.top),
            max(self.right, other.right),
            max(self.bottom, other.bottom),
        )

    def padded(self, pad: float) -> Box:
        return Box(self.left - pad, self.top - pad, self.right + pad, self.bottom + pad)


@dataclass(frozen=True)
class Glyph:
    char: str
    box: Box


def _fold(text: str) -> str:
    """The text as compared: compatibility forms unfolded (ﬁ -> fi, full-width digits), white space and
    invisible characters (soft hyphen, zero-width space) left out."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if not ch.isspace() and ch.isprintable())


def spelling_glyphs(glyphs: Sequence[Glyph], text: str) -> list[int]:
    """The indexes of the glyphs that spell `text`: its first exact occurrence, else the runs of at least
    _MIN_SHARED_RUN characters the page and the text share, in order."""
    chars: list[str] = []
    owner: list[int] = []
    for index, glyph in enumerate(glyphs):
        for ch in _fold(glyph.char):
            chars.append(ch)
            owner.append(index)
    page, wanted = "".join(chars), _fold(text)
    if not wanted or not page:
        return []
    start = page.find(wanted)
    runs = [(start, len(wanted))] if start >= 0 else _shared_runs(page, wanted)
    return sorted({owner[k] for start, size in runs for k in range(start, start + size)})


def _shared_runs(page: str, wanted: str) -> list[tuple[int, int]]:
    """The runs (start on the page, length) of at least _MIN_SHARED_RUN characters the page and the text share in
    the same order; then each longer part of the text left between them, where it stands elsewhere on the page (a
    text layer may list lines out of reading order: PDFium lists a page turned by /Rotate 90 last line first)."""
    blocks = SequenceMatcher(None, page, wanted, autojunk=False).get_matching_blocks()
    blocks = [block for block in blocks if block.size >= min(_MIN_SHARED_RUN, len(wanted))]
    runs = [(block.a, block.size) for block in blocks]
    end = 0
    for block_start, block_end in [*((b.b, b.b + b.size) for b in blocks), (len(wanted), len(wanted))]:
        left_over = wanted[end:block_start]
        found = page.find(left_over) if len(left_over) >= _MIN_MOVED_RUN else -1
        if found >= 0:
            runs.append((found, len(left_over)))
        end = block_end
    return runs


def line_boxes(boxes: Sequence[Box]) -> list[Box]:
    """Boxes of consecutive glyphs merged into one per line (a glyph starts a new line when it does not overlap
    the line vertically by half its height, or lies more than three heights away from it), padded a little."""
    lines: list[Box] = []
    for box in boxes:
        if lines and _same_line(lines[-1], box):
            lines[-1] = lines[-1].union(box)
        else:
            lines.append(box)
    return [line.padded(_PAD) for line in lines]


def _same_line(line: Box, box: Box) -> bool:
    overlap = min(line.bottom, box.bottom) - max(line.top, box.top)
    height = max(min(line.height, box.height), 0.1)
    gap = box.left - line.right
    return overlap >= 0.5 * height and gap <= 3 * max(line.height, box.height)


def highlight(glyphs: Sequence[Glyph], text: str) -> list[Box]:
    """The line boxes of `text` on a page of `glyphs` (none when it is not there)."""
    return line_boxes([glyphs[index].box for index in spelling_glyphs(glyphs, text)])
