"""The chat page: LLM 对话, 知识库问答 and 知识库测试 over POST /api/chat."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from kbqa_client import ApiError, KbqaClient
from webui import evaluation_panel
from webui.citations import cited_answer
from webui.common import RETRIEVAL_MODES, answer_markdown, get_api, plain, run_status, show_error
from webui.export import conversation_markdown
from webui.i18n import t
from webui.preview import show_preview

MODES = ["llm", "kb", "kb_test"]
KB_PAGE = "webui/pages/knowledge_bases.py"


def init_state(limits: dict[str, Any]) -> None:
    defaults = {
        "messages": [],
        "conversation_id": None,
        "mode": "kb",
        "top_k": limits["default_top_k"],
        "threshold": float(limits["default_score_threshold"]),
        "retrieval_mode": "hybrid",
        "temperature": float(limits["llm_temperature"]),
        "history_turns": limits["chat_history_turns"],
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def restore_conversation(api: KbqaClient) -> None:
    """After a reload the page has lost its messages; the conversation id in the URL (?c=…) brings them back from
    the server, which keeps every LLM 对话 and 知识库问答 turn."""
    state = st.session_state
    conversation_id = st.query_params.get("c")
    if not conversation_id or state.conversation_id == conversation_id:
        return
    try:
        stored = api.conversation(conversation_id)
    except ApiError:
        del st.query_params["c"]
        st.toast(t("chat.conversation_gone"), icon=":material/history:")
        return
    state.conversation_id = conversation_id
    state.messages = [
        {
            "role": m["role"],
            "mode": m["mode"],
            "content": m["content"],
            "sources": m["sources"],
            "rewritten_question": m["rewritten_question"],
            "restored": True,
        }
        for m in stored["messages"]
    ]


def top_k_for_mode(limits: dict[str, Any]) -> None:
    """One top_k per retrieval mode: 知识库问答 starts at the chunks the API gives its prompt (chat.kb_top_k),
    知识库测试 at retrieval.default_top_k; the value a user picks is kept for its mode across switches."""
    state = st.session_state
    if state.mode == "llm" or state.get("top_k_mode") == state.mode:
        return
    saved = state.setdefault("top_k_by_mode", {})
    if "top_k_mode" in state:
        saved[state.top_k_mode] = state.top_k
    default = limits.get("kb_top_k", limits["default_top_k"]) if state.mode == "kb" else limits["default_top_k"]
    state.top_k = saved.get(state.mode, default)
    state.top_k_mode = state.mode


def sidebar(kb_names: list[str], limits: dict[str, Any]) -> None:
    """The knowledge-base picker and settings. Widgets a mode does not use are disabled, not hidden: a hidden
    widget would lose its value, and switching modes back and forth must keep the user's choices."""
    mode = st.session_state.mode
    with st.sidebar:
        st.session_state.selected_kbs = [n for n in st.session_state.get("selected_kbs", []) if n in kb_names]
        st.multiselect(
            t("chat.kbs"),
            kb_names,
            key="selected_kbs",
            max_selections=limits["chat_max_kbs"],
            help=t("chat.kbs_help"),
            disabled=mode == "llm",
        )
        with st.expander(t("chat.settings"), expanded=True):
            retrieval_off, llm_off = mode == "llm", mode == "kb_test"
            st.slider(t("chat.top_k"), 1, min(20, limits["max_top_k"]), key="top_k", disabled=retrieval_off)
            st.slider(
                t("chat.threshold"),
                0.0,
                1.0,
                step=0.05,
                key="threshold",
                help=t("chat.threshold_help"),
                disabled=retrieval_off,
            )
            st.radio(
                t("chat.retrieval_mode"),
                RETRIEVAL_MODES,
                key="retrieval_mode",
                format_func=lambda m: t(f"retrieval.{m}"),
                horizontal=True,
                disabled=retrieval_off,
            )
            st.slider(t("chat.temperature"), 0.0, 2.0, step=0.1, key="temperature", disabled=llm_off)
            st.slider(t("chat.history_turns"), 0, 10, key="history_turns", disabled=llm_off)
        if st.button(t("chat.new"), icon=":material/add_comment:", width="stretch"):
            st.session_state.messages = []
            st.session_state.conversation_id = None
            st.query_params.pop("c", None)
            st.rerun()
        st.download_button(
            t("chat.export"),
            data=conversation_markdown(st.session_state.messages),
            file_name=f"kbqa-{datetime.now():%Y%m%d-%H%M}.md",
            mime="text/markdown",
            icon=":material/download:",
            disabled=not st.session_state.messages,
            width="stretch",
        )


