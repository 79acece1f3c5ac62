"""llama.cpp on this machine's CPU: what its flags allow, and which weights read a prompt faster here.

Two facts measured on the machines this project runs on decide this module:

- On an Intel Xeon with AMX (a Firecracker VM, 2026-12-03), llama.cpp's AMX weight buffers crash the process
  (SIGSEGV in `ggml_backend_amx_mul_mat`) on the first batch of more than one token of a Q4_K_M model, while
  single-token decoding works; loaded without llama.cpp's extra buffer types (`use_extra_bufts`), the same model
  reads prompts correctly, but decodes at 12.7 tokens/s where the AMX buffers decode at 14.3 (60 tokens after a
  330-token prompt, in process, interleaved runs). So on a CPU that reports AMX, a model that reads prompts loads
  without them (`llama_loading`), and the worker decodes in a second context that keeps them and never reads a
  batch (app/llm/llamacpp_worker.py).
- Whether a bf16 copy of the GGUF reads prompts faster than the GGUF itself depends on the CPU: on an AMD EPYC
  with AVX512-BF16, 360 tokens in 2.2-2.65 s against 3.0-3.3 s; on that Intel Xeon, 368 tokens in 5.8 s against
  2.8 s. So `prefill_weights: auto` measures it once per machine (`python -m app.modelprep.llama_cpu`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags /proc/cpuinfo lists for the first CPU (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16): without it, bf16 weights read
    prompts slower than quantized ones, so `prefill_weights: auto` does not even measure them."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def has_amx() -> bool:
    return bool({"amx_tile", "amx_int8", "amx_bf16"} & cpu_flags())


@contextmanager
def llama_loading(extra_buffers: bool = False) -> Iterator[None]:
    """Wrap the construction of a `llama_cpp.Llama`: on a CPU that reports AMX, the model loads without llama.cpp's
    extra buffer types (see the module's docstring), unless `extra_buffers` (for a context that only ever decodes
    one token at a time: there they work, and decode ~1.13x as fast). llama-cpp-python 0.3.36 takes the model
    parameters from `llama_model_default_params()` inside its constructor and has no argument for this one."""
    if extra_buffers or not has_amx():
        yield
        return
    import llama_cpp.llama_cpp as bindings

    default = bindings.llama_model_default_params

    def without_extra_buffers() -> bindings.llama_model_params:
        params = default()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        bindings.llama_model_default_params = default


_SAMPLE = ("石屿灯塔位于东海石屿岛北端，光绪十九年由海关船钞部主持修建，塔身为白色八角形铸铁结构，"
           "高二十一米，灯光射程二十二海里。"
           "The harbour district has twelve berths and handled 8.4 million tonnes of cargo in 2019. ")


def prompt_reading_seconds(model: Path, tokens: int = 256, runs: int = 3) -> float:
    """The median time `model` takes to read a `tokens`-token prompt from an empty cache, here, on all cores."""
    import llama_cpp

    threads = os.cpu_count() or 1
    with llama_loading():
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=tokens + 16, n_batch=512, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
    ids = llm.tokenize((_SAMPLE * 8).encode())[:tokens]
    times = []
    for _ in range(runs + 1):  # the first run pages the weights in
        llm.reset()
        llm._ctx.kv_cache_clear()
        started = time.perf_counter()
        llm.eval(ids)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> None:
    """`python -m app.modelprep.llama_cpu <gguf> <bf16 copy>`: prints {"model_s": …, "bf16_s": …} as JSON. Run
    in a process of its own, so that the two models' memory is returned when it ends."""
    model, copy = (argv if argv is not None else sys.argv[1:])[:2]
    print(json.dumps({"model_s": prompt_reading_seconds(Path(model)), "bf16_s": prompt_reading_seconds(Path(copy))}))


if __name__ == "__main__":
    main()
