"""在原文中查看: a source shown where it stands in its document. A PDF source shows its page with the chunk's
lines marked, a picture read by OCR the picture with the chunk's words marked; other formats show the chunks around
it as text (never as HTML), the cited one highlighted."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import streamlit as st

from kbqa_client import ApiError, KbqaClient, api_path
from webui.common import get_api, plain, show_error
from webui.i18n import t

_OVERLAP_SEARCH = 400  # characters of a neighbour compared with the cited chunk to drop the overlap they share
_MIN_OVERLAP = 10  # a shorter run in common is chance (a full stop), not the chunks' overlap


@st.cache_data(max_entries=64, show_spinner=False)
def _context(base_url: str, preview_url: str) -> dict[str, Any]:
    return get_api().preview(preview_url)


@st.cache_data(max_entries=32, show_spinner=False)
def _page(base_url: str, kb: str, doc_id: str, page: int, chunk: int) -> tuple[bytes, str | None]:
    image = get_api().page_image(kb, doc_id, page, chunk)
    return image.png, image.highlight


def preview_url(source: dict[str, Any]) -> str:
    """The source's link, or one built from it (answers kept from before links were added lack it)."""
    return source.get("preview_url") or api_path(
        "kbs", source["kb_name"], "documents", source["doc_id"], "chunks", str(source["chunk_index"])
    )


def show_preview(source: dict[str, Any], key: str) -> None:
    """The source in its document, below the source's line; `key` makes the widgets unique on the page."""
    context = load_context(source)
    if context is not None:
        show_context(context, key)


def load_context(source: dict[str, Any]) -> dict[str, Any] | None:
    """The source's chunk context from the API, or None after showing why it could not be had."""
    api = get_api()
    try:
        return _context(api.base_url, preview_url(source))
    except ApiError as exc:
        show_error(exc, api)
        return None


def show_context(context: dict[str, Any], key: str) -> None:
    api = get_api()
    chunk = context["chunk"]
    if context.get("page_image_url"):  # a PDF page or a picture
        _show_page(api, context)
    elif context["kind"] != "rows" or not _show_rows(context):
        _show_text(context)
    _download(context, key)
    if chunk.get("ocr"):
        st.caption(t("preview.ocr"))


def _show_page(api: KbqaClient, context: dict[str, Any]) -> None:
    chunk = context["chunk"]
    page = chunk["page"] or 1  # a picture's only page has no number
    try:
        png, highlight = _page(api.base_url, context["kb_name"], context["doc_id"], page, chunk["chunk_index"])
    except ApiError as exc:
        show_error(exc, api)
        return
    caption = t("preview.page", page=page, pages=context["pages"] or "?")
    if chunk.get("heading"):
        caption += f" · {chunk['heading']}"
    st.image(png, caption=caption, output_format="PNG")  # as rendered: a JPEG copy would blur the text
    if highlight == "none":
        st.caption(t("preview.not_found"))


def _show_text(context: dict[str, Any]) -> None:
    chunk = context["chunk"]
    where = {
        "rows": t("preview.rows"),
        "slide": t("preview.slide", page=chunk.get("page") or "?"),
    }.get(context["kind"], "")
    heading = chunk.get("heading") or ""
    st.caption(" · ".join(plain(part) for part in (where, heading) if part) or t("preview.no_heading"))
    before = "\n".join(c["text"] for c in context["before"])
    after = "\n".join(c["text"] for c in context["after"])
    if before:
        st.text(trim_overlap(before, chunk["text"], keep="start"))
    st.markdown(highlighted(chunk["text"]))
    if after:
        st.text(trim_overlap(after, chunk["text"], keep="end"))


