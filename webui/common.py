"""What both pages share: the API client (one per URL and key for the app's life), safe text rendering and
friendly error messages."""

from __future__ import annotations

import os
import re
from typing import Any

import streamlit as st

from kbqa_client import DEFAULT_API_URL, ApiError, KbqaClient
from webui.i18n import t

# Markdown's special characters, plus '$' (Streamlit renders $...$ as LaTeX) and '<' / '>' (so that HTML-looking
# text shows as written).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$&:])")


def plain(text: str) -> str:
    """User, document or model text made safe to put inside st.markdown: shown exactly as written, never
    interpreted as Markdown, LaTeX or HTML."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


_ANSWER_SPECIAL = re.compile(r"([\\$<\[\]])")


def answer_markdown(text: str) -> str:
    """An LLM answer rendered as Markdown (lists, bold, code): '$' kept literal instead of LaTeX, and '<', '[', ']'
    escaped so that the model's text makes no HTML, links or images (the answer's citations are linked by
    `webui.citations`)."""
    return _ANSWER_SPECIAL.sub(r"\\\1", text)


@st.cache_resource(show_spinner=False)
def _client(base_url: str, api_key: str) -> KbqaClient:
    return KbqaClient(base_url, api_key)


def get_api() -> KbqaClient:
    """The API at KBQA_API_URL, sending KBQA_CLIENT_API_KEY (`kbqa ui` sets both from the settings)."""
    return _client(os.environ.get("KBQA_API_URL", DEFAULT_API_URL), os.environ.get("KBQA_CLIENT_API_KEY", ""))


RETRIEVAL_MODES = ["hybrid", "dense", "bm25"]


def refresh_status(api: KbqaClient) -> dict[str, Any]:
    """GET /api/status once per run of the app (the sidebar and the page both need it, and it asks the LLM):
    webui_st.py calls this before the page runs; the page reads the result with `run_status`."""
    try:
        st.session_state["_status"] = api.status()
    except ApiError as exc:
        st.session_state["_status"] = exc
        raise
    return st.session_state["_status"]


def run_status() -> dict[str, Any]:
    """This run's /api/status, or the ApiError that fetching it raised."""
    status = st.session_state["_status"]
    if isinstance(status, ApiError):
        raise status
    return status


def show_error(exc: ApiError, api: KbqaClient) -> None:
    """One clear message: what went wrong and what to start or fix."""
    if exc.unreachable:
        st.error(t("err.api_unreachable", url=api.base_url))
        st.caption(t("err.detail", detail=plain(exc.message)))
    elif exc.status == 401:
        st.error(t("err.unauthorized"))
    elif exc.llm_unavailable:
        st.error(t("err.llm_down"))
        st.caption(t("err.detail", detail=plain(exc.message)))
    else:
        st.error(t("err.http", status=exc.status, detail=plain(exc.message)))


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
