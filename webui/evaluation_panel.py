"""The evaluation panel of 知识库测试: run a JSONL question set against a knowledge base (a background job of the
API) and show recall@k, MRR, latency, the suggested threshold, the misses and the answer check."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from kbqa_client import ApiError, KbqaClient
from webui.common import RETRIEVAL_MODES, plain, show_error
from webui.i18n import t

FINISHED = {"done", "failed", "cancelled"}


def render(api: KbqaClient, kb_names: list[str]) -> None:
    state = st.session_state
    with st.expander(t("eval.title"), icon=":material/analytics:", expanded=bool(state.get("eval_job"))):
        st.caption(t("eval.intro"))
        if not kb_names:
            return
        start_form(api, kb_names)
        job_id = state.get("eval_job")
        if job_id:
            polling = not state.get("eval_finished")
            st.fragment(run_every=1.0 if polling else None)(job_view)(api, job_id)


def start_form(api: KbqaClient, kb_names: list[str]) -> None:
    state = st.session_state
    if state.get("eval_kb") not in kb_names:
        state.eval_kb = (state.get("selected_kbs") or kb_names)[0]
    left, right = st.columns(2)
    kb = left.selectbox(t("eval.kb"), kb_names, key="eval_kb")
    modes = right.multiselect(
        t("eval.modes"), RETRIEVAL_MODES, default=RETRIEVAL_MODES, key="eval_modes", format_func=_mode_label
    )
    upload = st.file_uploader(t("eval.file"), type=["jsonl"], key="eval_file", help=t("eval.file_help"))
    left, right = st.columns(2)
    sizes_text = left.text_input(t("eval.chunk_sizes"), key="eval_sizes", placeholder="300, 800")
    sample = right.number_input(t("eval.answer_sample"), 0, 100, 0, key="eval_sample", help=t("eval.sample_help"))
    if not st.button(t("eval.start"), type="primary", disabled=not upload or not modes, icon=":material/play_arrow:"):
        return
    try:
        sizes = [int(part) for part in sizes_text.replace("，", ",").split(",") if part.strip()]
    except ValueError:
        st.error(t("eval.bad_sizes", text=plain(sizes_text)))
        return
    try:
        job = api.start_evaluation(kb, upload.getvalue(), modes, sizes, int(sample))
    except ApiError as exc:
        show_error(exc, api)
        return
    state.eval_job, state.eval_finished = job["id"], False
    st.rerun()


def job_view(api: KbqaClient, job_id: str) -> None:
    try:
        job = api.evaluation_job(job_id)
    except ApiError as exc:
        show_error(exc, api)
        return
    if job["status"] in FINISHED and not st.session_state.get("eval_finished"):
        st.session_state.eval_finished = True
        st.rerun(scope="app")  # stop polling; the report is drawn by the full run
    if job["status"] in ("queued", "running"):
        st.progress(job["progress"], text=t("eval.running", stage=plain(job["stage"] or job["status"])))
        if st.button(t("eval.cancel"), key="eval_cancel"):
            api.cancel_evaluation(job_id)
    elif job["status"] == "failed":
        st.error(t("eval.failed", reason=plain(job["error"] or "")))
    elif job["status"] == "cancelled":
        st.info(t("eval.cancelled"))
    else:
        report(job["report"])


def _mode_label(mode: str) -> str:
    return t(f"retrieval.{mode}")


def _run_label(run: dict[str, Any]) -> str:
    return f"{_mode_label(run['mode'])} @{run['chunk_size']}"


def report(data: dict[str, Any]) -> None:
    st.success(t("eval.done", questions=data["questions"], seconds=data["seconds"]))
    runs = data["runs"]
    summary = pd.DataFrame(
        {
            t("eval.col.run"): [_run_label(r) for r in runs],
            "recall@1": [r["overall"]["recall_at_1"] for r in runs],
            "recall@5": [r["overall"]["recall_at_5"] for r in runs],
            "recall@10": [r["overall"]["recall_at_10"] for r in runs],
            "MRR": [r["overall"]["mrr"] for r in runs],
            "p50 ms": [r["overall"]["latency"]["p50_ms"] for r in runs],
            "p95 ms": [r["overall"]["latency"]["p95_ms"] for r in runs],
            t("eval.col.chunks"): [r["chunk_count"] for r in runs],
            t("eval.col.misses"): [r["misses_total"] for r in runs],
        }
    )
    three = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(
        summary,
        hide_index=True,
        column_config={name: three for name in ("recall@1", "recall@5", "recall@10", "MRR")},
    )
    recall_chart(summary)
    by_source(runs)
    threshold(data.get("suggested_threshold"))
    misses(runs)
    answers(data.get("answers"))
    st.download_button(
        t("eval.download"),
        data=json.dumps(data, ensure_ascii=False, indent=2),
        file_name=f"kbqa-eval-{data['kb_name']}.json",
        mime="application/json",
        icon=":material/download:",
    )


def recall_chart(summary: pd.DataFrame) -> None:
    """recall@1/5/10 of every run as grouped horizontal bars on a fixed 0-1 axis."""
    run = t("eval.col.run")
    metrics = ["recall@1", "recall@5", "recall@10"]
    data = summary.melt(id_vars=[run], value_vars=metrics, var_name="k", value_name="recall")
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y(f"{run}:N", title=None, sort=None),
            yOffset=alt.YOffset("k:N", sort=metrics),
            x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("k:N", sort=metrics, title=None),
            tooltip=[run, "k", alt.Tooltip("recall:Q", format=".3f")],
        )
    )
    st.altair_chart(chart)


def by_source(runs: list[dict[str, Any]]) -> None:
    rows = [
        {
            t("eval.col.run"): _run_label(run),
            t("eval.col.source"): source,
            "recall@1": metrics["recall_at_1"],
            "recall@5": metrics["recall_at_5"],
            "MRR": metrics["mrr"],
            t("eval.col.questions"): metrics["questions"],
        }
        for run in runs
        for source, metrics in run.get("by_source", {}).items()
    ]
    if rows:
        st.caption(t("eval.by_source"))
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def threshold(suggestion: dict[str, Any] | None) -> None:
    if not suggestion:
        return
    if suggestion.get("threshold") is None:
        st.info(t("eval.no_threshold", note=plain(suggestion.get("note") or "")))
        return
    st.metric(t("eval.threshold"), f"{suggestion['threshold']:.2f}")
    st.caption(
        t(
            "eval.threshold_tradeoff",
            kept=suggestion["gold_kept"] * 100,
            dropped=suggestion["others_dropped"] * 100,
            criterion=plain(suggestion["criterion"]),
        )
    )
    if suggestion.get("neighbours"):
        st.dataframe(
            pd.DataFrame(
                {
                    t("eval.col.threshold"): [p["threshold"] for p in suggestion["neighbours"]],
                    t("eval.col.gold_kept"): [p["gold_kept"] for p in suggestion["neighbours"]],
                    t("eval.col.others_dropped"): [p["others_dropped"] for p in suggestion["neighbours"]],
                }
            ),
            hide_index=True,
            column_config={
                t("eval.col.gold_kept"): st.column_config.NumberColumn(format="percent"),
                t("eval.col.others_dropped"): st.column_config.NumberColumn(format="percent"),
            },
        )


def misses(runs: list[dict[str, Any]]) -> None:
    missed = [run for run in runs if run["misses"]]
    if not missed:
        return
    labels = {_run_label(run): run for run in missed}
    run = labels[st.selectbox(t("eval.misses_of"), list(labels), key="eval_misses_run")]
    st.caption(t("eval.misses_count", shown=len(run["misses"]), total=run["misses_total"]))
    for miss in run["misses"]:
        with st.container(border=True):
            rank = t("eval.gold_rank", rank=miss["gold_rank"]) if miss["gold_rank"] else t("eval.gold_absent")
            st.markdown(f"**{plain(miss['question'])}** · {rank}")
            expected = ", ".join(f"{k}: {v}" for k, v in miss["expected"].items())
            st.caption(t("eval.expected", expected=plain(expected)))
            st.dataframe(
                pd.DataFrame(
                    {
                        "#": [hit["rank"] for hit in miss["returned"]],
                        t("hits.score"): [hit["score"] for hit in miss["returned"]],
                        t("hits.file"): [hit["file_name"] for hit in miss["returned"]],
                        t("hits.text"): [hit["snippet"] for hit in miss["returned"]],
                    }
                ),
                hide_index=True,
            )


def answers(check: dict[str, Any] | None) -> None:
    if not check or not check.get("sample"):
        return
    st.caption(t("eval.answers"))
    if check.get("error"):
        st.warning(plain(check["error"]))
    columns = st.columns(3)
    checked = check["checked"]
    columns[0].metric(t("eval.contains"), f"{check['contains_answer_rate']:.0%} ({check['contains_answer']}/{checked})")
    columns[1].metric(t("eval.refused"), f"{check['refusal_rate']:.0%} ({check['refused']}/{checked})")
    with_gold = check["gold_retrieved"]
    columns[2].metric(
        t("eval.refused_with_gold"),
        f"{check['refused_with_gold_rate']:.0%} ({check['refused_with_gold']}/{with_gold})",
    )
    if check.get("items"):
        st.dataframe(
            pd.DataFrame(
                {
                    t("eval.col.question"): [i["question"] for i in check["items"]],
                    t("eval.col.answer"): [i["answer"] for i in check["items"]],
                    t("eval.contains"): [i["contains_answer"] for i in check["items"]],
                    t("eval.refused"): [i["refused"] for i in check["items"]],
                }
            ),
            hide_index=True,
        )
