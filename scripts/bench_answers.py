"""知识库问答 answers per lever, through the product's chat API: right (the expected text in the answer, refusals
although the gold passage was among the sources, the gold source's number [n] cited) and fast (first token, whole
answer, tokens/s, prompt tokens).

    .venv/bin/python scripts/bench_answers.py --sample 25 --lang zh --lever baseline --lever spec10 --lever quote
    .venv/bin/python scripts/bench_answers.py --corpus full --sample zh=100,en=50 --lang zh --lang en \
        --lever baseline --lever top3 --lever top3+english --json out.json --write   # the headline (quiet machine)

Setup: a knowledge base per language holding ../shared/eval's corpus, one .txt file per passage uploaded through
the API: `--corpus quick` takes every passage of the candidate questions' articles plus `--distractors` random
others, `--corpus full` the whole corpus. Only questions whose gold passage is among the top 5 sources
(知识库测试, default retrieval) are asked. The FastChat stack runs one llama.cpp worker per distinct worker setting
among the levers, each under its own model name; `kbqa serve` is restarted for each distinct API setting.

A lever is the behaviour before this benchmark's levers (template kb_default, top 5, best chunk first, 1,024
tokens, no speculation, whole chunks) with its own changes; join levers with "+" (`quote+best_last`). `defaults` is
what the configuration ships. Levers served by the same API process are asked question by question in turn, so the
machine's load falls on them alike; compare levers only within one run. Levers that send a question the same
request (`english` changes only English questions) share one answer: greedy decoding gives the same text. A lever
whose template has a system message gets a worker of its own: the worker resumes a prompt after the turns it
shares with the last one, so levers asked in turn would evict each other's. Two levers asked in turn that build
the same prompt: the second is resumed almost whole, and its first token says so, not the lever.

`--focus-kept 100,150,200` asks no model: for every eval question, the chunk holding its expected text beside the
first chunks of two random passages goes through chat.focus_chars' sentence choice at each budget; it prints the
share of questions whose expected text survives, and the share of characters kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.chat.focus import focus_texts  # noqa: E402
from app.chat.prompts import load_prompts  # noqa: E402
from app.eval.answers import contains_answer, is_refusal, refusal_phrases  # noqa: E402
from app.kb.documents import LoadedDocument, Section  # noqa: E402
from app.kb.splitter import split_document  # noqa: E402
from app.llm.stack import LLMStack  # noqa: E402
from app.settings import Settings, WorkerSettings  # noqa: E402
from kbqa_client import KbqaClient  # noqa: E402
from kbqa_client.client import api_path  # noqa: E402
from scripts.bench_chat import start_api  # noqa: E402
from scripts.benchdoc import EVAL, bench_settings, free_port, machine, read_jsonl, require_eval, write_section  # noqa: E402

UPLOAD_BATCH = 40
GOLD_TOP_K = 5  # a question is asked when its gold passage is among this many sources (default retrieval)
CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Lever:
    """What a lever changes: the chat request's fields, the API's KBQA_* settings, the llama.cpp worker's."""

    request: dict[str, Any] = field(default_factory=dict)
    api: dict[str, str] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    what: str = ""

    def __add__(self, other: Lever) -> Lever:
        what = " + ".join(w for w in (self.what, other.what) if w)
        return Lever({**self.request, **other.request}, {**self.api, **other.api}, {**self.worker, **other.worker},
                     what)


