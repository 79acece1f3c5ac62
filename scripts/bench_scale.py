"""Scale: one knowledge base of 1,000,000 chunks in 100,000 documents on Milvus Lite, searched through HTTP.

    .venv/bin/python scripts/bench_scale.py                                   # writes its section of docs/benchmarks.md
    .venv/bin/python scripts/bench_scale.py --chunks 50000 --documents 5000 --dry-run   # prints only

Build (fast, and what a search reads is what production would hold):
- Seed: the first `--seed-chunks` chunks of the eval corpora (../shared/eval/{zh,en}_corpus.jsonl; the passages the
  questions ask about first, then the others), cut by the product's splitter and embedded once through the app's
  Embedder (cached between runs in `--seed-cache`).
- The knowledge base is created through KnowledgeBaseService (catalog row, Milvus collection with its BM25
  function). Its `--documents` documents are written to the catalog already ready, as the indexer leaves them
  (status ready, index_attempts 0, chunk counts, indexed_at), in bulk through the catalog's SQLAlchemy tables: the
  service has no bulk path (every upload stores a file and queues it for indexing), and 100,000 uploads through it
  would embed every chunk. They have no stored file, so previews of them fail; searches do not read files.
- The collection gets `--chunks` rows through `MilvusStore.insert` (the product's insert), spread evenly over those
  documents by their internal ids, so search visibility (app/kb/visibility.py) works as in production. Row `g`
  carries the text of seed `g mod seeds` and that seed's vector plus Gaussian noise (sigma 0.01 per dimension,
  renormalised: cosine ~0.98 to the original), so dense search is not answered by exact duplicates; BM25 sees the
  seed texts repeated. The build stops, and the report says where, on a Milvus error or once the machine's
  available memory falls under `--min-available-gb`.

Measure, against `kbqa serve` (its own process, on the built data folder; query embedding included):
- p50/p95 latency per mode (dense, bm25, hybrid) of `--queries` real questions (half zh, half en) from one
  client, then from `--clients` concurrent clients (and queries/s);
- resident memory (RSS) of the API process and of its Milvus Lite process (the `milvus` child), idle after open
  and at peak during the queries; disk use of the data folder;
- the time to open the knowledge base: `kbqa serve` started on the data folder until /health answers, and until
  the first search is answered (searches answered 503 meanwhile are retried), first after the build, then again
  after a restart.
Targets printed next to the figures: hybrid p50 < 60 ms and p95 < 150 ms from one client.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from app.kb.documents import LoadedDocument, Section  # noqa: E402
from app.kb.splitter import split_document  # noqa: E402
from app.services import Services  # noqa: E402
from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings  # noqa: E402
from app.storage.catalog import Document, DocumentStatus, utcnow  # noqa: E402
from app.storage.vector_store import ChunkRow  # noqa: E402
from kbqa_client import KbqaClient  # noqa: E402
from scripts.benchdoc import EVAL, free_port, machine, read_jsonl, require_eval, write_section  # noqa: E402

KB = "scale"
MODES = ("dense", "bm25", "hybrid")
TARGET_P50_MS = 60.0
TARGET_P95_MS = 150.0
GIB = 1024**3
MIB = 1024**2


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# -- processes ------------------------------------------------------------------------------------------------------


def milvus_child(pid: int) -> psutil.Process | None:
    """The Milvus Lite server a process started (milvus_lite runs its `milvus` binary as a child)."""
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if "milvus" in child.name().lower() or any("milvus" in part for part in child.cmdline()[:1]):
                    return child
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return None


def rss(process: psutil.Process | None) -> int | None:
    if process is None:
        return None
    try:
        return process.memory_info().rss
    except psutil.Error:
        return None


def gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f} GiB"


class RssSampler:
    """Peak RSS of the API process and of its Milvus Lite child, sampled in the background."""

    def __init__(self, api_pid: int, interval_s: float = 0.5) -> None:
        self.api = psutil.Process(api_pid)
        self.interval_s = interval_s
        self.peak_api = 0
        self.peak_milvus = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_api = max(self.peak_api, rss(self.api) or 0)
            self.peak_milvus = max(self.peak_milvus, rss(milvus_child(self.api.pid)) or 0)
            self._stop.wait(self.interval_s)


def disk_use(path: Path) -> int:
    """Bytes a file or folder occupies on disk (allocated blocks, as du counts them)."""
    if not path.exists():
        return 0
    if not path.is_dir():
        return path.lstat().st_blocks * 512
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


# -- seed -----------------------------------------------------------------------------------------------------------


def seed_texts(count: int, chunk_size: int, chunk_overlap: int) -> list[str]:
    """`count` real chunks, about two thirds zh and one third en; the passages the questions ask about first."""
    texts: list[str] = []
    shares = {"zh": count - count // 3, "en": count // 3}
    for lang, share in shares.items():
        asked = {q["doc_id"] for q in read_jsonl(EVAL / f"{lang}_questions.jsonl")}
        passages = read_jsonl(EVAL / f"{lang}_corpus.jsonl")
        passages.sort(key=lambda p: p["doc_id"] not in asked)  # stable: asked ones first, corpus order kept
        taken = 0
        for passage in passages:
            if taken >= share:
                break
            loaded = LoadedDocument(sections=[Section(text=passage["text"])])
            for chunk in split_document(loaded, chunk_size, chunk_overlap)[: share - taken]:
                texts.append(chunk.text)
                taken += 1
    return texts


def seed_vectors(services: Services, texts: list[str], cache: Path | None) -> tuple[np.ndarray, float | None]:
    """The texts' passage vectors through the app's Embedder, from `cache` when it holds these texts; the seconds
    the embedding took (None: cached)."""
    embedder = services.passage_embedder()
    key = hashlib.sha256("\x00".join([embedder.model_name, embedder.backend, *texts]).encode()).hexdigest()
    if cache is not None and cache.exists():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return stored["vectors"].astype(np.float32), None
    started = time.perf_counter()
    vectors = np.asarray(embedder.encode_passages(texts), dtype=np.float32)
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.array(key), vectors=vectors)
    return vectors, seconds


# -- build ----------------------------------------------------------------------------------------------------------


@dataclass
class Build:
    seeds: int = 0
    embed_seconds: float | None = None
    documents: int = 0
    catalog_seconds: float = 0.0
    target_rows: int = 0
    rows: int = 0  # acknowledged by Milvus
    counted: int | None = None  # count(*) at the end
    insert_seconds: float = 0.0
    progress: list[tuple[int, float, int | None, float]] = field(default_factory=list)  # rows, rows/s, RSS, avail
    peak_milvus_rss: int = 0
    broke: str | None = None  # why the build stopped early
    broke_rss: int | None = None
    milvus_stop: str = ""  # how the builder's Milvus Lite server ended
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])


def add_ready_documents(services: Services, kb_id: str, count: int, chunks: int) -> list[str]:
    """`count` documents of the knowledge base, ready as the indexer leaves them, in bulk (no bulk path in the
    service); returns their internal ids in creation order. Chunks are spread evenly: document d holds rows
    d*chunks//count .. (d+1)*chunks//count - 1."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    now = utcnow()
    for start in range(0, count, 10_000):
        rows = []
        for d in range(start, min(count, start + 10_000)):
            n = (d + 1) * chunks // count - d * chunks // count
            rows.append(
                {
                    "id": ids[d],
                    "kb_id": kb_id,
                    "filename": f"scale-{d:07d}.txt",
                    "file_type": "txt",
                    "stored_path": f"{kb_id}/{ids[d]}.txt",
                    "sha256": hashlib.sha256(ids[d].encode()).hexdigest(),
                    "size_bytes": 600 * n,
                    "status": DocumentStatus.ready,
                    "chunk_count": n,
                    "chunks_embedded": n,
                    "index_attempts": 0,
                    "created_at": now + timedelta(microseconds=d),  # listings order by creation time
                    "updated_at": now,
                    "indexed_at": now,
                    "pages": None,
                }
            )
        with services.catalog.session() as session:
            session.execute(insert(Document), rows)
    return ids


