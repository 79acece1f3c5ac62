"""Time to the first preview of a PDF page (render + highlight of the cited chunk), cold and cached, through HTTP.

    .venv/bin/python scripts/bench_preview.py            # writes its section of docs/benchmarks.md

Setup: `kbqa serve` (its own process) over a temporary data folder; a knowledge base holding five generated 1-page
PDFs and one generated 300-page PDF, indexed for real. Cold: the first GET of pages/{n}.png?chunk={i} for a page
and chunk never shown (PDFium opens the file, renders that page only, finds the chunk on its text layer, draws the
boxes, encodes the PNG, stores it in the cache); five different ones per PDF. Cached: the same request repeated.
Targets (issue 16): under 500 ms cold and 50 ms cached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings  # noqa: E402
from scripts.benchdoc import machine, start_api, write_section  # noqa: E402
from tests.fixtures_docs import make_pages_pdf  # noqa: E402

KB = "preview-bench"
PAGE_TEXT = (
    "第{n}页：本页记录了第{n}号设备的巡检结果。The inspection of unit {n} found the seals and bearings in order, "
    "and the next visit is planned for week {n} of the year. 巡检人员在表格中签字确认，并拍照留档备查。"
)


def upload_ready(http: httpx.Client, name: str, data: bytes) -> dict:
    response = http.post(f"/api/kbs/{KB}/documents", files=[("files", (name, data))], timeout=300)
    response.raise_for_status()
    doc_id = response.json()[0]["document"]["id"]
    while (doc := http.get(f"/api/kbs/{KB}/documents/{doc_id}").json())["status"] not in {"ready", "failed"}:
        time.sleep(0.5)
    if doc["status"] != "ready":
        raise SystemExit(f"{name} failed to index: {doc['error']}")
    return doc


def chunk_on(http: httpx.Client, doc_id: str, page: int) -> int:
    """The index of the first chunk on `page` (chunks are listed in order, a page at a time)."""
    offset = 0
    while chunks := http.get(f"/api/kbs/{KB}/documents/{doc_id}/chunks", params={"offset": offset}).json():
        for chunk in chunks:
            if chunk["page"] == page:
                return chunk["chunk_index"]
        offset += len(chunks)
    raise SystemExit(f"no chunk on page {page}")


def timed_get(http: httpx.Client, path: str, params: dict) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response


def measure(http: httpx.Client, targets: list[tuple[str, int, int]], repeats: int) -> dict[str, list[float]]:
    """Cold and cached milliseconds of each (document, page, chunk) shown for the first time, then again."""
    cold, cached, sizes, found = [], [], [], []
    for doc_id, page, chunk in targets:
        path, params = f"/api/kbs/{KB}/documents/{doc_id}/pages/{page}.png", {"chunk": chunk}
        elapsed, response = timed_get(http, path, params)
        cold.append(elapsed)
        sizes.append(len(response.content) / 1024)
        found.append(response.headers.get("x-highlight", ""))
        cached.extend(timed_get(http, path, params)[0] for _ in range(repeats))
    if set(found) != {"text_layer"}:
        raise SystemExit(f"the chunk was not found on every page: {found}")
    return {"cold": cold, "cached": cached, "kb": sizes}


def row(label: str, figures: dict[str, list[float]]) -> str:
    cold, cached = figures["cold"], figures["cached"]
    return (
        f"| {label} | {statistics.median(cold):.0f} | {max(cold):.0f} | {statistics.median(cached):.1f} | "
        f"{sorted(cached)[int(0.95 * (len(cached) - 1))]:.1f} | {statistics.mean(figures['kb']):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=300, help="pages of the long PDF")
    parser.add_argument("--repeats", type=int, default=20, help="cached requests per page")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    start_load = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    model = str(Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME)
    process, url = start_api(folder / "data", {"KBQA_EMBEDDING__MODEL": model})
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            http.post("/api/kbs", json={"name": KB}).raise_for_status()
            short = []
            for n in range(1, 6):
                pdf = make_pages_pdf(folder, f"one-{n}.pdf", [PAGE_TEXT.format(n=n * 1000)])
                doc = upload_ready(http, pdf.name, pdf.read_bytes())
                short.append((doc["id"], 1, chunk_on(http, doc["id"], 1)))
            long_pdf = make_pages_pdf(folder, "long.pdf", [PAGE_TEXT.format(n=n) for n in range(1, args.pages + 1)])
            doc = upload_ready(http, long_pdf.name, long_pdf.read_bytes())
            picked = [1, args.pages // 4, args.pages // 2, 3 * args.pages // 4, args.pages]
            long_targets = [(doc["id"], page, chunk_on(http, doc["id"], page)) for page in picked]
            one_page = measure(http, short, args.repeats)
            many_pages = measure(http, long_targets, args.repeats)
    finally:
        process.terminate()
        process.wait(30)
    section = "\n".join(
        [
            "## Source preview: PDF page images (`scripts/bench_preview.py`)",
            "",
            f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- Machine: {machine()}",
            f"- Load average (1 min) at start / end: {start_load:.1f} / {os.getloadavg()[0]:.1f}",
            f"- Command: `.venv/bin/python scripts/bench_preview.py --pages {args.pages} --repeats {args.repeats}`",
            "- Through HTTP to `kbqa serve`: GET `/api/kbs/{kb}/documents/{id}/pages/{n}.png?chunk={i}`, A4 pages of "
            "mixed Chinese and English text, rendered at 120 DPI (993 x 1404 px) with the chunk's lines marked; "
            "five pages never shown before per PDF (cold), then each repeated (cached).",
            "",
            "| PDF | cold median (ms) | cold max (ms) | cached median (ms) | cached p95 (ms) | PNG (KB) |",
            "| --- | --- | --- | --- | --- | --- |",
            row("1 page (five files)", one_page),
            row(f"{args.pages} pages (pages {', '.join(str(p) for p in picked)})", many_pages),
            "",
            "Targets: under 500 ms cold, under 50 ms cached. Only the page asked for is rendered: the "
            f"{args.pages}-page PDF costs about what a 1-page one does.",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("bench_preview", section)


if __name__ == "__main__":
    main()
