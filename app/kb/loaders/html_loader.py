"""HTML loading with BeautifulSoup: visible text only, Sections cut at h1-h6, table rows kept as lines."""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from lxml import etree

from app.kb.documents import CorruptDocument, LoadedDocument, Section
from app.kb.loaders._common import _reason, _SectionBuilder
from app.kb.loaders._limits import MB, LoadLimits, read_text_bytes, too_large

_DROP_TAG_NAMES = "script style nav noscript template svg math iframe object embed canvas head select button"
_BLOCK_TAG_NAMES = (
    "p div section article main aside header footer ul ol li dl dt dd table thead tbody tfoot tr blockquote "
    "pre figure figcaption form fieldset address details summary hr caption body html"
)
_DROP_TAGS = frozenset(_DROP_TAG_NAMES.split())
_BLOCK_TAGS = frozenset(_BLOCK_TAG_NAMES.split())
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}
_SKIP_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)


def _load_html(path: Path, limits: LoadLimits) -> LoadedDocument:
    """Visible text only; h1-h6 start Sections, table rows become "A | B | C" lines, <pre> keeps its spacing."""
    data = read_text_bytes(path, limits, ("HTML 文件", "the HTML file"))
    _check_elements(data, limits)
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


class _ElementCounter:
    """An lxml parser target that only counts start tags: counting builds no tree."""

    def __init__(self) -> None:
        self.count = 0

    def start(self, _tag: str, _attrib: dict[str, str]) -> None:
        self.count += 1

    def close(self) -> int:
        return self.count


def _check_elements(data: bytes, limits: LoadLimits) -> None:
    """Refuse HTML with more elements than allowed before BeautifulSoup builds its tree (about 1 KB a tag). The
    count comes from lxml, the parser BeautifulSoup uses, fed a megabyte at a time so a huge file stops early."""
    counter = _ElementCounter()
    parser = etree.HTMLParser(target=counter, recover=True)
    try:
        for start in range(0, len(data), MB):
            parser.feed(data[start : start + MB])
            if counter.count > limits.max_html_elements:
                raise too_large(
                    f"HTML 文件至少有 {counter.count:,} 个元素（标签）",
                    f"the HTML file has at least {counter.count:,} elements (tags)",
                    "max_html_elements",
                    f"{limits.max_html_elements:,}",
                )
        parser.close()
    except etree.LxmlError:
        pass  # BeautifulSoup reports markup it cannot parse


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