def request_body(question: str) -> dict[str, Any]:
    state = st.session_state
    body: dict[str, Any] = {"question": question, "mode": state.mode}
    if state.mode != "llm":
        body |= {
            "kb_names": state.selected_kbs,
            "top_k": state.top_k,
            "score_threshold": state.threshold,
            "retrieval_mode": state.retrieval_mode,
        }
    if state.mode != "kb_test":
        body |= {
            "temperature": state.temperature,
            "history_turns": state.history_turns,
            "conversation_id": state.conversation_id,
        }
    return body


# --- showing answers -------------------------------------------------------------------------------------------


def message_key(message: dict[str, Any]) -> str:
    """A name for the message's widgets, the same on every run of the page."""
    return message.setdefault("key", uuid.uuid4().hex)


def show_sources(sources: list[dict[str, Any]], key: str) -> None:
    with st.expander(t("chat.sources", n=len(sources))):
        for source in sources:
            page = t("chat.page", page=source["page"]) if source.get("page") else ""
            page += t("chat.ocr") if source.get("ocr") else ""
            st.markdown(
                t(
                    "chat.source_line",
                    number=source["number"],
                    file=plain(source["file_name"]),
                    page=page,
                    score=source["score"],
                    kb=plain(source["kb_name"]),
                )
            )
            source_key = f"{key}-{source['number']}"
            if st.toggle(t("preview.open"), key=f"preview-{source_key}"):
                show_preview(source, source_key)
            else:
                st.text(source["text"])


def show_timings(timings: dict[str, Any] | None) -> None:
    if not timings:
        return
    parts = [
        f"{t('timing.' + key)} {timings[key] / 1000:.2f} s"
        if timings[key] >= 1000
        else f"{t('timing.' + key)} {timings[key]:.0f} ms"
        for key in ("rewrite_ms", "retrieval_ms", "first_token_ms", "total_ms")
        if timings.get(key) is not None
    ]
    st.caption(f"{t('chat.timings')}: " + " · ".join(parts))


def show_hits(sources: list[dict[str, Any]], key: str) -> None:
    """知识库测试: the hits as a table with their scores, and a bar chart of the scores."""
    if not sources:
        st.info(t("chat.no_hits"))
        return
    table = pd.DataFrame(
        {
            t("hits.number"): [s["number"] for s in sources],
            t("hits.score"): [s["score"] for s in sources],
            t("hits.file"): [s["file_name"] for s in sources],
            t("hits.page"): [str(s["page"] or "") for s in sources],
            t("hits.ocr"): ["OCR" if s.get("ocr") else "" for s in sources],
            t("hits.kb"): [s["kb_name"] for s in sources],
            t("hits.text"): [s["text"] for s in sources],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={t("hits.score"): st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0)},
    )
    chart = pd.DataFrame(
        {
            "chunk": [f"[{s['number']}] {s['file_name']}" for s in sources],
            t("hits.score"): [s["score"] for s in sources],
        }
    )
    st.caption(t("hits.chart"))
    st.bar_chart(
        chart, x="chunk", y=t("hits.score"), horizontal=True, sort=False, x_label="", height=60 + 28 * len(sources)
    )
    show_sources(sources, key)


def show_assistant(message: dict[str, Any]) -> None:
    if message.get("api_error"):
        show_error(ApiError(**message["api_error"]), get_api())
        return
    if message["mode"] == "kb_test":
        show_hits(message.get("sources", []), message_key(message))
        show_timings(message.get("timings"))
        return
    if message.get("rewritten_question"):
        st.caption(t("chat.rewritten", question=plain(message["rewritten_question"])))
    st.markdown(cited_answer(message.get("content", ""), message.get("sources", [])))
    show_answer_details(message)


