"""在原文中查看: a source shown where it stands in its document. A PDF source shows its page with the chunk's
lines marked; other formats show the chunks around it as text (never as HTML), the cited one highlighted."""

from __future__ import annotations

from typing import Any

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
    api = get_api()
    try:
        context = _context(api.base_url, preview_url(source))
    except ApiError as exc:
        show_error(exc, api)
        return
    chunk = context["chunk"]
    if context["kind"] == "pdf_page":
        _show_page(api, context)
    else:
        _show_text(context)
    _download(context, key)
    if chunk.get("ocr"):
        st.caption(t("preview.ocr"))


def _show_page(api: KbqaClient, context: dict[str, Any]) -> None:
    chunk = context["chunk"]
    try:
        png, highlight = _page(api.base_url, context["kb_name"], context["doc_id"], chunk["page"], chunk["chunk_index"])
    except ApiError as exc:
        show_error(exc, api)
        return
    caption = t("preview.page", page=chunk["page"], pages=context["pages"] or "?")
    if chunk.get("heading"):
        caption += f" · {chunk['heading']}"
    st.image(png, caption=caption)
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
