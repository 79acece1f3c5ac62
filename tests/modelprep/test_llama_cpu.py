"""llama.cpp on this machine's CPU, with the real model: prompts read in batches, and auto's measured choice of the
weights that read them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.modelprep.llama_cpu import has_amx
from app.modelprep.llm_gguf import (
    prefill_choice_path,
    prefill_gguf_path,
    prepare_prefill_for,
    reads_prompts_in_bf16,
)

READ_A_BATCH = """
import sys, llama_cpp
from app.modelprep.llama_cpu import llama_loading
with llama_loading():
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_batch=512, verbose=False)
ids = llm.tokenize("石屿灯塔位于东海石屿岛北端，灯光射程二十二海里。".encode() * 4)
llm.eval(ids)
print(len(ids), int(llm.scores[len(ids) - 1].argmax()))
"""


def test_the_gguf_reads_a_prompt_in_one_batch_on_this_cpu(llm_model_file: Path) -> None:
    """On a CPU with AMX, llama.cpp's AMX weight buffers crashed the process on the first batch of more than one
    token (seen on an Intel Xeon VM); models load without them there. In a process of its own, so a crash fails
    this test instead of ending the run."""
    done = subprocess.run([sys.executable, "-c", READ_A_BATCH, str(llm_model_file)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"exit {done.returncode} (AMX: {has_amx()}): {done.stderr[-500:]}"
    tokens, _next = map(int, done.stdout.split())
    assert tokens > 32


@pytest.fixture
def linked_model(llm_model_file: Path) -> Iterator[Path]:
    """The real GGUF under a folder of its own (a hard link: same file, same times), so that the copy and the
    recorded choice this test makes are its own."""
    folder = Path(tempfile.mkdtemp(prefix="auto-prefill-", dir=llm_model_file.parent.parent))
    model = folder / llm_model_file.name
    os.link(llm_model_file, model)
    yield model
    shutil.rmtree(folder)


@pytest.mark.skipif(not reads_prompts_in_bf16("auto"), reason="auto reads prompts with the GGUF on this machine "
                    "(no bf16 in hardware, or under 16 GiB of memory): it measures nothing")
def test_auto_keeps_the_bf16_copy_only_where_it_measured_faster_and_measures_once(linked_model: Path) -> None:
    lines: list[str] = []
    chosen = prepare_prefill_for(linked_model, "auto", report=lines.append)
    recorded = json.loads(prefill_choice_path(linked_model).read_text(encoding="utf-8"))
    assert recorded["bf16_s"] > 0 and recorded["model_s"] > 0
    assert recorded["bf16_faster"] == (recorded["bf16_s"] < recorded["model_s"])
    assert any("measuring which weights read prompts faster" in line for line in lines)
    if recorded["bf16_faster"]:
        assert chosen == prefill_gguf_path(linked_model) and chosen.is_file()
    else:
        assert chosen is None and not prefill_gguf_path(linked_model).exists(), "a copy never read is removed"

    again: list[str] = []
    assert prepare_prefill_for(linked_model, "auto", report=again.append) == chosen
    assert not any("measuring" in line for line in again), "measured once per machine, model and llama.cpp"