BEFORE = Lever(
    request={"template": "kb_default", "top_k": 5, "max_tokens": 1024, "focus_chars": 0},
    api={"KBQA_CHAT__CONTEXT_ORDER": "best_first", "KBQA_CHAT__FOCUS_POOLED": "false"},
    worker={"speculative_tokens": 0, "prefill_weights": "model"},
)
LEVERS = {
    "baseline": Lever(what="before: kb_default, top 5, best first, 1024 tokens, no speculation, whole chunks"),
    "spec4": Lever(worker={"speculative_tokens": 4}, what="prompt-lookup decoding, 4 drafted tokens"),
    "spec10": Lever(worker={"speculative_tokens": 10}, what="prompt-lookup decoding, 10 drafted tokens"),
    "max512": Lever(request={"max_tokens": 512}, what="at most 512 tokens"),
    "max256": Lever(request={"max_tokens": 256}, what="at most 256 tokens"),
    "short": Lever(request={"template": "kb_short"}, what="template kb_short (short answers)"),
    "quote": Lever(request={"template": "kb_quote"}, what="template kb_quote (quote the known information)"),
    "best_last": Lever(api={"KBQA_CHAT__CONTEXT_ORDER": "best_last"}, what="best chunk last, nearest the question"),
    "top3": Lever(request={"top_k": 3}, what="top 3 chunks"),
    "english": Lever(request={"template_en": "kb_english"},
                     what="kb_english for English questions (what chat.kb_template_english does)"),
    "system": Lever(request={"template": "kb_sys", "template_en": "kb_english_sys"},
                    what="the templates' instruction as the system message, evaluated once (kb_sys, kb_english_sys)"),
    "examples": Lever(request={"template": "kb_examples", "template_en": "kb_english_examples"},
                      what=("two worked questions before the real one, evaluated once (kb_examples, "
                           "kb_english_examples)")),
    "pool": Lever(api={"KBQA_CHAT__FOCUS_POOLED": "true"},
                  what="the sources share focus_chars x 3, the best-bearing sentences first (chat.focus_pooled)"),
    "q4_0": Lever(worker={"requantize": "q4_0"},
                  what="the GGUF requantized to Q4_0 (repacked for this CPU's matrix kernels)"),
    "bf16": Lever(worker={"prefill_weights": "bf16"},
                  what="prompts read with a bf16 copy of the GGUF, answers decoded with the GGUF (prefill_weights)"),
    **{f"focus{n}": Lever(request={"focus_chars": n}, what=f"each source cut to its sentences nearest the question, "
                          f"{n} characters (chat.focus_chars)") for n in (100, 120, 150, 200, 300)},
}


def lever(name: str) -> Lever:
    """A named lever, `defaults`, or levers joined with "+", each over the pre-change behaviour."""
    if name == "defaults":
        worker = Settings().fastchat.workers[0]
        return Lever(worker={"speculative_tokens": worker.speculative_tokens,
                             "prefill_weights": worker.prefill_weights}, what="the configured defaults")
    parts = name.split("+")
    unknown = [p for p in parts if p not in LEVERS]
    if unknown:
        raise SystemExit(f"unknown lever {', '.join(unknown)}; known: defaults, {', '.join(LEVERS)} (join with +)")
    combined = BEFORE
    for part in parts:
        combined = combined + LEVERS[part]
    return combined


@dataclass
class Question:
    id: str
    lang: str
    kb: str
    question: str
    answers: list[str]
    doc_id: str
    source: str


# -- the knowledge bases -----------------------------------------------------------------------------------------


def candidates(lang: str, count: int, seed: int) -> list[dict]:
    questions = read_jsonl(EVAL / f"{lang}_questions.jsonl")
    random.Random(seed).shuffle(questions)
    return questions[:count]


def passages_for(lang: str, chosen: list[dict], corpus: str, distractors: int, seed: int) -> list[dict]:
    """The whole corpus, or the chosen questions' articles plus random distractor passages."""
    passages = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
    if corpus == "full":
        return passages
    by_id = {p["doc_id"]: p for p in passages}
    articles = {by_id[q["doc_id"]]["article_id"] for q in chosen}
    kept = [p for p in passages if p["article_id"] in articles]
    others = [p for p in passages if p["article_id"] not in articles]
    return kept + random.Random(seed).sample(others, min(distractors, len(others)))


