"""One source seen in the original, on a page of its own: where an answer's citation [n] leads
(webui/citations.py). The query names the source: ?kb=<knowledge base>&doc=<document id>&chunk=<chunk index>."""

from __future__ import annotations

from typing import Any

import streamlit as st

from webui.common import plain
from webui.i18n import t
from webui.preview import load_context, show_context


def linked_source() -> dict[str, Any] | None:
    """The source the URL names, or None when a part is missing or the chunk is not a number."""
    kb, doc_id, chunk = (st.query_params.get(name, "") for name in ("kb", "doc", "chunk"))
    if not (kb and doc_id and chunk.isdigit()):
        return None
    return {"kb_name": kb, "doc_id": doc_id, "chunk_index": int(chunk)}


def main() -> None:
    source = linked_source()
    if source is None:
        st.info(t("preview.bad_link"))
        return
    context = load_context(source)
    if context is None:
        return
    st.subheader(t("preview.title", file=plain(context["file_name"])), anchor=False)
    st.caption(t("preview.kb", kb=plain(context["kb_name"])))
    show_context(context, f"source-{source['doc_id']}-{source['chunk_index']}")


main()
