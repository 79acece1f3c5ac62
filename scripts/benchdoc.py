"""What the benchmark scripts share: the eval sets, settings over a temporary data folder, the machine line and
writing each script's own section of docs/benchmarks.md."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.settings import DEFAULT_EMBEDDING_DIRNAME, Settings, WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
EVAL = ROOT.parent / "shared" / "eval"


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def require_eval() -> None:
    if not EVAL.exists():
        sys.exit(f"{EVAL} is absent: this benchmark needs ../shared/eval")


def bench_settings(prefix: str, **worker: object) -> Settings:
    """A temporary data folder, the prepared embedding model, free FastChat ports and one llama.cpp worker on
    the prepared chat model (`worker` overrides its settings)."""
    prepared = Settings()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the run's knowledge bases and logs go with it
    return Settings(  # type: ignore[arg-type]
        storage__data_dir=folder / "data",
        embedding__model=str(prepared.storage.models_dir / DEFAULT_EMBEDDING_DIRNAME),
        fastchat__controller_port=free_port(),
        fastchat__api_port=free_port(),
        fastchat__workers=[
            WorkerSettings(**{"port": free_port(), "model_path": str(prepared.storage.default_llm_file), **worker})
        ],
    )


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, section: str, target: Path = BENCHMARKS_MD) -> None:
    """Replace the text between this benchmark's markers (or append it); `section` excludes the markers."""
    start, end = markers(name)
    block = f"{start}\n{section.strip()}\n{end}"
    text = target.read_text(encoding="utf-8") if target.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    target.write_text(text, encoding="utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`kbqa serve` in its own process on a free port over `data_dir` (its log in data_dir/api.log), with `env`
    added to this process's environment; returns once /health answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "api.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "KBQA_STORAGE__DATA_DIR": str(data_dir), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the API did not start; see {data_dir / 'api.log'}")
        time.sleep(0.3)
