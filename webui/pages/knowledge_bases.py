"""The knowledge-base page: create and delete knowledge bases, upload documents and watch them being indexed,
list, inspect and delete documents."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from kbqa_client import ApiError, KbqaClient
from webui.common import get_api, human_size, plain, run_status, show_error
from webui.i18n import t
from webui.preview import show_preview

CHUNKS_PER_PAGE = 10
FINISHED = {"ready", "failed"}


def create_form(api: KbqaClient) -> None:
    expander = st.expander(t("kbs.create"), expanded=not st.session_state.get("has_kbs", True), icon=":material/add:")
    with expander, st.form("create_kb", clear_on_submit=True, border=False):
        name = st.text_input(t("kbs.name"), max_chars=64)
        description = st.text_input(t("kbs.description"), max_chars=2000)
        if not st.form_submit_button(t("kbs.create_button"), type="primary"):
            return
    try:
        created = api.create_knowledge_base(name, description)
    except ApiError as exc:
        show_error(exc, api)
        return
    st.session_state.kb_selected = created["name"]
    st.toast(t("kbs.created", name=plain(created["name"])), icon=":material/check:")
    st.rerun()


def overview(kb: dict[str, Any]) -> None:
    columns = st.columns(4)
    columns[0].metric(t("kbs.documents"), kb["document_count"])
    columns[1].metric(t("kbs.ready"), kb["ready_count"])
    columns[2].metric(t("kbs.chunks"), kb["chunk_count"])
    columns[3].metric(t("kbs.chunk_size"), kb["chunk_size"])
    if kb["description"]:
        st.caption(plain(kb["description"]))


def delete_kb(api: KbqaClient, name: str) -> None:
    if not st.session_state.get("confirm_delete_kb"):
        if st.button(t("kbs.delete"), icon=":material/delete:", key="delete_kb"):
            st.session_state.confirm_delete_kb = True
            st.rerun()
        return
    st.warning(t("kbs.delete_confirm", name=plain(name)))
    left, right = st.columns(2)
    if left.button(t("kbs.confirm"), type="primary", key="confirm_delete_kb_button"):
        st.session_state.confirm_delete_kb = False
        try:
            api.delete_knowledge_base(name)
        except ApiError as exc:
            show_error(exc, api)
            return
        st.session_state.pop("kb_selected", None)
        st.toast(t("kbs.deleted", name=plain(name)), icon=":material/delete:")
        st.rerun()
    if right.button(t("kbs.cancel"), key="cancel_delete_kb"):
        st.session_state.confirm_delete_kb = False
        st.rerun()


def upload(api: KbqaClient, kb: str, file_types: list[str], max_mb: float) -> None:
    round_ = st.session_state.setdefault("upload_round", 0)
    files = st.file_uploader(
        t("kbs.upload"),
        type=[ext.lstrip(".") for ext in file_types],
        accept_multiple_files=True,
        key=f"uploader_{round_}",
        help=t("kbs.upload_help", types=" ".join(file_types), mb=max_mb),
        max_upload_size=max(1, int(max_mb)),
    )
    if not st.button(t("kbs.upload_button"), type="primary", disabled=not files, icon=":material/upload:"):
        return
    watching = st.session_state.setdefault("watching", {})
    st.session_state.setdefault("finished", {}).pop(kb, None)
    st.session_state.upload_notes = []
    for file in files or []:
        try:
            outcome = api.upload(kb, file.name, file.getvalue())
        except ApiError as exc:
            st.session_state.setdefault("upload_notes", []).append(
                ("error", t("kbs.upload_failed", name=plain(file.name), detail=plain(exc.message)))
            )
            continue
        document = outcome["document"]
        if outcome.get("duplicate"):
            st.session_state.setdefault("upload_notes", []).append(
                ("info", t("kbs.duplicate", name=plain(file.name), message=plain(outcome["message"])))
            )
        else:
            watching[document["id"]] = kb
            st.toast(t("kbs.uploaded", name=plain(file.name)), icon=":material/schedule:")
    st.session_state.upload_round = round_ + 1  # a fresh uploader: the files just sent are cleared
    st.rerun()


def upload_notes() -> None:
    for kind, text in st.session_state.get("upload_notes", []):
        (st.error if kind == "error" else st.info)(text)


def progress(api: KbqaClient, kb: str) -> None:
    """Each watched document's progress, polled every second until all are ready or failed; then their outcome
    moves to the page's notes and the whole page refreshes once (table and counts)."""
    watching: dict[str, str] = st.session_state.get("watching", {})
    watched = {doc_id for doc_id, name in watching.items() if name == kb}
    if not watched:
        return
    try:
        documents = sorted(api.documents_by_id(kb, watched).values(), key=lambda d: d["created_at"])
    except ApiError as exc:
        show_error(exc, api)
        return
    st.caption(t("kbs.progress"))
    for doc in documents:
        name, status = plain(doc["filename"]), t(f"doc.{doc['status']}")
        if reading_pages(doc):
            label = t("kbs.doc_reading", name=name, status=status, done=doc["pages_done"], total=doc["pages_total"])
        else:
            done, total = doc["chunks_embedded"], doc["chunk_count"] or "?"
            label = t("kbs.doc_progress", name=name, status=status, done=done, total=total)
        st.progress(shown_progress(doc), text=label)
    if all(d["status"] in FINISHED for d in documents):
        for doc_id in watched:
            watching.pop(doc_id, None)
        st.session_state.setdefault("finished", {})[kb] = [outcome_note(d) for d in documents]
        st.rerun(scope="app")


