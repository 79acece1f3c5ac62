"""An evaluation report (the API's JSON) as rich tables, for `kbqa eval`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

METRIC_COLUMNS = ["recall@1", "recall@5", "recall@10", "MRR", "p50 ms", "p95 ms", "max ms"]


def _metric_cells(m: dict[str, Any]) -> list[str]:
    lat = m["latency"]
    return [
        f"{m['recall_at_1']:.3f}",
        f"{m['recall_at_5']:.3f}",
        f"{m['recall_at_10']:.3f}",
        f"{m['mrr']:.3f}",
        f"{lat['p50_ms']:.1f}",
        f"{lat['p95_ms']:.1f}",
        f"{lat['max_ms']:.1f}",
    ]


def metrics_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['kb_name']}: {report['questions']} questions, top {report['top_k']}")
    for column in ["chunk size", "mode", "set", "n", *METRIC_COLUMNS]:
        table.add_column(column, justify="left" if column in {"mode", "set"} else "right")
    for run in report["runs"]:
        size = f"{run['chunk_size']}/{run['chunk_overlap']}" + (" (copy)" if run["temporary_kb"] else "")
        groups = [("all", run["overall"]), *run["by_source"].items()]
        for name, m in groups if len(groups) > 2 else groups[:1]:
            table.add_row(size, run["mode"], name, str(m["questions"]), *_metric_cells(m))
    return table


def threshold_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for run in report["runs"]:
        t = run["threshold"]
        where = f"{run['mode']} @{run['chunk_size']}"
        if t["threshold"] is None:
            lines.append(f"{where}: no threshold ({t['note']})")
            continue
        around = ", ".join(
            f"{p['threshold']:.2f} keeps {p['gold_kept']:.0%} drops {p['others_dropped']:.0%}" for p in t["neighbours"]
        )
        lines.append(
            f"{where}: {t['threshold']:.2f} keeps {t['gold_kept']:.1%} of {t['gold_hits']} gold hits, drops "
            f"{t['others_dropped']:.1%} of {t['other_hits']} others ({around})"
        )
    return lines


def miss_lines(report: dict[str, Any], shown: int) -> list[str]:
    lines = []
    for run in report["runs"]:
        where = f"{run['mode']} @{run['chunk_size']}"
        lines.append(f"{where}: {run['misses_total']} questions without a gold hit in the top 5")
        for miss in run["misses"][:shown]:
            rank = "not in the top 10" if miss["gold_rank"] is None else f"gold at rank {miss['gold_rank']}"
            lines.append(f"  line {miss['line']}: {miss['question']}  ({rank}; expected {miss['expected']})")
            for hit in miss["returned"]:
                snippet = hit["snippet"].replace("\n", " ")[:80]
                where = f"{hit['file_name']} #{hit['chunk_index']}"
                lines.append(f"    [{hit['rank']}] {where} {hit['score']:.3f} {snippet}")
    return lines


def answer_lines(report: dict[str, Any]) -> list[str]:
    check = report.get("answers")
    if not check:
        return []
    lines = [
        f"answers checked: {check['checked']} of {check['sample']}; contain the expected text: "
        f"{check['contains_answer']} ({check['contains_answer_rate']:.0%}); refused: {check['refused']} "
        f"({check['refusal_rate']:.0%}), {check['refused_with_gold_retrieved']} of them with the gold chunk retrieved "
        f"(gold retrieved for {check['gold_retrieved']})"
    ]
    if check.get("error"):
        lines.append(f"stopped: {check['error']}")
    return lines


def print_report(console: Console, report: dict[str, Any], misses_shown: int) -> None:
    console.print(metrics_table(report))
    suggested = report.get("suggested_threshold")
    if suggested and suggested.get("threshold") is not None:
        console.print(f"suggested score threshold: {suggested['threshold']:.2f}", highlight=False)
    for title, lines in (
        ("score thresholds (criterion: max gold kept - others kept)", threshold_lines(report)),
        ("misses", miss_lines(report, misses_shown)),
        ("end-to-end answers", answer_lines(report)),
    ):
        if lines:
            console.rule(title)
            for line in lines:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