def ingest(client: KbqaClient, kb: str, passages: list[dict]) -> float:
    """Upload one .txt file per passage and wait until every one is indexed; the seconds it took."""
    started = time.perf_counter()
    client.create_knowledge_base(kb)
    for start in range(0, len(passages), UPLOAD_BATCH):
        files = [("files", (f"{p['doc_id']}.txt", p["text"].encode())) for p in passages[start : start + UPLOAD_BATCH]]
        client.request("POST", api_path("kbs", kb, "documents"), files=files, timeout=client.long_timeout)
    while True:
        states = [d["status"] for d in client.documents(kb)]
        if all(s in ("ready", "failed") for s in states):
            break
        time.sleep(2)  # another process (the API) indexes: only its state can be watched
    if failed := states.count("failed"):
        print(f"{kb}: {failed} of {len(states)} passages failed to index", file=sys.stderr)
    return time.perf_counter() - started


def gold_numbers(question: Question, sources: list[dict]) -> list[int]:
    return [s["number"] for s in sources if PurePosixPath(s["file_name"]).stem == question.doc_id]


def retrieved(client: KbqaClient, rows: list[dict], lang: str, kb: str, wanted: int) -> list[Question]:
    """The first `wanted` questions whose gold passage is among the top sources."""
    chosen: list[Question] = []
    for row in rows:
        question = Question(row["id"], lang, kb, row["question"], row["answers"], row["doc_id"], row["source"])
        result = client.ask({"question": question.question, "mode": "kb_test", "kb_names": [kb], "top_k": GOLD_TOP_K})
        if gold_numbers(question, result["sources"]):
            chosen.append(question)
        if len(chosen) == wanted:
            break
    return chosen


# -- asking ----------------------------------------------------------------------------------------------------


def request_body(question: Question, lever_: Lever, temperature: float) -> dict:
    """The chat request a lever sends for a question; `template_en` is the template of English questions."""
    fields = dict(lever_.request)
    english_template = fields.pop("template_en", None)
    if english_template and question.lang == "en":
        fields["template"] = english_template
    return {"question": question.question, "mode": "kb", "kb_names": [question.kb], "temperature": temperature,
            **fields}


def ask(client: KbqaClient, question: Question, body: dict, phrases: list[str]) -> dict:
    """One streamed answer and what it is judged by."""
    started = time.perf_counter()
    first = None
    sources: list[dict] = []
    answer, end = "", {}
    for event in client.chat_events(body):
        if event["type"] == "sources":
            sources = event["sources"]
        elif event["type"] == "delta":
            first = first or time.perf_counter()
            answer += event["text"]
        else:
            end = event
    total = time.perf_counter() - started
    gold = gold_numbers(question, sources)
    cited = {int(n) for n in CITATION.findall(answer)}
    usage = end.get("usage", {})
    return {
        "id": question.id, "lang": question.lang, "source": question.source, "answer": answer,
        "expected": question.answers, "end": end.get("type"), "finish_reason": end.get("finish_reason"),
        "gold_in_sources": bool(gold), "contains_expected": contains_answer(answer, question.answers),
        "refused": is_refusal(answer, phrases), "cites_gold": bool(cited & set(gold)), "cites_any": bool(cited),
        "ttft_s": (first - started) if first else None, "total_s": total,
        "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens", 0),
    }


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(rows: list[dict]) -> dict[str, Any]:
    with_gold = [r for r in rows if r["gold_in_sources"]]
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    decode_s = sum(r["total_s"] - r["ttft_s"] for r in rows if r["ttft_s"] is not None and r["completion_tokens"] > 1)
    decoded = sum(r["completion_tokens"] - 1 for r in rows if r["ttft_s"] is not None and r["completion_tokens"] > 1)

    def share(part: list[dict], key: str) -> float | None:
        return round(sum(r[key] for r in part) / len(part), 3) if part else None

    return {
        "answers": len(rows),
        "gold_in_sources": share(rows, "gold_in_sources"),
        "contains_expected": share(rows, "contains_expected"),
        "refused_with_gold": share(with_gold, "refused"),
        "cites_gold": share(with_gold, "cites_gold"),
        "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
        "total_p50_s": percentile([r["total_s"] for r in rows], 50),
        "total_p95_s": percentile([r["total_s"] for r in rows], 95),
        "tokens_per_s": decoded / decode_s if decode_s else None,
        "prompt_tokens_p50": percentile([r["prompt_tokens"] for r in rows if r["prompt_tokens"]], 50),
        "completion_tokens_p50": percentile([r["completion_tokens"] for r in rows], 50),
        "hit_limit": sum(r["finish_reason"] == "length" for r in rows),
        "failed": sum(r["end"] != "done" for r in rows),
    }