def _show_rows(context: dict[str, Any]) -> bool:
    """Spreadsheet rows as a table, the cited rows highlighted, among the rows of the same sheet around them.
    False (nothing shown) when the chunk's lines are not `header: value` records."""
    chunk = context["chunk"]
    cited = row_records(chunk["text"])
    if cited is None:
        return False
    sheet = _sheet(chunk.get("heading"))
    before = [c for c in context["before"] if _sheet(c.get("heading")) == sheet]
    after = [c for c in context["after"] if _sheet(c.get("heading")) == sheet]
    rows: list[tuple[int | None, dict[str, str], bool]] = []
    for neighbour, is_cited in [*((c, False) for c in before), (chunk, True), *((c, False) for c in after)]:
        records = cited if is_cited else row_records(neighbour["text"])
        numbers = row_numbers(neighbour.get("heading"), len(records or []))
        rows += [(number, record, is_cited) for number, record in zip(numbers, records or [], strict=True)]
    st.caption(" · ".join(plain(part) for part in (t("preview.rows"), chunk.get("heading") or "") if part))
    table, marked = rows_table(rows)
    st.dataframe(
        table.style.apply(lambda row: [_MARK if marked[row.name] else "" for _ in row], axis=1), hide_index=True
    )
    return True


_MARK = "background-color: #ffe0b2"  # the cited rows, the highlight's colour (Streamlit's orange background)
_ROWS_AT = re.compile(r"\(rows? (\d+)(?:-(\d+))?\)")


def row_records(text: str) -> list[dict[str, str]] | None:
    """The chunk's rows, one a line, each "header: value | header: value" (app/kb/loaders/_table.py); None when a
    line is not such a record."""
    records = []
    for line in text.splitlines():
        pairs = [pair.partition(": ") for pair in line.split(" | ")]
        if not line.strip() or any(not sep for _, sep, _ in pairs):
            return None
        records.append({name: value for name, _, value in pairs})
    return records or None


def row_numbers(heading: str | None, count: int) -> list[int | None]:
    """The rows' numbers in the file, from the heading's "(rows 2-15)": known only when the range holds exactly
    `count` rows (a skipped blank or repeated header row makes them unknown)."""
    found = _ROWS_AT.search(heading or "")
    if found:
        first, last = int(found.group(1)), int(found.group(2) or found.group(1))
        if last - first + 1 == count:
            return list(range(first, last + 1))
    return [None] * count


def rows_table(rows: list[tuple[int | None, dict[str, str], bool]]) -> tuple[pd.DataFrame, list[bool]]:
    """A table of the records, a column for each header in the order first seen, the row number first; and
    which of its rows are cited."""
    columns: dict[str, None] = {}
    for _, record, _ in rows:
        columns.update(dict.fromkeys(record))
    data = {t("preview.row"): [str(number or "") for number, _, _ in rows]}
    data |= {name: [record.get(name, "") for _, record, _ in rows] for name in columns}
    return pd.DataFrame(data), [is_cited for _, _, is_cited in rows]


def _sheet(heading: str | None) -> str:
    """The sheet's name in a rows heading ("Sheet1 · 第 2–15 行 (rows 2-15)"), empty for a CSV file."""
    return (heading or "").rpartition(" · ")[0]


def _download(context: dict[str, Any], key: str) -> None:
    """A download of the original file, fetched only when clicked."""
    kb, doc_id = context["kb_name"], context["doc_id"]
    st.download_button(
        t("preview.download", file=plain(context["file_name"])),
        data=lambda: get_api().document_file(kb, doc_id).content,
        file_name=context["file_name"],
        mime="application/octet-stream",
        key=f"download-{key}",
        icon=":material/download:",
        on_click="ignore",
    )


def highlighted(text: str) -> str:
    """The cited chunk as Markdown: every line escaped (shown as written) on a highlight, paragraphs kept."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "\n\n".join(
        "  \n".join(f":orange-background[{plain(line)}]" for line in p.split("\n") if line.strip()) for p in paragraphs
    )


def trim_overlap(neighbour: str, cited: str, keep: str) -> str:
    """A neighbour's text without what it shares with the cited chunk (chunks overlap by chunk_overlap
    characters): the end of the text before it, or the start of the text after it."""
    if keep == "start":
        for size in range(min(len(neighbour), len(cited), _OVERLAP_SEARCH), _MIN_OVERLAP - 1, -1):
            if neighbour.endswith(cited[:size]):
                return neighbour[: len(neighbour) - size]
        return neighbour
    for size in range(min(len(neighbour), len(cited), _OVERLAP_SEARCH), _MIN_OVERLAP - 1, -1):
        if neighbour.startswith(cited[-size:]):
            return neighbour[size:]
    return neighbour
