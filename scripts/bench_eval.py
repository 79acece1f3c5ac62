"""Retrieval quality on the full ../shared/eval corpora, measured with the product's own evaluation service.

    .venv/bin/python scripts/bench_eval.py            # writes its section of docs/benchmarks.md

zh: all 3,104 passages of zh_corpus.jsonl (one .txt per passage, named by its doc_id) and the 600 questions of
zh_questions.jsonl, dense / bm25 / hybrid, CMRC and DRCD separately, at the default chunk size and the other
sizes of --zh-chunk-sizes (temporary copies indexed by the service). en: en_corpus.jsonl and en_questions.jsonl.
With --answer-sample N, N zh questions are also answered by the real LLM (FastChat + llama.cpp worker).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.eval.models import EvalReport, RunResult  # noqa: E402
from app.llm.stack import LLMStack  # noqa: E402
from app.services import Services  # noqa: E402
from app.settings import Settings  # noqa: E402
from scripts.benchdoc import (  # noqa: E402
    BENCHMARKS_MD,
    EVAL,
    bench_settings,
    machine,
    read_jsonl,
    require_eval,
    write_section,
)

TARGETS = [  # (corpus, source or None for all, metric, floor) from the issue
    ("zh", None, "recall_at_5", 0.97),
    ("zh", "drcd_dev(tw2s)", "recall_at_5", 0.95),
    ("zh", "drcd_dev(tw2s)", "recall_at_1", 0.85),
    ("en", None, "recall_at_5", 0.96),
]
SOURCE_NAMES = {"cmrc2018_dev": "CMRC", "drcd_dev(tw2s)": "DRCD", "squad_v1.1_dev": "SQuAD"}


def ingest(services: Services, kb: str, lang: str, limit: int | None) -> tuple[int, float]:
    """Every passage as `<doc_id>.txt`; returns (chunks, seconds)."""
    passages = read_jsonl(EVAL / f"{lang}_corpus.jsonl", limit)
    kbs = services.knowledge_bases
    kbs.create(kb)
    started = time.perf_counter()
    for start in range(0, len(passages), 200):
        batch = passages[start : start + 200]
        kbs.upload_many(kb, [(f"{p['doc_id']}.txt", io.BytesIO(p["text"].encode())) for p in batch])
    services.queue.wait_idle()
    seconds = time.perf_counter() - started
    info = kbs.get(kb)
    if info.ready_count != len(passages):
        sys.exit(f"{kb}: only {info.ready_count} of {len(passages)} passages were indexed")
    return info.chunk_count, seconds


def evaluate(services: Services, kb: str, lang: str, sizes: list[int], sample: int) -> EvalReport:
    service = services.evaluation
    questions = service.parse_jsonl((EVAL / f"{lang}_questions.jsonl").read_bytes())
    options = service.options(chunk_sizes=sizes, answer_sample=sample)
    last = [0.0]

    def progress(fraction: float, stage: str) -> None:
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            print(f"  {fraction:4.0%} {stage}", flush=True)

    return service.run(kb, questions, options, progress)


def fmt(value: float) -> str:
    return f"{value:.3f}"


def metric_rows(lang: str, report: EvalReport) -> list[str]:
    rows = []
    for run in report.runs:
        groups = [("all", run.overall), *((SOURCE_NAMES.get(s, s), m) for s, m in run.by_source.items())]
        if len(groups) == 2:  # one source: the overall row says it all
            groups = groups[:1]
        for name, m in groups:
            rows.append(
                f"| {lang} | {run.chunk_size} | {run.mode.value} | {name} | {m.questions} | {fmt(m.recall_at_1)} | "
                f"{fmt(m.recall_at_5)} | {fmt(m.recall_at_10)} | {fmt(m.mrr)} | {m.latency.p50_ms:.1f} | "
                f"{m.latency.p95_ms:.1f} |"
            )
    return rows


def own_hybrid(report: EvalReport) -> RunResult:
    return next(r for r in report.runs if r.mode.value == "hybrid" and not r.temporary_kb)


def target_lines(reports: dict[str, EvalReport]) -> list[str]:
    lines = []
    for lang, source, metric, floor in TARGETS:
        if lang not in reports:
            continue
        run = own_hybrid(reports[lang])
        measured = getattr(run.overall if source is None else run.by_source[source], metric)
        where = lang + ("" if source is None else f" {SOURCE_NAMES[source]}")
        verdict = "met" if measured >= floor else "**missed**"
        lines.append(f"- {where} hybrid {metric.replace('_at_', '@')} >= {floor}: {fmt(measured)} ({verdict})")
    return lines


def threshold_lines(reports: dict[str, EvalReport]) -> list[str]:
    lines = []
    for lang, report in reports.items():
        t = report.suggested_threshold
        if t is None or t.threshold is None:
            continue
        around = ", ".join(
            f"{p.threshold:.2f}: keeps {p.gold_kept:.0%} / drops {p.others_dropped:.0%}" for p in t.neighbours
        )
        lines.append(
            f"- {lang}: **{t.threshold:.2f}** keeps {t.gold_kept:.1%} of the {t.gold_hits} gold hits and drops "
            f"{t.others_dropped:.1%} of the {t.other_hits} others (neighbours: {around})"
        )
    return lines


def miss_lines(reports: dict[str, EvalReport], shown: int) -> list[str]:
    lines = []
    for lang, report in reports.items():
        run = own_hybrid(report)
        lines.append(f"- {lang} hybrid: {run.misses_total} of {run.overall.questions} questions missed the top 5.")
        for miss in run.misses[:shown]:
            got = "; ".join(f"{h.file_name} ({h.score:.2f})" for h in miss.returned)
            where = "not in the top 10" if miss.gold_rank is None else f"gold at rank {miss.gold_rank}"
            lines.append(f"  - {miss.question} (expected {miss.expected.get('doc_id')}, {where}); got: {got}")
    return lines


def answer_lines(report: EvalReport) -> list[str]:
    check = report.answers
    if check is None:
        return []
    if check.error:
        return [f"End-to-end answer check stopped: {check.error}"]
    return [
        f"End-to-end answers (zh, {check.checked} questions spread over the set, Qwen2.5-Coder-1.5B Q4_K_M, kb mode, "
        f"hybrid top 5): the answer contains the expected text in **{check.contains_answer} of {check.checked}** "
        f"({check.contains_answer_rate:.0%}); refusals {check.refused} ({check.refusal_rate:.0%}), of which "
        f"{check.refused_with_gold_retrieved} although the gold passage was among the sources "
        f"(gold retrieved for {check.gold_retrieved}). Refusal detection: the refusal phrases of configs/prompts.yaml "
        "and common refusal wordings (app/eval/answers.py)."
    ]


def render(args: argparse.Namespace, reports: dict[str, EvalReport], ingests: dict[str, tuple[int, float]]) -> str:
    command = "scripts/bench_eval.py" + (f" --zh-chunk-sizes {args.zh_chunk_sizes}" if args.zh_chunk_sizes else "")
    command += f" --answer-sample {args.answer_sample}"
    corpora = ", ".join(
        f"{lang}: {reports[lang].questions} questions over {ingests[lang][1]:.0f} s of ingestion "
        f"({ingests[lang][0]} chunks at the default chunk size)"
        for lang in reports
    )
    lines = [
        "## Retrieval quality on the full eval corpora (`scripts/bench_eval.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python {command}`",
        f"- Corpora: every passage of ../shared/eval as one document; {corpora}. Measured by the evaluation "
        "service (`kbqa eval`, `POST /api/kbs/{kb}/eval`): top 10 per question, a hit is gold when it comes from "
        "the question's passage; latency is the whole search call, query embedding included.",
        "",
        "Targets (issue 7), hybrid at the default chunk size:",
        "",
        *target_lines(reports),
        "",
        "| corpus | chunk size | mode | set | n | recall@1 | recall@5 | recall@10 | MRR | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, report in reports.items():
        lines += metric_rows(lang, report)
    lines += [
        "",
        "Suggested score threshold (hybrid, from the evaluation; criterion: maximise the share of gold "
        "hits kept minus the share of other hits kept):",
        "",
        *threshold_lines(reports),
        "",
    ]
    lines += ["Misses (gold passage not in the hybrid top 5), the first few with what came back instead:", ""]
    lines += miss_lines(reports, args.misses_shown)
    if "zh" in reports and reports["zh"].answers:
        lines += ["", *answer_lines(reports["zh"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zh-chunk-sizes", default="300,800", help="other chunk sizes to try on zh (comma-separated)")
    parser.add_argument("--en-chunk-sizes", default="", help="other chunk sizes to try on en (comma-separated)")
    parser.add_argument("--answer-sample", type=int, default=20, help="zh questions answered by the LLM (0: none)")
    parser.add_argument("--langs", default="zh,en")
    parser.add_argument("--passages", type=int, default=None, help="only the first N passages (a quick try)")
    parser.add_argument("--misses-shown", type=int, default=5)
    parser.add_argument("--json-out", type=Path, default=None, help="also write the full reports here")
    parser.add_argument("--dry-run", action="store_true", help="print the figures; do not write docs/benchmarks.md")
    args = parser.parse_args()
    require_eval()
    settings: Settings = bench_settings("kbqa-bench-eval-")
    stack = None
    if args.answer_sample:
        stack = LLMStack(settings, report=print)
        stack.start()
    services = Services(settings)
    reports: dict[str, EvalReport] = {}
    ingests: dict[str, tuple[int, float]] = {}
    try:
        for lang in args.langs.split(","):
            kb = f"eval-{lang}"
            ingests[lang] = ingest(services, kb, lang, args.passages)
            print(f"{kb}: {ingests[lang][0]} chunks in {ingests[lang][1]:.0f} s", flush=True)
            sizes = [int(s) for s in getattr(args, f"{lang}_chunk_sizes").split(",") if s]
            reports[lang] = evaluate(services, kb, lang, sizes, args.answer_sample if lang == "zh" else 0)
    finally:
        services.close()
        if stack:
            stack.stop()
    if args.json_out:
        args.json_out.write_text(
            json.dumps({k: r.model_dump(mode="json") for k, r in reports.items()}, ensure_ascii=False, indent=1)
        )
    section = render(args, reports, ingests)
    print(section)
    if not args.dry_run:
        write_section("bench_eval", section)
        print(f"written to {BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