def reading_pages(doc: dict[str, Any]) -> bool:
    """Whether the document is being read page by page (OCR takes seconds a page) and not yet embedded."""
    return doc["status"] == "processing" and bool(doc.get("pages_total")) and not doc["chunk_count"]


def shown_progress(doc: dict[str, Any]) -> float:
    """Pages read while a document is read page by page, then chunks embedded."""
    return doc["pages_done"] / doc["pages_total"] if reading_pages(doc) else doc["progress"]


def how_read(doc: dict[str, Any]) -> str:
    """文本层 n 页 · OCR m 页（置信度 x）· 无内容 k 页, once the document was read; the page being read before."""
    reading = doc.get("reading")
    if reading is None:
        return t("read.reading", done=doc["pages_done"], total=doc["pages_total"]) if reading_pages(doc) else ""
    parts = [t("read.text_pages", n=reading["text_pages"])] if reading["text_pages"] else []
    ocr = [t(f"read.{key}", n=reading[key]) for key in ("ocr_pages", "ocr_pictures") if reading[key]]
    if ocr and reading["ocr_confidence"] is not None:
        ocr[-1] += t("read.confidence", confidence=reading["ocr_confidence"])
    parts += ocr
    if reading["empty_pages"]:
        parts.append(t("read.empty_pages", n=len(reading["empty_pages"])))
    return " · ".join(parts) or t("read.text")


def outcome_note(doc: dict[str, Any]) -> tuple[str, str]:
    name = plain(doc["filename"])
    if doc["status"] == "ready":
        return "ready", t("kbs.doc_ready", name=name, chunks=doc["chunk_count"])
    return "failed", t("kbs.doc_failed", name=name, error=plain(doc["error"] or ""))


def finished_notes(kb: str) -> None:
    for kind, text in st.session_state.get("finished", {}).get(kb, []):
        if kind == "ready":
            st.success(text, icon=":material/check_circle:")
        else:
            st.error(text, icon=":material/error:")


def documents_table(documents: list[dict[str, Any]]) -> None:
    table = pd.DataFrame(
        {
            t("col.filename"): [d["filename"] for d in documents],
            t("col.status"): [t(f"doc.{d['status']}") for d in documents],
            t("col.progress"): [shown_progress(d) for d in documents],
            t("col.pages"): [str(d["pages"] or "") for d in documents],
            t("col.reading"): [how_read(d) for d in documents],
            t("col.chunks"): [d["chunk_count"] for d in documents],
            t("col.size"): [human_size(d["size_bytes"]) for d in documents],
            t("col.created"): [pd.Timestamp(d["created_at"]).strftime("%Y-%m-%d %H:%M") for d in documents],
            t("col.error"): [d["error"] or "" for d in documents],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            t("col.progress"): st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
        },
    )