def show_answer_details(message: dict[str, Any]) -> None:
    """What comes under an answer's text: an interruption or error, the sources, the timings."""
    if not message.get("timings") and not message.get("restored") and not message.get("error"):
        st.caption(t("chat.interrupted"))
    if message.get("error"):
        st.error(t("err.partial", detail=message["error"]))
    if message.get("sources"):
        show_sources(message["sources"], message_key(message))
    show_timings(message.get("timings"))


def show_history() -> None:
    for message in st.session_state.messages:
        with st.chat_message(message["role"]):
            if message["role"] == "user":
                st.markdown(plain(message["content"]))
            else:
                show_assistant(message)


# --- asking -------------------------------------------------------------------------------------------------------


def stream_answer(
    api: KbqaClient, body: dict[str, Any], message: dict[str, Any], head: DeltaGenerator
) -> Iterator[str]:
    """The answer's text pieces for st.write_stream; sources, timings and errors land in `message`, the rewritten
    question in the `head` container above the answer."""
    for event in api.chat_events(body):
        if event["type"] == "sources":
            message["sources"] = event["sources"]
            message["rewritten_question"] = event.get("rewritten_question")
            if message["rewritten_question"]:
                head.caption(t("chat.rewritten", question=plain(message["rewritten_question"])))
        elif event["type"] == "delta":
            message["content"] += event["text"]
            yield answer_markdown(event["text"])
        elif event["type"] == "done":
            message["timings"] = event["timings_ms"]
            message["answered_from_kb"] = event.get("answered_from_kb", False)
        elif event["type"] == "error":
            message["error"] = event["message"]


def answer(api: KbqaClient, question: str, message: dict[str, Any]) -> None:
    """Fill `message` (already in the history) as the answer arrives: a click that interrupts this run (a mode
    or language switch) then keeps what has come so far instead of losing the whole answer."""
    state = st.session_state
    try:
        if state.mode == "kb_test":
            result = api.ask(request_body(question))
            message |= {"sources": result["sources"], "timings": result["timings_ms"]}
        else:
            if state.conversation_id is None:
                state.conversation_id = api.new_conversation(question[:40])
                st.query_params["c"] = state.conversation_id
            head, shown = st.container(), st.empty()
            with shown:
                st.write_stream(stream_answer(api, request_body(question), message, head))
            shown.markdown(cited_answer(message["content"], message.get("sources", [])))  # citations as links
            show_answer_details(message)  # the text and the rewritten question are already on the page
            return
    except ApiError as exc:
        message["api_error"] = {"message": exc.message, "status": exc.status, "code": exc.code}
    show_assistant(message)


def main() -> None:
    api = get_api()
    try:
        status = run_status()
        kb_names = [kb["name"] for kb in api.knowledge_bases()]
    except ApiError as exc:
        show_error(exc, api)
        return
    limits = status["limits"]
    init_state(limits)
    restore_conversation(api)
    st.segmented_control(t("mode.label"), MODES, key="mode", required=True, format_func=lambda m: t(f"mode.{m}"))
    top_k_for_mode(limits)
    sidebar(kb_names, limits)
    mode = st.session_state.mode
    ready = True
    if mode != "llm" and not kb_names:
        st.info(t("chat.no_kbs"))
        st.page_link(KB_PAGE, label=t("chat.go_kbs"), icon=":material/library_books:")
        ready = False
    elif mode != "llm" and not st.session_state.get("selected_kbs"):
        st.info(t("chat.pick_kb"))
        ready = False
    if mode != "kb_test" and not status["llm"]["reachable"]:
        st.warning(t("err.llm_down"))
    if mode == "kb_test":
        evaluation_panel.render(api, kb_names)
    show_history()
    question = st.chat_input(
        t(f"chat.placeholder.{mode}"), max_chars=limits["max_question_chars"], disabled=not ready, key="question"
    )
    if question:
        st.session_state.messages.append({"role": "user", "content": question, "mode": mode})
        with st.chat_message("user"):
            st.markdown(plain(question))
        message: dict[str, Any] = {"role": "assistant", "mode": mode, "content": "", "sources": []}
        st.session_state.messages.append(message)
        with st.chat_message("assistant"):
            answer(api, question, message)


main()
