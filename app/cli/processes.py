"""The processes kbqa runs here: the REST API (`serve`), the web UI (`ui`), the LLM stack (`llm up/down`), all of
them at once (`up`); and the LLM they serve, asked directly (`chat`, `llm status`)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.output import console, fail
from app.settings import get_settings

if TYPE_CHECKING:
    from app.llm.stack import LLMStack

llm_app = typer.Typer(help="The local LLM: the FastChat stack (controller, OpenAI-compatible API, workers).")


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default api.port)")] = None,
) -> None:
    """Run the REST API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.main import create_app, server_options
    from app.process_files import keep_process_files_in_data_dir

    settings = get_settings()
    keep_process_files_in_data_dir(settings)
    uvicorn.run(
        create_app(settings), host=host or settings.api.host, port=port or settings.api.port, **server_options(settings)
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
    console.print(
        f"starting FastChat ({len(settings.fastchat.workers)} worker(s)); logs in {settings.storage.logs_dir}"
    )
    try:
        stack.start(detach=detach)
    except (StackError, ModelFileError) as exc:
        fail(str(exc))
    console.print(f"  OpenAI-compatible API: {settings.fastchat.api_url}", highlight=False)
    console.print(f"  controller:            {settings.fastchat.controller_url}", highlight=False)
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
        fail(exc.message)
    console.print(f"{client.base_url} serves: {', '.join(models) or '(no model yet)'}", highlight=False)


def chat(
    question: str,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default llm.model).")] = None,
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
        fail(exc.message)


def ui() -> None:
    """Run the web UI (Streamlit) against the API at api_url; it prints its own URL."""
    from app.webui_launcher import ui_argv, ui_environment

    settings = get_settings()
    argv = ui_argv(settings)
    os.execve(argv[0], argv, ui_environment(settings))


def up(
    llm: Annotated[bool, typer.Option(help="Start the local LLM stack too (off: use llm.base_url as it is).")] = True,
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
                fail(str(exc))
            console.print(f"  web UI:                {settings.ui.url}", highlight=False)
        console.print(f"  kbqa API:              {settings.api.url}  (docs: {settings.api.url}/docs)", highlight=False)
        uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port, **server_options(settings))
    except KeyboardInterrupt:
        pass
    finally:
        if web:
            terminate([web.pid])
        if stack and end_supervision:
            console.print("stopping the LLM stack")
            end_supervision()
            stack.stop()
