"""An answer's inline citations [n] as links to source n in the original.

Streamlit runs no JavaScript and a Markdown link that is not an anchor opens in a new tab, so a citation links to
the source page (webui/pages/source.py) with the source in its query: the new tab shows that source where it stands
in its document. The link carries the knowledge base, the document and the chunk, so it still works after a reload
or from a copied URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from webui.common import answer_markdown

SOURCE_PAGE_PATH = "source"  # the source page's url_path in webui_st.py
# [1], [1, 2], [1，2] and [1、2]: the forms an answer cites its numbered sources in.
_CITATION = re.compile(r"\[(\d+(?:\s*[,，、]\s*\d+)*)\]")
_NUMBER = re.compile(r"\d+")
# Code is shown as written: nothing in it is a link, HTML or LaTeX, so it is left as the model wrote it.
_CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]*`)", re.DOTALL)


def source_href(source: dict[str, Any]) -> str:
    """The source page's relative URL for one source."""
    query = {"kb": source["kb_name"], "doc": source["doc_id"], "chunk": source["chunk_index"]}
    return f"{SOURCE_PAGE_PATH}?{urlencode(query)}"


def cited_answer(text: str, sources: list[dict[str, Any]]) -> str:
    """The answer as Markdown, each [n] of a source it has a link to source n; the rest escaped by
    `answer_markdown` (no HTML, links or images from the model), code left as written."""
    by_number = {source["number"]: source for source in sources}
    parts = _CODE.split(text)
    return "".join(part if index % 2 else _linked(part, by_number) for index, part in enumerate(parts))


def _linked(text: str, by_number: dict[int, dict[str, Any]]) -> str:
    pieces: list[str] = []
    end = 0
    for match in _CITATION.finditer(text):
        numbers = [int(n) for n in _NUMBER.findall(match.group(1))]
        if not all(n in by_number for n in numbers):
            continue  # a bracketed number that cites nothing we have stays text
        pieces.append(answer_markdown(text[end : match.start()]))
        pieces.append(" ".join(f"[\\[{n}\\]]({source_href(by_number[n])})" for n in numbers))
        end = match.end()
    pieces.append(answer_markdown(text[end:]))
    return "".join(pieces)
