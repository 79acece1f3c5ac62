"""The commands that work on knowledge bases, documents, searches, answers and evaluations: all through the REST
API (the one door to the data) with kbqa_client, at api.client_url (KBQA_API_URL) or api.host/api.port."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from app.cli import upload
from app.cli.output import JsonOption, console, fail, print_json, table
from app.settings import get_settings
from kbqa_client import ApiError, KbqaClient

kb_app = typer.Typer(help="Knowledge bases.", no_args_is_help=True)
doc_app = typer.Typer(help="Documents in a knowledge base.", no_args_is_help=True)

P = ParamSpec("P")
R = TypeVar("R")


def client() -> KbqaClient:
    settings = get_settings()
    return KbqaClient(
        settings.api.url, settings.security.resolved_client_api_key, timeout_s=120.0, connect_timeout_s=5.0
    )


def error_line(exc: ApiError) -> str:
    if exc.unreachable:
        return f"{exc.message}; start it with `kbqa serve` or `kbqa up`"
    hint = " (set KBQA_CLIENT_API_KEY to one of the server's security.api_keys)" if exc.status == 401 else ""
    return f"{exc.status}: {exc.detail_text}{hint}"


def api_command(command: Callable[P, R]) -> Callable[P, R]:
    """An API error ends the command with one line and exit code 1 instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            fail(error_line(exc))

    return run