def build(services: Services, args: argparse.Namespace, texts: list[str], vectors: np.ndarray, out: Build) -> None:
    kbs = services.knowledge_bases
    info = kbs.create(KB, description="bench_scale: perturbed copies of real chunks")
    collection, kb_id = info.collection_name, info.id
    started = time.perf_counter()
    doc_ids = add_ready_documents(services, kb_id, args.documents, args.chunks)
    out.documents = len(doc_ids)
    out.catalog_seconds = time.perf_counter() - started
    log(f"catalog: {len(doc_ids)} ready documents in {out.catalog_seconds:.1f} s")

    rng = np.random.default_rng(7)
    seeds = len(texts)
    out.target_rows = args.chunks
    milvus = milvus_child(os.getpid())
    next_report = args.report_every
    started = time.perf_counter()
    g = 0
    doc = 0
    doc_end = args.chunks // args.documents  # first row of the next document
    doc_first = 0
    while g < args.chunks:
        available = psutil.virtual_memory().available
        if available < args.min_available_gb * GIB:
            out.broke = (
                f"stopped by the script: available memory {available / GIB:.2f} GiB < --min-available-gb "
                f"{args.min_available_gb:g}"
            )
            break
        n = min(args.batch, args.chunks - g)
        seed_index = np.arange(g, g + n) % seeds
        noisy = vectors[seed_index] + rng.normal(0, 0.01, size=(n, vectors.shape[1])).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        rows = []
        for k in range(n):
            row = g + k
            while row >= doc_end:
                doc += 1
                doc_first, doc_end = doc_end, (doc + 1) * args.chunks // args.documents
            rows.append(
                ChunkRow(
                    doc_id=doc_ids[doc],
                    chunk_index=row - doc_first,
                    file_name=f"scale-{doc:07d}.txt",
                    page=None,
                    text=texts[seed_index[k]],
                    vector=noisy[k],
                )
            )
        try:
            services.store.insert(collection, rows)
        except Exception as exc:  # any failure is the finding: report it with where it happened
            out.broke = f"Milvus insert failed: {type(exc).__name__}: {first_line(exc)}"
            log(traceback.format_exc())
            break
        g += n
        out.rows = g
        out.insert_seconds = time.perf_counter() - started
        milvus = milvus or milvus_child(os.getpid())
        current = rss(milvus)
        out.peak_milvus_rss = max(out.peak_milvus_rss, current or 0)
        if g >= next_report or g == args.chunks:
            next_report += args.report_every
            point = (g, g / out.insert_seconds, current, psutil.virtual_memory().available / GIB)
            out.progress.append(point)
            log(
                f"inserted {g:,} rows, {point[1]:.0f} rows/s, Milvus Lite RSS {gib(current)}, "
                f"available {point[3]:.1f} GiB"
            )
    if out.broke:
        out.broke_rss = rss(milvus)
        log(f"build stopped at {out.rows:,} rows: {out.broke}")
        return
    try:
        out.counted = services.store.count(collection)
    except Exception as exc:
        out.broke = f"count(*) after the inserts failed: {type(exc).__name__}: {first_line(exc)}"
        out.broke_rss = rss(milvus)