def document_list(api: KbqaClient, kb: str, indexing: bool) -> None:
    """The documents table; while some are `indexing` it is refreshed every second (its progress bars move), and
    the whole page once when they are all done (counts, actions)."""
    try:
        documents = api.documents(kb)
    except ApiError as exc:
        show_error(exc, api)
        return
    documents_table(documents)
    if indexing and all(d["status"] in FINISHED for d in documents):
        st.rerun(scope="app")


def document_actions(api: KbqaClient, kb: str, documents: list[dict[str, Any]]) -> None:
    by_id = {d["id"]: d for d in documents}
    doc_id = st.selectbox(
        t("kbs.doc_select"), list(by_id), format_func=lambda i: by_id[i]["filename"], key=f"doc_selected_{kb}"
    )
    if doc_id is None:
        return
    doc = by_id[doc_id]
    left, right = st.columns(2)
    if right.button(t("kbs.delete_doc"), icon=":material/delete:", key="delete_doc"):
        try:
            api.delete_document(kb, doc_id)
        except ApiError as exc:
            show_error(exc, api)
            return
        st.toast(t("kbs.doc_deleted", name=plain(doc["filename"])), icon=":material/delete:")
        st.rerun()
    if left.toggle(t("kbs.show_chunks"), key="show_chunks"):
        chunk_viewer(api, kb, doc)


def chunk_viewer(api: KbqaClient, kb: str, doc: dict[str, Any]) -> None:
    total = doc["chunk_count"]
    page_key = f"chunk_page_{doc['id']}"
    page = st.session_state.setdefault(page_key, 0)
    try:
        chunks = api.chunks(kb, doc["id"], page * CHUNKS_PER_PAGE, CHUNKS_PER_PAGE)
    except ApiError as exc:
        show_error(exc, api)
        return
    if chunks:
        start = page * CHUNKS_PER_PAGE + 1
        st.caption(
            t("kbs.chunks_of", start=start, end=start + len(chunks) - 1, total=total, name=plain(doc["filename"]))
        )
    for chunk in chunks:
        with st.container(border=True):
            where = t("chat.page", page=chunk["page"]) if chunk.get("page") else ""
            where += t("chat.ocr") if chunk.get("ocr") else ""
            heading = f" · {plain(chunk['heading'])}" if chunk.get("heading") else ""
            st.caption(t("kbs.chunk_caption", index=chunk["chunk_index"], page=where, heading=heading))
            key = f"{doc['id']}-{chunk['chunk_index']}"
            if st.toggle(t("preview.open"), key=f"chunk-preview-{key}"):
                show_preview({"kb_name": kb, "doc_id": doc["id"], "chunk_index": chunk["chunk_index"]}, key)
            else:
                st.text(chunk["text"])
    left, right = st.columns(2)
    if left.button(t("kbs.prev"), disabled=page == 0, key="chunks_prev"):
        st.session_state[page_key] = page - 1
        st.rerun()
    if right.button(t("kbs.next"), disabled=(page + 1) * CHUNKS_PER_PAGE >= total, key="chunks_next"):
        st.session_state[page_key] = page + 1
        st.rerun()


def main() -> None:
    api = get_api()
    st.title(t("kbs.title"))
    try:
        status = run_status()
        kbs = {kb["name"]: kb for kb in api.knowledge_bases()}
    except ApiError as exc:
        show_error(exc, api)
        return
    st.session_state.has_kbs = bool(kbs)
    create_form(api)
    if not kbs:
        st.info(t("kbs.none"))
        return
    if st.session_state.get("kb_selected") not in kbs:
        st.session_state.kb_selected = next(iter(kbs))
    name = st.selectbox(t("kbs.select"), list(kbs), key="kb_selected")
    overview(kbs[name])
    upload(api, name, status["file_types"], status["limits"]["max_upload_mb"])
    upload_notes()
    watching = any(kb == name for kb in st.session_state.get("watching", {}).values())
    st.fragment(run_every=1.0 if watching else None)(progress)(api, name)
    finished_notes(name)
    try:
        documents = api.documents(name)
    except ApiError as exc:
        show_error(exc, api)
        return
    if not documents:
        st.info(t("kbs.no_documents"))
    else:
        indexing = any(d["status"] not in FINISHED for d in documents)
        st.fragment(run_every=1.0 if indexing else None)(document_list)(api, name, indexing)
        document_actions(api, name, documents)
    delete_kb(api, name)


main()
