"""The embedding runtimes side by side on the full eval corpora: throughput and dense recall@5.

Every passage of ../shared/eval is cut by the product's splitter (500 characters, as a new knowledge base does),
and each runtime encodes exactly those chunks, in the product's batches (embedding.batch_size), one after the other
in this process: PyTorch fp32 (the reference), ONNX Runtime dynamic int8 and OpenVINO static int8. Dense recall@5
is measured on every eval question against the chunks of the whole corpus (a passage counts as found when one of
its chunks is among the five nearest), so a runtime that loses accuracy shows here before the product's hybrid
search hides it. Throughput is the bare model's; ingestion through `kbqa serve` is scripts/bench_ingest.py.

    .venv/bin/python scripts/bench_embedding.py [--langs zh,en] [--limit N] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.kb.documents import LoadedDocument, Section
from app.kb.splitter import split_document
from app.retrieval.embeddings import Embedder
from app.settings import DEFAULT_EMBEDDING_DIRNAME, EmbeddingSettings, Settings
from scripts.benchdoc import EVAL, machine, read_jsonl, require_eval, write_section

BACKENDS = ("torch", "onnx-int8", "openvino-int8")
COMMAND = "scripts/bench_embedding.py"
LABELS = {"torch": "PyTorch fp32", "onnx-int8": "ONNX Runtime dynamic int8", "openvino-int8": "OpenVINO static int8"}


def chunks_of(lang: str, limit: int) -> tuple[list[str], list[str], list[dict]]:
    """The chunk texts of the corpus, the passage id of each, and the questions whose passage is among them."""
    corpus = read_jsonl(EVAL / f"{lang}_corpus.jsonl", limit or None)
    texts, owners = [], []
    for row in corpus:
        for chunk in split_document(LoadedDocument(sections=[Section(text=row["text"])])):
            texts.append(chunk.text)
            owners.append(row["doc_id"])
    present = set(owners)
    questions = [q for q in read_jsonl(EVAL / f"{lang}_questions.jsonl") if q["doc_id"] in present]
    return texts, owners, questions


def measure(backend: str, model_dir: Path, texts: list[str], owners: list[str], questions: list[dict]) -> dict:
    defaults = EmbeddingSettings()
    embedder = Embedder(str(model_dir), backend=backend, batch_size=defaults.batch_size)
    embedder.encode_passages(texts[:8])  # loaded and warm: the timing is the encoding alone
    started = time.perf_counter()
    vectors = embedder.encode_passages(texts)
    seconds = time.perf_counter() - started
    queries = embedder.encode_texts([q["question"] for q in questions], embedder.query_prompt)
    owner = np.array(owners)
    found = 0
    for question, scores in zip(questions, queries @ vectors.T, strict=True):
        nearest = list(dict.fromkeys(owner[np.argsort(-scores)[:50]]))[:5]
        found += question["doc_id"] in nearest
    return {"chunks/s": len(texts) / seconds, "seconds": seconds, "recall@5": found / len(questions)}


def render(args: argparse.Namespace, results: dict[str, dict]) -> str:
    lines = [
        "## Embedding runtimes on the full eval corpora (`scripts/bench_embedding.py`)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, `{' '.join([COMMAND, *sys.argv[1:]])}`.",
        "Each runtime encodes the same chunks (the product's splitter, 500 characters) in the product's batches, one "
        "after the other in one process; dense recall@5 on every eval question against the whole corpus.",
        "",
        "| corpus | chunks | questions | runtime | chunks/s | x fp32 | x ONNX int8 | dense recall@5 | vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, r in results.items():
        fp32, onnx = r["runs"].get("torch"), r["runs"].get("onnx-int8")
        for backend, run in r["runs"].items():
            lines.append(
                f"| {lang} | {r['chunks']} | {r['questions']} | {LABELS[backend]} | {run['chunks/s']:.2f} "
                f"| {run['chunks/s'] / fp32['chunks/s']:.2f}x | {run['chunks/s'] / onnx['chunks/s']:.2f}x "
                f"| {run['recall@5']:.3f} | {100 * (run['recall@5'] - fp32['recall@5']):+.1f} pt |"
                if fp32 and onnx else f"| {lang} | {r['chunks']} | {r['questions']} | {LABELS[backend]} "
                f"| {run['chunks/s']:.2f} | | | {run['recall@5']:.3f} | |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", default="zh,en")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--limit", type=int, default=0, help="passages per corpus (0: all; a smoke run)")
    parser.add_argument("--dry-run", action="store_true", help="print the figures; do not write docs/benchmarks.md")
    args = parser.parse_args()
    require_eval()
    model_dir = Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME
    print(f"load {os.getloadavg()[0]:.2f} at start", flush=True)
    results: dict[str, dict] = {}
    for lang in args.langs.split(","):
        texts, owners, questions = chunks_of(lang, args.limit)
        runs = {}
        for backend in args.backends.split(","):
            runs[backend] = measure(backend, model_dir, texts, owners, questions)
            print(f"[{lang}] {backend}: {runs[backend]}", flush=True)
        results[lang] = {"chunks": len(texts), "questions": len(questions), "runs": runs}
    section = render(args, results)
    print(section)
    if not args.dry_run and not args.limit:
        write_section("bench_embedding", section)
        print("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