# -- the run ---------------------------------------------------------------------------------------------------


def worker_key(lever_: Lever) -> str:
    """One worker per worker setting and per template: a worker keeps the turns a prompt shares with the last
    one, so levers with different system messages or examples asked in turn on one worker would never reuse
    theirs."""
    template = lever_.request.get("template", "")
    prompts = load_prompts(Settings().chat.prompts_file)
    fixed = template and (prompts.kb_system(template) or prompts.kb_examples(template))
    options = sorted({**lever_.worker, **({"template": template} if fixed else {})}.items())
    return "bench-" + "-".join(f"{k}{v}" for k, v in options)


def requantized(model: Path, kind: str, folder: Path) -> Path:
    """`model` requantized to `kind` (llama.cpp's quantizer, allowing requantization), made once per run."""
    import llama_cpp

    from app.modelprep.llm_gguf import ModelFileError, requantize

    target = folder / f"{model.stem}.{kind}.gguf"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            requantize(model, target, {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[kind], kind)
        except ModelFileError as exc:
            raise SystemExit(str(exc)) from exc
    return target


def worker_settings(settings: Settings, name: str, options: dict[str, Any], threads: int) -> WorkerSettings:
    options = dict(options)
    model = Path(settings.fastchat.workers[0].model_path)
    if kind := options.pop("requantize", None):
        model = requantized(model, kind, settings.storage.data_dir)
    return WorkerSettings(port=free_port(), model_path=str(model), model_name=name, threads=threads, **options)


@contextmanager
def serving(settings: Settings, llm_url: str, api: dict[str, str]) -> Iterator[KbqaClient]:
    process, url = start_api(settings, llm_url, api)
    client = KbqaClient(url, timeout_s=600)
    try:
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def api_env(lever_: Lever, temperature: float) -> dict[str, str]:
    shipped = Settings()  # the configured limits, not bench_chat's short answers
    return {"KBQA_LLM__MODEL": worker_key(lever_), "KBQA_LLM__TEMPERATURE": str(temperature),
            "KBQA_LLM__MAX_TOKENS": str(shipped.llm.max_tokens), **lever_.api}


def run(args: argparse.Namespace, levers: dict[str, Lever]) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    settings = bench_settings("kbqa-bench-answers-")
    workers = {worker_key(lv): lv.worker for lv in levers.values()}
    settings = settings.with_changes(fastchat__workers=[
        worker_settings(settings, name, options, args.threads) for name, options in workers.items()
    ])
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for name, lv in levers.items():
        groups.setdefault(tuple(sorted(api_env(lv, args.temperature).items())), []).append(name)
    phrases = refusal_phrases(load_prompts(settings.chat.prompts_file))
    results: dict[str, list[dict]] = {name: [] for name in levers}
    setup: dict[str, Any] = {"passages": {}, "index_s": {}, "questions": {}}
    questions: list[Question] = []
    stack = LLMStack(settings, report=print)
    stack.start()
    try:
        for n, (env, names) in enumerate(groups.items()):
            with serving(settings, settings.fastchat.api_url, dict(env)) as client:
                if n == 0:
                    questions = prepare(client, args, setup)
                # Warm-up: loads the worker's pages and the API's embedder. Not a measured question: the worker would
                # resume it from its cache.
                warm_up = dataclasses.replace(questions[0], question="这是一次预热。")
                client.ask(request_body(warm_up, levers[names[0]], args.temperature) | {"max_tokens": 8})
                for i, question in enumerate(questions, start=1):
                    asked: dict[str, dict] = {}  # levers sending the same request share its answer (temperature 0)
                    for name in names:
                        body = request_body(question, levers[name], args.temperature)
                        key = json.dumps(body, sort_keys=True)
                        row = dict(asked[key], reused=True) if key in asked else ask(client, question, body, phrases)
                        asked.setdefault(key, row)
                        results[name].append(row)
                        if args.json:  # kept as it grows: a long run stopped early still has its answers
                            save(args, results, setup)
                        print(f"[{name}] {i}/{len(questions)} {row['ttft_s'] or 0:.1f}s/{row['total_s']:.1f}s "
                              f"{'ok ' if row['contains_expected'] else 'MISS'} {row['answer'][:80]!r}")
    finally:
        stack.stop()
    return results, setup


def prepare(client: KbqaClient, args: argparse.Namespace, setup: dict[str, Any]) -> list[Question]:
    questions: list[Question] = []
    for lang in args.lang:
        kb = f"bench_{lang}"
        wanted = args.sample[lang]
        rows = candidates(lang, int(wanted * 1.3) + 5, args.seed)
        passages = passages_for(lang, rows, args.corpus, args.distractors, args.seed)
        setup["passages"][lang] = len(passages)
        setup["index_s"][lang] = round(ingest(client, kb, passages), 1)
        chosen = retrieved(client, rows, lang, kb, wanted)
        setup["questions"][lang] = len(chosen)
        print(f"{lang}: {len(passages)} passages indexed in {setup['index_s'][lang]} s; {len(chosen)} questions "
              f"with the gold passage in the top {GOLD_TOP_K}")
        questions += chosen
    return questions


def save(args: argparse.Namespace, results: dict[str, list[dict]], setup: dict[str, Any]) -> None:
    summaries = {lang: {name: summarise([r for r in rows if r["lang"] == lang]) for name, rows in results.items()}
                 for lang in args.lang}
    args.json.write_text(json.dumps({"setup": setup, "summaries": summaries, "answers": results},
                                    ensure_ascii=False, indent=1), encoding="utf-8")


# -- the report ------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(summaries: dict[str, dict[str, Any]], levers: dict[str, Lever]) -> list[str]:
    lines = [
        "| lever | answers | contains expected | refused with gold | cites gold [n] | first token p50 / p95 s "
        "| total p50 / p95 s | tokens/s | prompt tokens p50 | answer tokens p50 | hit the limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        lines.append(
            f"| {name} ({levers[name].what}) | {s['answers']} | {fmt(s['contains_expected'])} "
            f"| {fmt(s['refused_with_gold'])} | {fmt(s['cites_gold'])} | {fmt(s['ttft_p50_s'], 1)} / "
            f"{fmt(s['ttft_p95_s'], 1)} | {fmt(s['total_p50_s'], 1)} / {fmt(s['total_p95_s'], 1)} "
            f"| {fmt(s['tokens_per_s'], 1)} | {fmt(s['prompt_tokens_p50'], 0)} | {fmt(s['completion_tokens_p50'], 0)} "
            f"| {s['hit_limit']} |"
        )
    return lines


def render(args: argparse.Namespace, argv: list[str], levers: dict[str, Lever], results: dict[str, list[dict]],
           setup: dict[str, Any]) -> str:
    lines = [
        "## Answers per lever (`scripts/bench_answers.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python scripts/bench_answers.py {' '.join(argv)}`",
        f"- Corpus: {args.corpus} ({', '.join(f'{k}: {v:,} passages' for k, v in setup['passages'].items())}); "
        f"questions with the gold passage in the top {GOLD_TOP_K}: "
        f"{', '.join(f'{k}: {v}' for k, v in setup['questions'].items())}; temperature {args.temperature}; "
        f"llama.cpp threads {args.threads or 'all cores'}.",
        "",
    ]
    for lang in args.lang:
        lines += [f"**{lang}**", ""]
        lines += table({name: summarise([r for r in rows if r["lang"] == lang]) for name, rows in results.items()},
                       levers)
        lines.append("")
    return "\n".join(lines)


def sample_sizes(text: str) -> dict[str, int]:
    """`100` for every language, or `zh=100,en=50`."""
    if text.isdigit():
        return {"zh": int(text), "en": int(text)}
    try:
        return {lang.strip(): int(count) for lang, count in (part.split("=") for part in text.split(","))}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or zh=N,en=M") from exc


def focus_kept(langs: list[str], budgets: list[str], seed: int) -> str:
    """The share of questions whose expected text survives chat.focus_chars' sentence choice, per budget ("p120":
    pooled, chat.focus_pooled)."""
    lines = ["| corpus | questions | " + " | ".join(f"{b} chars: kept (characters)" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for lang in langs:
        passages = {p["doc_id"]: p["text"] for p in read_jsonl(EVAL / f"{lang}_corpus.jsonl")}
        ids, rng = sorted(passages), random.Random(seed)
        cases = []
        for q in read_jsonl(EVAL / f"{lang}_questions.jsonl"):
            gold = [c for c in _chunks(passages[q["doc_id"]]) if contains_answer(c, q["answers"])]
            if gold:
                cases.append((q, [gold[0], *(_chunks(passages[rng.choice(ids)])[0] for _ in range(2))]))
        cells = []
        for budget in budgets:
            kept = chars = whole = 0
            for q, texts in cases:
                focused = focus_texts(q["question"], texts, int(budget.removeprefix("p")), budget.startswith("p"))
                kept += contains_answer(focused[0], q["answers"])
                chars += sum(map(len, focused))
                whole += sum(map(len, texts))
            cells.append(f"{kept / len(cases):.3f} ({chars / whole:.2f})")
        lines.append(f"| {lang} | {len(cases)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _chunks(text: str) -> list[str]:
    return [chunk.text for chunk in split_document(LoadedDocument(sections=[Section(text=text)]))]


def main() -> None:
    # A stopped run stops what it started (`kbqa serve`, the FastChat stack): SIGTERM unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=sample_sizes, default="25",
                        help="questions per language (gold passage retrieved): N, or per language as zh=100,en=50")
    parser.add_argument("--lang", action="append", choices=["zh", "en"], help="repeatable; default zh")
    parser.add_argument("--lever", action="append", help="repeatable; default: baseline and defaults")
    parser.add_argument("--corpus", choices=["quick", "full"], default="quick")
    parser.add_argument("--distractors", type=int, default=300, help="quick corpus: random passages besides")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads per worker; 0: all cores")
    parser.add_argument("--json", type=Path, help="write every answer and the summaries here")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--focus-kept", type=lambda v: v.split(","),
                        help="budgets (p120: pooled): print how often the expected text survives focus_chars "
                        "(no model)")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    args.lang = list(dict.fromkeys(args.lang or ["zh"]))
    if args.focus_kept:
        require_eval()
        print(focus_kept(args.lang, args.focus_kept, args.seed))
        return
    if missing := [lang for lang in args.lang if lang not in args.sample]:
        parser.error(f"--sample names no count for {', '.join(missing)}")
    require_eval()
    levers = {name: lever(name) for name in dict.fromkeys(args.lever or ["baseline", "defaults"])}
    results, setup = run(args, levers)
    section = render(args, argv, levers, results, setup)
    print(section)
    if args.json:
        save(args, results, setup)
    if args.write:
        write_section("bench_answers", section)


if __name__ == "__main__":
    main()
