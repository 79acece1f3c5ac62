"""Per-document overhead of an upload, through HTTP, with the embedding left out.

    .venv/bin/python scripts/bench_upload_overhead.py --files 300      # writes its section of docs/benchmarks.md

Starts `kbqa serve` on a temporary data folder and uploads N tiny files the way `kbqa doc upload <folder>` does
(app/cli/upload.py: several files per request, several requests at once), then one file per request (what the CLI
did before), and reports milliseconds per document:
- to queued: from the first byte sent until every file is stored, hashed, in the catalog, and claimed by the
  server's indexer (the HTTP answer);
- queued to finished: the indexer's own per-document work after the last answer, with no embedding: the files
  hold only spaces (each a different number, so none is a duplicate), which the splitter turns into no chunk, so
  each ends 'failed: no text' without reaching the model. That is the failure path, which records each document
  on its own (a Milvus delete and a catalog write each); documents that index are finished per group.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import upload  # noqa: E402
from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings  # noqa: E402
from kbqa_client import KbqaClient  # noqa: E402
from scripts.benchdoc import machine, start_api, write_section  # noqa: E402

TARGET_MS = 5.0


def blank_files(folder: Path, count: int, offset: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"blank{i:05d}.txt"
        path.write_bytes(b" " * (offset + i + 1))
        paths.append(path)
    return paths


def wait_finished(api: KbqaClient, kb: str, count: int) -> None:
    while True:
        docs = api.documents(kb)
        if len(docs) >= count and all(d["status"] in {"ready", "failed"} for d in docs):
            return
        time.sleep(0.1)


def measure(api: KbqaClient, kb: str, folder: Path, count: int, batch_files: int, parallel: int) -> dict:
    """Upload the folder into a new knowledge base; seconds to queued and to finished."""
    api.create_knowledge_base(kb)
    rules = upload.ServerRules.of(api.status())
    planned = upload.plan([folder], rules, batch_files=batch_files)
    started = time.perf_counter()
    tally, _ = upload.FolderUpload(api, kb, Console(quiet=True), parallel).run(planned, wait=False)
    queued = time.perf_counter() - started
    wait_finished(api, kb, count)
    finished = time.perf_counter() - started
    assert tally.uploaded == count and not tally.refused, tally
    return {"queued_s": queued, "finished_s": finished, "requests": tally.requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    n = args.files
    work = Path(tempfile.mkdtemp(prefix="kbqa-overhead-"))
    model = Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME
    process, url = start_api(work / "data", {"KBQA_EMBEDDING__MODEL": str(model)})
    api = KbqaClient(url, timeout_s=300)
    rows = []
    try:
        cases = [
            ("batched, as `kbqa doc upload` sends", upload.BATCH_FILES, upload.PARALLEL_REQUESTS),
            ("one file per request", 1, 1),
        ]
        for index, (label, batch_files, parallel) in enumerate(cases):
            folder = work / f"files{index}"
            blank_files(folder, n, offset=index * n)
            result = measure(api, f"overhead{index}", folder, n, batch_files, parallel)
            rows.append((label, batch_files, parallel, result))
            print(
                f"{label}: {result['requests']} requests, {1000 * result['queued_s'] / n:.2f} ms/doc to queued, "
                f"{1000 * (result['finished_s'] - result['queued_s']) / n:.2f} ms/doc queued to finished"
            )
    finally:
        process.terminate()
        process.wait(timeout=60)
    if not args.no_write:
        write_section("bench_upload_overhead", section(n, rows))


def section(n: int, rows: list) -> str:  # type: ignore[type-arg]
    lines = [
        "## Per-document upload overhead (`scripts/bench_upload_overhead.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {machine()}; load average {Path('/proc/loadavg').read_text().split()[0]} when it ended (other "
        "work on the machine shows here)",
        f"- Command: `.venv/bin/python scripts/bench_upload_overhead.py --files {n}`",
        f"- {n} tiny files through HTTP into a running `kbqa serve` (SQLite catalog, Milvus Lite), the embedding left "
        "out: each file holds only spaces, so indexing ends without a chunk. *To queued*: upload, hashing, file "
        "write, catalog rows and the indexer's claim, until the last HTTP answer (target: under "
        f"{TARGET_MS:g} ms per document). *Queued to finished*: the indexer's work per document after that "
        "(start, load, split, and the failure path's own Milvus delete and catalog write per document; documents "
        "that index are finished per group). The indexer runs beside the uploads on the same 2 cores.",
        "",
        "| path | files per request | requests at once | requests | ms/doc to queued | ms/doc queued to finished |",
        "|---|---|---|---|---|---|",
    ]
    for label, batch_files, parallel, r in rows:
        lines.append(
            f"| {label} | {batch_files} | {parallel} | {r['requests']} | **{1000 * r['queued_s'] / n:.2f}** | "
            f"{1000 * (r['finished_s'] - r['queued_s']) / n:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