# -- the API --------------------------------------------------------------------------------------------------------


@dataclass
class Opened:
    process: subprocess.Popen[bytes]
    url: str
    health_s: float
    first_search_s: float
    retries: int  # searches answered with an error before the first success
    refusal: str | None  # the first of those errors


def api_env(settings: Settings) -> dict[str, str]:
    data_dir = str(settings.storage.data_dir)
    # Both names of the data folder: a KBQA_DATA_DIR inherited from the caller must not point the API elsewhere.
    return {
        **os.environ,
        "KBQA_STORAGE__DATA_DIR": data_dir,
        "KBQA_DATA_DIR": data_dir,
        "KBQA_EMBEDDING__MODEL": settings.embedding.model,
    }


def open_api(settings: Settings, question: str, deadline_s: float) -> Opened:
    """`kbqa serve` on the data folder; returns once a hybrid search is answered, with the times it took."""
    port = free_port()
    data_dir = settings.storage.data_dir
    logfile = (data_dir / "api.log").open("ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=api_env(settings),
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    health_s = None
    retries = 0
    refusal = None
    client = KbqaClient(url, timeout_s=deadline_s)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"kbqa serve exited ({process.returncode}): {log_tail(data_dir / 'api.log')}")
            if time.perf_counter() - started > deadline_s:
                stop_api(process)
                raise RuntimeError(f"no search answered within {deadline_s:g} s: {log_tail(data_dir / 'api.log')}")
            if health_s is None:
                try:
                    healthy = httpx.get(f"{url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                if not healthy:
                    time.sleep(0.2)
                    continue
                health_s = time.perf_counter() - started
            try:
                client.search(KB, question, top_k=5, mode="hybrid")
                return Opened(process, url, health_s, time.perf_counter() - started, retries, refusal)
            except Exception as exc:  # e.g. 503 while Milvus Lite loads the collection
                if refusal is None:  # what the client got, and what the API logged about it
                    time.sleep(0.5)
                    refusal = (
                        f"{type(exc).__name__}: {first_line(exc, 200)} (api.log: {log_tail(data_dir / 'api.log')})"
                    )
                retries += 1
                time.sleep(0.5)
    finally:
        client.close()


def log_tail(path: Path) -> str:
    """The API log's last line that says something (an exception's message)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"{path} unreadable"
    wanted = [line for line in lines if "Error" in line or "Exception" in line]
    return (wanted or lines or ["(empty log)"])[-1][:300]


def release_milvus_lite(settings: Settings) -> str:
    """Stop this process's Milvus Lite server on the data folder: closing pymilvus' client leaves it running, and
    holding the file's lock, until the process exits, so `kbqa serve` could not open the file. milvus_lite's own stop
    (what also runs when an API process exits) releases the lock, waits 2 s for the server to exit, then kills it.
    Returns how it ended."""
    from milvus_lite.server_manager import server_manager_instance

    milvus = milvus_child(os.getpid())
    started = time.perf_counter()
    server_manager_instance.release_server(settings.storage.resolved_milvus_uri)
    seconds = time.perf_counter() - started
    if milvus is None:
        return "was not found"
    if milvus.is_running() and milvus.status() != psutil.STATUS_ZOMBIE:
        return f"was still running {seconds:.1f} s after its release"
    if seconds >= 2:
        return f"did not exit within 2 s of its release and was killed ({seconds:.1f} s)"
    return f"exited {seconds:.1f} s after its release"


def stop_api(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown closes Milvus Lite), waiting for its Milvus Lite child to go as well."""
    milvus = milvus_child(process.pid)
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if milvus is not None:
        try:
            milvus.wait(timeout=60)
        except psutil.TimeoutExpired:
            milvus.kill()
        except psutil.Error:
            pass


@dataclass
class Timings:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wall_s: float = 0.0

    def record_error(self, exc: Exception) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {first_line(exc)}"


def first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ""


def timed_search(client: KbqaClient, question: str, mode: str, out: Timings, lock: threading.Lock) -> None:
    t0 = time.perf_counter()
    try:
        client.search(KB, question, top_k=5, mode=mode)
    except Exception as exc:  # counted and reported
        with lock:
            out.record_error(exc)
        return
    elapsed = (time.perf_counter() - t0) * 1000
    with lock:
        out.latencies_ms.append(elapsed)


def single_client(url: str, questions: list[str], mode: str) -> Timings:
    out, lock = Timings(), threading.Lock()
    client = KbqaClient(url, timeout_s=120)
    try:
        for question in questions[:3]:  # warm-up, not counted
            timed_search(client, question, mode, Timings(), lock)
        started = time.perf_counter()
        for question in questions:
            timed_search(client, question, mode, out, lock)
        out.wall_s = time.perf_counter() - started
    finally:
        client.close()
    return out


def concurrent_clients(url: str, questions: list[str], mode: str, clients: int) -> Timings:
    """`clients` threads, each with its own connection, taking the questions from one shared list."""
    out, lock = Timings(), threading.Lock()
    pending = list(questions)

    def worker() -> None:
        client = KbqaClient(url, timeout_s=120)
        try:
            while True:
                with lock:
                    if not pending:
                        return
                    question = pending.pop()
                timed_search(client, question, mode, out, lock)
        finally:
            client.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    out.wall_s = time.perf_counter() - started
    return out


@dataclass
class Served:
    first_open: Opened | None = None
    restart: Opened | None = None
    idle_api_rss: int | None = None
    idle_milvus_rss: int | None = None
    peak_api_rss: int = 0
    peak_milvus_rss: int = 0
    restart_api_rss: int | None = None
    restart_milvus_rss: int | None = None
    kb_list_ms: float | None = None
    single: dict[str, Timings] = field(default_factory=dict)
    concurrent: dict[str, Timings] = field(default_factory=dict)
    failed: str | None = None
    log_error: str | None = None  # the API log's last error line, when searches failed


def serve_and_measure(settings: Settings, args: argparse.Namespace, questions: list[str], out: Served) -> None:
    log("starting kbqa serve on the built data folder")
    opened = out.first_open = open_api(settings, questions[0], args.open_deadline_s)
    log(f"opened: /health after {opened.health_s:.1f} s, first search after {opened.first_search_s:.1f} s")
    try:
        out.idle_api_rss = rss(psutil.Process(opened.process.pid))
        out.idle_milvus_rss = rss(milvus_child(opened.process.pid))
        with RssSampler(opened.process.pid) as sampler:
            for mode in MODES:
                out.single[mode] = result = single_client(opened.url, questions, mode)
                log(f"{mode}, 1 client: p50 {median(result)} ms, {result.errors} errors")
            for mode in MODES:
                out.concurrent[mode] = result = concurrent_clients(opened.url, questions, mode, args.clients)
                log(f"{mode}, {args.clients} clients: p50 {median(result)} ms, {result.errors} errors")
            client = KbqaClient(opened.url, timeout_s=600)
            try:
                t0 = time.perf_counter()
                client.knowledge_bases()
                out.kb_list_ms = (time.perf_counter() - t0) * 1000
            except Exception as exc:
                log(f"listing the knowledge bases failed: {exc}")
            finally:
                client.close()
        out.peak_api_rss, out.peak_milvus_rss = sampler.peak_api, sampler.peak_milvus
        if any(t.errors for t in (*out.single.values(), *out.concurrent.values())):
            out.log_error = log_tail(settings.storage.data_dir / "api.log")
    finally:
        stop_api(opened.process)
    log("restarting kbqa serve on the same data folder")
    opened = out.restart = open_api(settings, questions[1], args.open_deadline_s)
    try:
        out.restart_api_rss = rss(psutil.Process(opened.process.pid))
        out.restart_milvus_rss = rss(milvus_child(opened.process.pid))
        log(f"restart: /health after {opened.health_s:.1f} s, first search after {opened.first_search_s:.1f} s")
    finally:
        stop_api(opened.process)


def median(t: Timings) -> str:
    return f"{statistics.median(t.latencies_ms):.1f}" if t.latencies_ms else "n/a"


def p95(t: Timings) -> str:
    return f"{percentile(t.latencies_ms, 95):.1f}" if t.latencies_ms else "n/a"


# -- report ---------------------------------------------------------------------------------------------------------


def verdict(value: list[float], pct: float, target: float) -> str:
    if not value:
        return "n/a"
    figure = statistics.median(value) if pct == 50 else percentile(value, pct)
    return f"{'met' if figure < target else 'MISSED'} (< {target:g} ms)"


def render(args: argparse.Namespace, command: str, b: Build, s: Served, disk: dict[str, int]) -> str:
    lines = [
        f"## Scale: {args.chunks:,} chunks in {args.documents:,} documents on Milvus Lite (`scripts/bench_scale.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}; load average (1 min) {b.load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end (above the core count: other work shared the CPUs)",
        f"- Command: `{command}`",
        f"- Knowledge base: {b.documents:,} ready documents in the catalog, {b.target_rows:,} chunks asked for "
        f"({b.rows:,} inserted, count(*) {b.counted if b.counted is not None else 'n/a'}); texts and vectors: "
        f"{b.seeds:,} real chunks of the eval corpora embedded with the product's model, then perturbed copies "
        "of their vectors (sigma 0.01, renormalised). Milvus Lite 2.5.1, AUTOINDEX dense + BM25 sparse.",
        f"- Searches: {args.queries} real questions (half zh, half en), top 5, through HTTP (`kbqa serve`, "
        "query embedding included), after 3 warm-up queries.",
        "",
    ]
    if b.broke:
        lines += [
            f"**The build stopped at {b.rows:,} of {b.target_rows:,} rows**: {b.broke}. Milvus Lite RSS then: "
            f"{gib(b.broke_rss)} (peak {gib(b.peak_milvus_rss)}); available memory "
            f"{psutil.virtual_memory().available / GIB:.1f} GiB.",
            "",
        ]
    embed = "cached" if b.embed_seconds is None else f"{b.embed_seconds:.0f} s"
    rate = b.rows / b.insert_seconds if b.insert_seconds else 0.0
    lines += [
        f"Build: seed embedding {embed}; catalog {b.documents:,} documents in {b.catalog_seconds:.1f} s; Milvus "
        f"inserts {b.rows:,} rows in {b.insert_seconds:.0f} s (**{rate:.0f} rows/s**, batches of {args.batch}); "
        f"Milvus Lite RSS during the build peaked at {gib(b.peak_milvus_rss)}; its server {b.milvus_stop}.",
        "",
    ]
    if b.progress:
        lines += [
            "| rows inserted | rows/s so far | Milvus Lite RSS | available memory |",
            "|---|---|---|---|",
            *[f"| {r:,} | {v:.0f} | {gib(m)} | {a:.1f} GiB |" for r, v, m, a in b.progress],
            "",
        ]
    if s.failed:
        lines += [f"**The API phase failed**: {s.failed}", ""]
    if s.single:
        hybrid, n = s.single.get("hybrid", Timings()).latencies_ms, args.clients
        lines += [
            "| mode | 1 client p50 ms | 1 client p95 ms | errors | "
            f"{n} clients p50 ms | {n} clients p95 ms | {n} clients queries/s | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for mode in MODES:
            one, many = s.single.get(mode, Timings()), s.concurrent.get(mode, Timings())
            qps = len(many.latencies_ms) / many.wall_s if many.wall_s else 0.0
            lines.append(
                f"| {mode} | {median(one)} | {p95(one)} | {one.errors} | {median(many)} | {p95(many)} | {qps:.1f} "
                f"| {many.errors} |"
            )
        lines += [
            "",
            f"Targets, hybrid from one client: p50 {verdict(hybrid, 50, TARGET_P50_MS)}, "
            f"p95 {verdict(hybrid, 95, TARGET_P95_MS)}.",
        ]
        errors = [
            f"{m} ({k}): {t.first_error}"
            for k, d in (("1", s.single), ("n", s.concurrent))
            for m, t in d.items()
            if t.first_error
        ]
        if errors:
            lines.append(f"First errors: {'; '.join(errors)}. The API's log: {s.log_error}.")
        lines.append("")
    if s.first_open:
        lines += [
            "| | API RSS | Milvus Lite RSS |",
            "|---|---|---|",
            f"| just opened (after the build) | {gib(s.idle_api_rss)} | {gib(s.idle_milvus_rss)} |",
            f"| peak during the searches | {gib(s.peak_api_rss)} | {gib(s.peak_milvus_rss)} |",
        ]
        if s.restart:
            lines.append(f"| just opened (after a restart) | {gib(s.restart_api_rss)} | {gib(s.restart_milvus_rss)} |")
        lines += [
            "",
            "| open | /health answers | first search answered | searches refused meanwhile |",
            "|---|---|---|---|",
        ]
        for name, opened in (("after the build", s.first_open), ("after a restart", s.restart)):
            if opened:
                lines.append(f"| {name} | {opened.health_s:.1f} s | {opened.first_search_s:.1f} s | {opened.retries} |")
        refusals = {o.refusal for o in (s.first_open, s.restart) if o and o.refusal}
        if refusals:
            lines += ["", f"Searches refused while opening: {'; '.join(sorted(refusals))}."]
        lines.append("")
    if s.kb_list_ms is not None:
        listing = (
            "Listing the knowledge bases (`GET /api/kbs`: the catalog counts each knowledge base's documents by "
            f"status): {s.kb_list_ms:.0f} ms."
        )
        lines += [listing, ""]
    sizes = ", ".join(f"{name} {size / GIB:.2f} GiB" for name, size in disk.items())
    lines.append(f"Disk use of the data folder: {sizes}.")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--seed-chunks", type=int, default=3000, help="real chunks embedded once (zh 2/3, en 1/3)")
    parser.add_argument(
        "--seed-cache",
        default=str(Path(tempfile.gettempdir()) / "kbqa_bench_scale_seed.npz"),
        help="where the seed vectors are kept between runs ('' : not kept)",
    )
    parser.add_argument("--queries", type=int, default=100, help="questions per mode (half zh, half en)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--batch", type=int, default=2000, help="rows per Milvus insert (Milvus Lite took 5000-row inserts 8x slower)"
    )
    parser.add_argument("--report-every", type=int, default=100_000, help="rows between progress lines")
    parser.add_argument(
        "--min-available-gb",
        type=float,
        default=1.5,
        help="stop the build (and report it) once the machine's available memory falls below this",
    )
    parser.add_argument("--open-deadline-s", type=float, default=900, help="how long an API start may take")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="an empty folder to build in, kept afterwards (default: a temporary one, removed)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--dry-run", action="store_true", help="print the section, do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.documents < 1 or args.chunks < args.documents:
        parser.error("--chunks must be at least --documents, which must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    require_eval()
    command = ".venv/bin/python scripts/bench_scale.py " + " ".join(sys.argv[1:])
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="kbqa-scale-")) / "data").absolute()
    if data_dir.exists() and any(data_dir.iterdir()):
        sys.exit(f"{data_dir} is not empty")
    prepared = Settings()
    settings = Settings(  # type: ignore[arg-type]
        storage__data_dir=data_dir,
        embedding__model=str(prepared.storage.models_dir / DEFAULT_EMBEDDING_DIRNAME),
        # The builder's inserts only: a busy machine must not turn a slow batch into a reported failure.
        storage__milvus_timeout_s=600,
    )
    log(f"data folder {data_dir}")
    b, s = Build(), Served()
    zh = [q["question"] for q in read_jsonl(EVAL / "zh_questions.jsonl")]
    en = [q["question"] for q in read_jsonl(EVAL / "en_questions.jsonl")]
    questions = [q for pair in zip(zh, en, strict=False) for q in pair][: args.queries]
    try:
        services = Services(settings)
        try:
            texts = seed_texts(args.seed_chunks, settings.ingest.chunk_size, settings.ingest.chunk_overlap)
            log(f"seed: {len(texts)} chunks; embedding (or reading {args.seed_cache})")
            cache = Path(args.seed_cache) if args.seed_cache else None
            vectors, b.embed_seconds = seed_vectors(services, texts, cache)
            b.seeds = len(texts)
            build(services, args, texts, vectors, b)
        finally:
            services.close()
            b.milvus_stop = release_milvus_lite(settings)
        if not b.broke:
            try:
                serve_and_measure(settings, args, questions, s)
            except Exception as exc:  # reported with what was measured before
                s.failed = f"{type(exc).__name__}: {first_line(exc)}"
                log(traceback.format_exc())
        milvus_db = Path(settings.storage.resolved_milvus_uri)
        sizes = {
            "Milvus Lite": sum(disk_use(p) for p in milvus_db.parent.glob(milvus_db.name + "*")),
            "catalog": sum(disk_use(p) for p in data_dir.glob("catalog.db*")),
            "total": disk_use(data_dir),
        }
        section = render(args, command, b, s, sizes)
    finally:
        if args.data_dir is None and not args.keep:  # only the temporary folder this run made
            shutil.rmtree(data_dir.parent, ignore_errors=True)
    print(section)
    if not args.dry_run:
        write_section("bench_scale", section)
    return 1 if b.broke or s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
