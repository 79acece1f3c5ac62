"""Markdown loading: front matter dropped, one Section per heading block (ATX and setext headings)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from app.kb.documents import LoadedDocument
from app.kb.loaders._common import _SectionBuilder
from app.kb.loaders._limits import LoadLimits, check_text_chars, read_text_bytes
from app.kb.loaders.text_loader import _decode_bytes

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _load_markdown(path: Path, limits: LoadLimits) -> LoadedDocument:
    """One Section per heading block; heading lines (without '#') stay as the first line of their block."""
    what = ("Markdown 文件", "the Markdown file")
    text, encoding = _decode_bytes(read_text_bytes(path, limits, what))
    check_text_chars(len(text), limits, what)
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
