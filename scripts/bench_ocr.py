"""OCR on this machine: seconds and character accuracy per scanned A4 page for Tesseract (what the product runs,
app/kb/loaders/ocr.py) and rapidocr-onnxruntime 1.4.4 (PP-OCRv4, the other candidate) side by side on the same
pages, and the throughput of a 50-page PDF that mixes text pages and scans, through the product's loader.

The pages are generated (tests/fixtures_ocr.py): Chinese, English and mixed body text in 12 pt on A4, drawn at
300 DPI as a scanner would, clean and "scanned" (turned 1.2 degrees, blurred, speckled, saved as 50% JPEG); each
is wrapped in an image-only PDF, rendered back with PDFium at the DPI measured, and read by each engine. Seconds
are wall time per page (rendering excluded, shown apart) and the engine's CPU time; accuracy is 1 - edit
distance / length over the text without whitespace, and for English also over words, which shows lost spaces.

rapidocr is not a dependency of the product: `.venv/bin/pip install rapidocr-onnxruntime==1.4.4` to compare it
(without it, only Tesseract is measured). The machine's load average is recorded: on a shared machine the wall
times stretch with it, the CPU times much less.

The product's loader is also timed on an image-only PDF of all those pages, for each --workers (settings.ocr.workers:
pages read at once) and DPI: wall seconds per page of the whole document, its own section of docs/benchmarks.md.
--quick measures only that.

    .venv/bin/python scripts/bench_ocr.py [--dpi 150 200] [--pages 2] [--mixed-pages 50] [--workers 1 2] [--quick]
        [--no-write]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pypdfium2
from PIL import Image, ImageFilter
from pypdf import PdfReader
from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.kb.loaders import LoadLimits, load_document  # noqa: E402
from app.kb.loaders.ocr import engine, reduced  # noqa: E402
from app.kb.loaders.pdf_loader import _needs_ocr  # noqa: E402
from scripts.benchdoc import machine, write_section  # noqa: E402
from tests import fixtures_ocr as fo  # noqa: E402

Reader = Callable[[Image.Image], str]
LANGUAGES = ("zh", "en", "mixed")
TARGET_S = 1.5  # issue 14: seconds per scanned A4 page at 150-200 DPI


@dataclass
class Row:
    engine: str
    page: str
    dpi: int
    seconds: list[float]
    cpu: list[float]
    accuracy: list[float]
    word_accuracy: list[float]


def degraded(image: Image.Image, seed: int) -> Image.Image:
    """A page as a cheap office scanner returns it: a little turned, soft, speckled, greyish, JPEG at 50%."""
    rng = np.random.default_rng(seed)
    turned = image.rotate(1.2, resample=Image.Resampling.BICUBIC, fillcolor=255).filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(turned, dtype=np.float32) + rng.normal(0, 25, turned.size[::-1])
    grey = Image.fromarray(np.clip(noisy * 0.85 + 30, 0, 255).astype(np.uint8))
    data = io.BytesIO()
    grey.save(data, format="JPEG", quality=50)
    return Image.open(io.BytesIO(data.getvalue())).convert("L")


def tesseract_reader(languages: str) -> Reader:
    tesseract = engine(languages)
    return lambda image: tesseract.read(image, timeout_s=600).text


def rapidocr_reader(threads: int) -> Reader | None:
    try:
        from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-not-found]
    except ImportError:
        return None
    # The angle classifier is off: on these upright pages it only cost time, and it reordered lines on some.
    ocr = RapidOCR(use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)

    def read(image: Image.Image) -> str:
        result, _ = ocr(np.asarray(image.convert("RGB")))
        return "\n".join(line[1] for line in result or [])

    return read


def tesseract_version() -> str:
    shown = subprocess.run([engine("eng").binary, "--version"], capture_output=True, text=True, check=False)
    return (shown.stdout or shown.stderr).splitlines()[0]


def cpu_seconds() -> float:
    """This process's CPU time and its finished children's (Tesseract runs as a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def word_accuracy(truth: str, read: str) -> float:
    want, got = truth.split(), read.split()
    return 1 - Levenshtein.distance(want, got) / max(len(want), 1)


def scanned_pages(count: int) -> dict[str, list[fo.Rendered]]:
    """`count` pages per kind: each language clean and scanned; the text of every page differs (paragraphs rotate)."""
    pages: dict[str, list[fo.Rendered]] = {}
    for language in LANGUAGES:
        for variant in ("clean", "scanned"):
            kind = f"{language} {variant}"
            pages[kind] = []
            for n in range(count):
                page = fo.full_page(language, dpi=300, start=n)
                image = page.image if variant == "clean" else degraded(page.image, seed=n)
                pages[kind].append(fo.Rendered(image, page.text))
    return pages


def render_all(pages: list[fo.Rendered], dpi: int, folder: Path) -> tuple[list[Image.Image], float]:
    """The pages as an image-only PDF rendered back by PDFium at `dpi`, and the seconds per page that took."""
    path = fo.image_only_pdf([p.image for p in pages], folder / f"scan-{dpi}.pdf", dpi=300)
    document = pypdfium2.PdfDocument(path)
    started = time.perf_counter()
    images = [reduced(document[i].render(scale=dpi / 72, grayscale=True).to_pil()) for i in range(len(pages))]
    seconds = (time.perf_counter() - started) / len(pages)
    document.close()
    return images, seconds


def measure(readers: dict[str, Reader], pages: dict[str, list[fo.Rendered]], dpis: list[int]) -> tuple[list[Row], dict]:
    rows, render = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for dpi in dpis:
            for kind, rendered in pages.items():
                images, render[(kind, dpi)] = render_all(rendered, dpi, Path(folder))
                for name, read in readers.items():
                    row = Row(name, kind, dpi, [], [], [], [])
                    for page, image in zip(rendered, images, strict=True):
                        cpu, started = cpu_seconds(), time.perf_counter()
                        text = read(image)
                        row.seconds.append(time.perf_counter() - started)
                        row.cpu.append(cpu_seconds() - cpu)
                        row.accuracy.append(fo.char_accuracy(page.text, text))
                        row.word_accuracy.append(word_accuracy(page.text, text))
                    rows.append(row)
                    print(
                        f"{name:9} {kind:14} {dpi} DPI: {statistics.mean(row.seconds):.2f} s/page "
                        f"(CPU {statistics.mean(row.cpu):.2f} s), accuracy {statistics.mean(row.accuracy):.4f}",
                        flush=True,
                    )
    return rows, render


@dataclass
class LoaderRow:
    dpi: int
    workers: int
    pages: int
    seconds: float  # wall, the whole document
    cpu: float
    accuracy: float
    worst: tuple[str, float]  # the kind of page read least accurately, and its accuracy
    texts: list[str]


def loader_by_workers(pages: dict[str, list[fo.Rendered]], dpis: list[int], workers: list[int]) -> list[LoaderRow]:
    """The scanned pages as one image-only PDF, read through load_document at each DPI by each number of workers."""
    scans = [page for kind in pages.values() for page in kind]
    kinds = [kind for kind, rendered in pages.items() for _ in rendered]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = fo.image_only_pdf([page.image for page in scans], Path(folder) / "scans.pdf", dpi=300)
        for dpi in dpis:
            for count in workers:
                limits = replace(LoadLimits.from_settings(), ocr_dpi=dpi, ocr_workers=count)
                cpu, started = cpu_seconds(), time.perf_counter()
                doc = load_document(path, limits=limits)
                seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
                read = {section.page: section.text for section in doc.sections}
                texts = [read.get(n, "") for n in range(1, len(scans) + 1)]
                each = [fo.char_accuracy(page.text, text) for page, text in zip(scans, texts, strict=True)]
                by_kind = {kind: mean([a for a, k in zip(each, kinds, strict=True) if k == kind]) for kind in pages}
                worst = min(by_kind.items(), key=lambda item: item[1])
                rows.append(LoaderRow(dpi, count, len(scans), seconds, cpu, mean(each), worst, texts))
                print(
                    f"load_document {dpi} DPI, {count} worker(s): {seconds / len(scans):.2f} s/page wall "
                    f"(CPU {cpu / len(scans):.2f} s), accuracy {mean(each):.4f}, worst {worst[0]} {worst[1]:.4f}",
                    flush=True,
                )
    return rows


def loader_report(args: argparse.Namespace, rows: list[LoaderRow], loads: tuple) -> str:
    lines = [
        "### OCR workers (`scripts/bench_ocr.py`, the product's loader)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}; {tesseract_version()} (Debian), one thread per Tesseract process",
        f"- Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f} on {os.cpu_count()} cores "
        "(other work shared the machine: wall times stretch with it, and a second worker gains only what a core "
        "left idle allows)",
        f"- Command: `.venv/bin/python scripts/bench_ocr.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- Document: an image-only PDF of {rows[0].pages if rows else 0} A4 pages ({args.pages} per language and "
        "variant, as above), read by `load_document` with settings.ocr.dpi and settings.ocr.workers as shown; "
        "wall and CPU seconds (Tesseract's included) of the whole document divided by its pages",
        "",
        "| DPI | workers | s/page (wall) | CPU s/page | char accuracy | worst kind of page | same text as 1 worker |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        first = next(r for r in rows if r.dpi == row.dpi)
        lines.append(
            f"| {row.dpi} | {row.workers} | {row.seconds / row.pages:.2f} | {row.cpu / row.pages:.2f} "
            f"| {row.accuracy:.4f} | {row.worst[0]} {row.worst[1]:.4f} "
            f"| {'yes' if row.texts == first.texts else 'no'} |"
        )
    return "\n".join(lines)


def mixed_throughput(total: int, scan_every: int) -> dict[str, float]:
    """Seconds to load a `total`-page PDF whose every `scan_every`-th page is a scan, against a text-only PDF of the
    same pages; and what the one step OCR added to a text page (deciding it has a usable text layer) costs."""
    texts = [" ".join(fo.ZH_PARAGRAPHS[(n + k) % len(fo.ZH_PARAGRAPHS)] for k in range(4)) for n in range(total)]
    scans = {n for n in range(total) if n % scan_every == scan_every - 1}
    scan_image = fo.full_page("mixed", dpi=300).image
    limits = LoadLimits.from_settings()
    with tempfile.TemporaryDirectory() as folder:
        mixed = fo.pages_pdf([scan_image if n in scans else texts[n] for n in range(total)], Path(folder) / "m.pdf")
        text_only = fo.pages_pdf(texts, Path(folder) / "t.pdf")
        text_s = min(_timed(lambda: load_document(text_only, limits=limits)) for _ in range(3))
        pages = list(PdfReader(text_only).pages)
        extracted = [page.extract_text() for page in pages]
        decide = [(page, text) for page, text in zip(pages, extracted, strict=True)]
        decide_s = min(_timed(lambda: [_needs_ocr(page, text) for page, text in decide]) for _ in range(3))
        started = time.perf_counter()
        doc = load_document(mixed, limits=limits)
        mixed_s = time.perf_counter() - started
    figures = {
        "pages": total,
        "scans": len(scans),
        "text_s": text_s,
        "decide_s": decide_s,
        "mixed_s": mixed_s,
        "ocr_pages": doc.report.ocr_pages,
    }
    print(f"mixed PDF: {figures}", flush=True)
    return figures


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def report(args: argparse.Namespace, rows: list[Row], render: dict, mixed: dict, loads: tuple) -> str:
    rapid = any(row.engine == "rapidocr" for row in rows)
    rapid_setup = f"; rapidocr-onnxruntime 1.4.4 with {args.threads} ONNX Runtime thread(s), classifier off"
    lines = [
        "## OCR (`scripts/bench_ocr.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}; {tesseract_version()} (Debian), one thread per page "
        f"(OMP_THREAD_LIMIT=1){rapid_setup if rapid else '; rapidocr not installed: Tesseract only'}",
        f"- Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f} on {os.cpu_count()} cores "
        "(other work shared the machine: wall times stretch with it, CPU times much less)",
        f"- Command: `.venv/bin/python scripts/bench_ocr.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- Pages: A4, 12 pt body text drawn at 300 DPI, {args.pages} per kind, rendered back by PDFium at the DPI "
        "shown; \"scanned\" = turned 1.2°, blurred, speckled, JPEG 50%",
        "",
        "| engine | page | DPI | s/page (wall) | CPU s/page | char accuracy | word accuracy (en) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        words = f"{mean(row.word_accuracy):.3f}" if row.page.startswith("en") else ""
        lines.append(
            f"| {row.engine} | {row.page} | {row.dpi} | {mean(row.seconds):.2f} | {mean(row.cpu):.2f} "
            f"| {mean(row.accuracy):.4f} | {words} |"
        )
    for name in sorted({row.engine for row in rows}):
        for dpi in args.dpi:
            mine = [row for row in rows if row.engine == name and row.dpi == dpi]
            lines.append(
                f"| **{name}, all pages** | | {dpi} | **{mean([s for r in mine for s in r.seconds]):.2f}** "
                f"| **{mean([c for r in mine for c in r.cpu]):.2f}** "
                f"| **{mean([a for r in mine for a in r.accuracy]):.4f}** | |"
            )
    renders = ", ".join(f"{dpi} DPI {mean([v for (_, d), v in render.items() if d == dpi]):.3f} s" for dpi in args.dpi)
    lines += [
        "",
        f"Rendering a scanned page with PDFium (not in the figures above): {renders} per page.",
        "",
        *summary(rows, args.dpi[-1]),
        "",
        f"A {mixed['pages']:.0f}-page PDF (Chinese text pages, every {args.scan_every}th page a scan of the mixed "
        f"page; load_document with the default settings, {LoadLimits.from_settings().ocr_dpi} DPI):",
        "",
        "| PDF | seconds | pages/s | pages read by OCR |",
        "| --- | --- | --- | --- |",
        f"| {mixed['pages']:.0f} text pages | {mixed['text_s']:.2f} | {mixed['pages'] / mixed['text_s']:.0f} | 0 |",
        f"| {mixed['pages'] - mixed['scans']:.0f} text + {mixed['scans']:.0f} scanned pages | {mixed['mixed_s']:.2f} "
        f"| {mixed['pages'] / mixed['mixed_s']:.1f} | {mixed['ocr_pages']:.0f} |",
        "",
        f"A text page costs {1000 * mixed['text_s'] / mixed['pages']:.1f} ms (best of 3 loads); of that, deciding "
        f"that its text layer is usable, the only step OCR added to it, costs "
        f"{1e6 * mixed['decide_s'] / mixed['pages']:.0f} µs. Each scanned page of the mixed PDF cost "
        f"{(mixed['mixed_s'] - mixed['text_s'] * (1 - mixed['scans'] / mixed['pages'])) / mixed['scans']:.2f} s "
        "(rendering and OCR, wall time).",
    ]
    return "\n".join(lines)


def summary(rows: list[Row], dpi: int) -> list[str]:
    """What the figures say about the choice of engine and the 1.5 s target, at `dpi`."""

    def pick(engine_name: str, prefix: str = "") -> list[Row]:
        return [r for r in rows if r.engine == engine_name and r.dpi == dpi and r.page.startswith(prefix)]

    tesseract = pick("tesseract")
    cpu = {lang: mean([c for r in pick("tesseract", lang) for c in r.cpu]) for lang in LANGUAGES}
    met = [lang for lang in LANGUAGES if cpu[lang] <= TARGET_S]
    lines = [
        f"Tesseract at {dpi} DPI: CPU {cpu['en']:.2f} s per English page, {cpu['zh']:.2f} s per Chinese page "
        f"(about {mean([len(fo.normalized(t)) for t in _zh_texts()]):.0f} characters of 12 pt text), "
        f"{cpu['mixed']:.2f} s per mixed page. The {TARGET_S} s target (in CPU time) is met for "
        f"{', '.join(met) or 'none'} of {', '.join(LANGUAGES)}; wall times on a shared machine are longer.",
    ]
    rapid = pick("rapidocr")
    if rapid:
        words = mean([w for r in pick("rapidocr", "en") for w in r.word_accuracy])
        lines.append(
            f"The pick, Tesseract: character accuracy {mean([a for r in tesseract for a in r.accuracy]):.4f} against "
            f"rapidocr's {mean([a for r in rapid for a in r.accuracy]):.4f} at {dpi} DPI, for "
            f"{mean([c for r in tesseract for c in r.cpu]):.2f} CPU s per page against "
            f"{mean([c for r in rapid for c in r.cpu]):.2f}; and rapidocr (PP-OCRv4) reads English words run "
            f"together (word accuracy {words:.3f}: \"componentranks\"), which keyword search cannot match."
        )
    return lines


def _zh_texts() -> list[str]:
    return [fo.full_page("zh", dpi=100).text]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dpi", type=int, nargs="+", default=[150, 200])
    parser.add_argument("--pages", type=int, default=2, help="pages per language and variant")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for rapidocr")
    parser.add_argument("--mixed-pages", type=int, default=50)
    parser.add_argument("--scan-every", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="settings.ocr.workers to time")
    parser.add_argument("--quick", action="store_true", help="only the loader's time per page by workers and DPI")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    start_load = os.getloadavg()[0]
    pages = scanned_pages(args.pages)
    loader = loader_report(args, loader_by_workers(pages, args.dpi, args.workers), (start_load, os.getloadavg()[0]))
    print(loader)
    if not args.no_write:
        write_section("bench_ocr_workers", loader)
    if args.quick:
        return
    start_load = os.getloadavg()[0]
    readers: dict[str, Reader] = {"tesseract": tesseract_reader(LoadLimits.from_settings().ocr_languages)}
    rapid = rapidocr_reader(args.threads)
    if rapid is None:
        print("rapidocr-onnxruntime is not installed: measuring Tesseract only", flush=True)
    else:
        readers["rapidocr"] = rapid
    rows, render = measure(readers, pages, args.dpi)
    mixed = mixed_throughput(args.mixed_pages, args.scan_every)
    section = report(args, rows, render, mixed, (start_load, os.getloadavg()[0]))
    print(section)
    if not args.no_write:
        write_section("bench_ocr", section)


if __name__ == "__main__":
    main()