@kb_app.command("create")
@api_command
def kb_create(
    name: str,
    description: str = "",
    chunk_size: Annotated[int | None, typer.Option(help="Characters per chunk (default: ingest.chunk_size)")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap (default: chunk_overlap scaled)")] = None,
    as_json: JsonOption = False,
) -> None:
    kb = client().create_knowledge_base(name, description, chunk_size, chunk_overlap)
    print_json(kb) if as_json else console.print(f"created knowledge base {kb['name']!r} ({kb['collection_name']})")


@kb_app.command("list")
@api_command
def kb_list(as_json: JsonOption = False) -> None:
    kbs = client().knowledge_bases()
    if as_json:
        return print_json(kbs)
    table(kbs, ["name", "document_count", "ready_count", "chunk_count", "created_at", "description"])


@kb_app.command("show")
@api_command
def kb_show(name: str) -> None:
    print_json(client().knowledge_base(name))


@kb_app.command("delete")
@api_command
def kb_delete(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    if not yes:
        typer.confirm(f"Delete knowledge base {name!r} and all its documents?", abort=True)
    client().delete_knowledge_base(name)
    console.print(f"deleted {name!r}")


@kb_app.command("rebuild")
@api_command
def kb_rebuild(name: str) -> None:
    client().rebuild_knowledge_base(name)
    console.print(f"rebuilding {name!r} in the background; follow it with `kbqa doc list {name}`")


@doc_app.command("upload")
@api_command
def doc_upload(
    kb: str,
    paths: Annotated[list[Path], typer.Argument(help="Files, or folders to upload every supported file from")],
    wait: Annotated[bool, typer.Option(help="Follow indexing until every file is ready or failed")] = True,
    batch_files: Annotated[int, typer.Option(min=1, help="Files per request at most")] = upload.BATCH_FILES,
    batch_mb: Annotated[float, typer.Option(min=0.001, help="Megabytes per request at most")] = upload.BATCH_MB,
    parallel: Annotated[int, typer.Option(min=1, max=16, help="Requests at once")] = upload.PARALLEL_REQUESTS,
) -> None:
    """Upload files and folders, several files per request, with one progress bar for all of them. Files the
    server would refuse (empty, too large, an unsupported type) are listed at the end with the reason; the others
    are still uploaded. Exit code 1 if any file was refused."""
    api = client()
    try:
        planned = upload.plan(paths, upload.ServerRules.of(api.status()), batch_files, batch_mb)
    except FileNotFoundError as exc:
        fail(str(exc))
    if not planned.batches and not planned.refused:
        fail(f"no supported files found (skipped: {', '.join(sorted(planned.skipped)) or 'none'})")
    started = time.monotonic()
    tally, finished = upload.FolderUpload(api, kb, console, parallel).run(planned, wait)
    upload.report(console, planned, tally, finished, time.monotonic() - started)
    if tally.refused:
        raise typer.Exit(1)


@doc_app.command("list")
@api_command
def doc_list(kb: str, as_json: JsonOption = False) -> None:
    docs = client().documents(kb)
    if as_json:
        return print_json(docs)
    rows = [{**doc, "read": how_read(doc)} for doc in docs]
    columns = ["id", "filename", "status", "progress", "pages", "read", "chunk_count", "size_bytes", "error"]
    table(rows, columns, title=kb)


def how_read(doc: dict[str, Any]) -> str:
    """How a document was read, for `doc list`: "OCR 3/5 pages (conf 0.91), 1 empty" once read, "reading page
    3/5" while a paged document is read, "text" when nothing came from pictures."""
    reading = doc.get("reading")
    if reading is None:
        done, total = doc.get("pages_done"), doc.get("pages_total")
        return f"reading page {done}/{total}" if doc["status"] == "processing" and total else ""
    parts = []
    if reading["ocr_pages"]:
        parts.append(f"OCR {reading['ocr_pages']}/{doc['pages'] or reading['ocr_pages']} pages")
    if reading["ocr_pictures"]:
        parts.append(f"OCR {reading['ocr_pictures']} pictures")
    if reading["ocr_confidence"] is not None and parts:
        parts[-1] += f" (conf {reading['ocr_confidence']:.2f})"
    if reading["empty_pages"]:
        parts.append(f"{len(reading['empty_pages'])} empty")
    return ", ".join(parts) or "text"


@doc_app.command("show")
@api_command
def doc_show(kb: str, doc_id: str) -> None:
    print_json(client().document(kb, doc_id))


@doc_app.command("chunks")
@api_command
def doc_chunks(kb: str, doc_id: str, offset: int = 0, limit: int = 20, as_json: JsonOption = False) -> None:
    chunks = client().chunks(kb, doc_id, offset, limit)
    if as_json:
        return print_json(chunks)
    for chunk in chunks:
        page = f"  page {chunk['page']}" if chunk["page"] is not None else ""
        console.rule(f"#{chunk['chunk_index']}{page}  {chunk['heading'] or ''}")
        console.print(chunk["text"], highlight=False, markup=False)


@doc_app.command("delete")
@api_command
def doc_delete(kb: str, doc_id: str) -> None:
    client().delete_document(kb, doc_id)
    console.print(f"deleted document {doc_id}")


@api_command
def search(
    kb: str,
    question: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    threshold: Annotated[float, typer.Option("--threshold", "-t")] = 0.0,
    mode: Annotated[str, typer.Option("--mode", "-m", help="dense | bm25 | hybrid")] = "hybrid",
    as_json: JsonOption = False,
) -> None:
    """知识库测试: show the chunks that best match a question, with their scores."""
    result = client().search(kb, question, top_k, threshold, mode)
    if as_json:
        return print_json(result)
    for rank, hit in enumerate(result["hits"], start=1):
        page = f"  page {hit['page']}" if hit["page"] is not None else ""
        where = f"{hit['file_name']}{page}  #{hit['chunk_index']}"
        console.rule(f"[{rank}] score {hit['score']:.3f}  {where}")
        console.print(hit["text"], highlight=False, markup=False)
    console.print(f"{len(result['hits'])} hits in {result['timings_ms'].get('total', 0):.0f} ms")


@api_command
def ask(
    kb: Annotated[list[str], typer.Argument(help="Knowledge base(s), then the question as the last argument")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    threshold: Annotated[float, typer.Option("--threshold", "-t")] = 0.0,
) -> None:
    """知识库问答: answer a question from knowledge bases through the API, streamed, then its sources."""
    if len(kb) < 2:
        fail("give at least one knowledge base and the question, e.g. kbqa ask 合同库 \"违约金怎么算？\"")
    *kb_names, question = kb
    body = {"question": question, "mode": "kb", "kb_names": kb_names, "top_k": top_k, "score_threshold": threshold}
    sources: list[dict[str, Any]] = []
    for event in client().chat_events(body):
        if event["type"] == "sources":
            sources = event["sources"]
            if event.get("rewritten_question"):
                console.print(f"(rewritten: {event['rewritten_question']})", highlight=False)
        elif event["type"] == "delta":
            sys.stdout.write(event["text"])
            sys.stdout.flush()
        elif event["type"] == "error":
            sys.stdout.write("\n")
            fail(event["message"])
    sys.stdout.write("\n")
    for source in sources:
        page = f" 第{source['page']}页" if source["page"] else ""
        console.print(f"[{source['number']}] {source['file_name']}{page} ({source['kb_name']}, score "
                      f"{source['score']:.2f})", highlight=False, markup=False)


@api_command
def evaluate(
    kb: str,
    questions: Annotated[Path, typer.Argument(help="JSONL, one question per line (see app/eval/questions.py)")],
    mode: Annotated[list[str] | None, typer.Option("--mode", "-m", help="dense | bm25 | hybrid (repeat)")] = None,
    chunk_size: Annotated[
        list[int] | None, typer.Option("--chunk-size", "-c", help="Also try this chunk size (repeat)")
    ] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap for those sizes (default: scaled)")] = None,
    answer_sample: Annotated[int, typer.Option(help="Questions to answer with the LLM (end-to-end check)")] = 0,
    misses: Annotated[int, typer.Option(help="Missed questions shown per mode")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report to this file")] = None,
) -> None:
    """检索评测: recall@1/5/10, MRR and latency per mode (and chunk size), misses, a score threshold."""
    from app.eval.render import print_report

    if not questions.is_file():
        fail(f"{questions} is not a file")
    api = client()
    with questions.open("rb") as handle:
        job = api.start_evaluation(
            kb, handle, mode or [], chunk_size or [], answer_sample, chunk_overlap, filename=questions.name
        )
    try:
        with console.status("evaluating") as status:
            while job["status"] in {"queued", "running"}:
                time.sleep(1)
                job = api.evaluation_job(job["id"])
                status.update(f"{job['progress']:.0%} {job['stage']}")
    except KeyboardInterrupt:
        api.cancel_evaluation(job["id"])
        fail("interrupted; the evaluation was cancelled")
    if job["status"] != "done":
        fail(f"evaluation {job['status']}: {job['error'] or job['stage']}")
    print_report(console, job["report"], misses)
    if json_path:
        json_path.write_text(json.dumps(job["report"], ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report written to {json_path}", highlight=False)
