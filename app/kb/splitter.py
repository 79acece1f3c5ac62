"""Cut loaded documents into chunks that end at sentence boundaries, in Chinese as in English.

LangChain's default separators ("\\n\\n", "\\n", " ", "") know no Chinese punctuation, and Chinese has no spaces,
so a long Chinese paragraph falls through to "" and is cut into hard `chunk_size`-character pieces in the middle
of sentences. Here the separators go paragraph -> line -> sentence end (。！？；… and ". ", "! ", "? ", "; ") ->
clause (，、： and ", ") -> space -> character, and each separator stays at the END of the piece before it, so a
chunk ends with its full stop and the next one starts with a new sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import groupby

from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.kb.documents import Chunk, LoadedDocument, Section, rows_heading

_CLOSE = "[\"'”’」』）)\\]》〉】]*"
# Sentence ends. ASCII marks count only before whitespace, so "3.14", "e.g.x" and URLs stay whole.
SENTENCE_END = rf"(?:[。！？；]+|…+|\.{{3}}|[.!?;]+(?={_CLOSE}\s)){_CLOSE}"
SEPARATORS: list[str] = [
    r"\n\n+",
    r"\n",
    SENTENCE_END,
    rf"[，、：]{_CLOSE}|[,:](?=\s)",
    r" +",
    "",
]
_ENDS_SENTENCE = re.compile(rf"(?:[。！？；.!?;…]){_CLOSE}$")


def split_document(doc: LoadedDocument, chunk_size: int = 500, chunk_overlap: int = 50) -> list[Chunk]:
    """Split every Section separately so each chunk keeps one page and one heading; index runs over the document.

    Sizes are in characters. Sections shorter than a few dozen characters (a heading on its own, a page
    number) are merged into the next Section on the same page instead of becoming chunks of their own.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if chunk_overlap < 0 or chunk_overlap >= chunk_size:
        raise ValueError(f"chunk_overlap must be >= 0 and < chunk_size ({chunk_size}), got {chunk_overlap}")
    splitter = RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        is_separator_regex=True,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        strip_whitespace=True,
    )
    tiny = min(50, chunk_size // 4)
    chunks: list[Chunk] = []
    for is_rows, run in groupby(doc.sections, key=lambda section: section.rows is not None):
        if is_rows:
            for text, page, heading in pack_rows(run, chunk_size):
                chunks.append(Chunk(text=text, chunk_index=len(chunks), page=page, heading=heading))
            continue
        for section in merge_tiny_sections(run, tiny):
            texts = [text.strip() for text in splitter.split_text(section.text)]
            for text in merge_tiny_pieces([t for t in texts if t], tiny, chunk_size):
                chunks.append(
                    Chunk(
                        text=text, chunk_index=len(chunks), page=section.page, heading=section.heading, ocr=section.ocr
                    )
                )
    return chunks


_ROW_SPLITTER_SEPARATORS = [r" \| ", *SEPARATORS[2:]]


def pack_rows(rows: Iterable[Section], chunk_size: int) -> Iterator[tuple[str, int | None, str | None]]:
    """(text, page, heading) of chunks of whole spreadsheet rows: consecutive rows of one sheet, one per line, as
    many as fit in `chunk_size`, with no overlap (each row is a self-contained record). The heading names the sheet
    and the rows. A single row longer than `chunk_size` is the one exception: it is cut between its
    `header: value` pairs, each piece under that row's heading."""
    for (page, label), sheet in groupby(rows, key=lambda section: (section.page, section.heading)):
        lines: list[str] = []
        size = first = last = 0
        for row in sheet:
            assert row.rows is not None
            text = row.text.strip()
            if lines and size + 1 + len(text) > chunk_size:
                yield "\n".join(lines), page, rows_heading(label, (first, last))
                lines = []
            if len(text) > chunk_size:
                for piece in _split_long_row(text, chunk_size):
                    yield piece, page, rows_heading(label, row.rows)
                continue
            if not lines:
                first, size = row.rows[0], -1
            lines.append(text)
            size += 1 + len(text)
            last = row.rows[1]
        if lines:
            yield "\n".join(lines), page, rows_heading(label, (first, last))


def _split_long_row(text: str, chunk_size: int) -> list[str]:
    splitter = RecursiveCharacterTextSplitter(
        separators=_ROW_SPLITTER_SEPARATORS,
        is_separator_regex=True,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=0,
        strip_whitespace=True,
    )
    pieces = (piece.removesuffix(" |").removesuffix("|").strip() for piece in splitter.split_text(text))
    return [piece for piece in pieces if piece]


def merge_tiny_pieces(pieces: list[str], tiny: int, chunk_size: int) -> list[str]:
    """Attach each piece under `tiny` characters to a neighbour when the result still fits in `chunk_size`.

    RecursiveCharacterTextSplitter emits the short text before an oversized paragraph as a chunk of its own,
    so a heading line ("Introduction") would become a chunk that retrieval can only match by its title. A
    short piece that ends a sentence joins the piece before it; any other (a heading, a label) joins the next.
    """
    out: list[str] = []
    pending = ""
    for piece in pieces:
        if pending:
            piece = _attach(pending, piece, chunk_size, out)
            pending = ""
        if len(piece) >= tiny:
            out.append(piece)
        elif out and _ENDS_SENTENCE.search(piece) and len(out[-1]) + 1 + len(piece) <= chunk_size:
            out[-1] = f"{out[-1]}\n{piece}"
        else:
            pending = piece
    if pending:
        if out and len(out[-1]) + 1 + len(pending) <= chunk_size:
            out[-1] = f"{out[-1]}\n{pending}"
        else:
            out.append(pending)
    return out


def _attach(pending: str, piece: str, chunk_size: int, out: list[str]) -> str:
    """Return `pending` prepended to `piece` if that fits; otherwise emit `pending` (onto the previous piece
    when it fits there) and return `piece` unchanged."""
    if len(pending) + 1 + len(piece) <= chunk_size:
        return f"{pending}\n{piece}"
    if out and len(out[-1]) + 1 + len(pending) <= chunk_size:
        out[-1] = f"{out[-1]}\n{pending}"
    else:
        out.append(pending)
    return piece


def merge_tiny_sections(sections: Iterable[Section], tiny: int) -> list[Section]:
    """Prepend each Section under `tiny` characters to the next one on the same page, which keeps its heading.

    A heading-only Section ("第二节 文档") then travels with the text it introduces; the merged Section is `ocr`
    when either part was read by OCR (a slide's title above the text of its picture).
    """
    merged: list[Section] = []
    carry: Section | None = None
    for section in sections:
        text = section.text.strip()
        if not text:
            continue
        ocr = section.ocr
        if carry is not None:
            if carry.page == section.page:
                text, ocr = f"{carry.text}\n{text}", ocr or carry.ocr
            else:
                merged.append(carry)
        current = Section(text=text, page=section.page, heading=section.heading, ocr=ocr)
        carry = current if len(text) < tiny else None
        if carry is None:
            merged.append(current)
    if carry is not None:
        merged.append(carry)
    return merged
