"""Launching and stopping the FastChat stack: controller, openai_api_server and the model workers.

Each part is its own process (`python -m app.llm.entrypoints <role>`), in its own process group, logging to
`<data_dir>/logs/<name>.log`. `start()` returns once `/v1/models` lists every configured model; the pids go
to `<data_dir>/run/llm-stack.json` so `kbqa llm down` can stop a stack started elsewhere. In the foreground
the children are also told by the kernel to stop when their parent dies, so a killed launcher leaves no orphans,
and `wait()` supervises them: a process that exits is restarted, and so is a worker that is alive but no longer
serving (`probe_workers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil

from app.modelprep.llm_gguf import (
    ModelFileError,
    prefill_gguf_path,
    prepare_prefill_for,
    reads_prompts_in_bf16,
    require_model_file,
)
from app.settings import PROJECT_ROOT, Settings, WorkerSettings

ENTRYPOINT = "app.llm.entrypoints"
PID_FILE = "llm-stack.json"
_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """The stack could not start (port taken, model missing, a process died) or is not running."""


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    log_file: Path
    worker_port: int | None = None


@dataclass
class WorkerWatch:
    """What the supervisor last saw of one worker: when it last answered, and its progress counters then. A worker
    that has not answered since it was launched is loading its model: it gets the start timeout, not the stall one."""

    answered_at: float
    serving: bool
    progress: tuple[object, ...] | None = None
    progress_at: float = 0.0


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the launching process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LLMStack:
    def __init__(self, settings: Settings, report: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.report = report
        self.processes: list[RunningProcess] = []
        self._watches: dict[str, WorkerWatch] = {}
        self._gguf_only: set[int] = set()  # ports of auto workers whose bf16 copy could not be written

    @property
    def pid_file(self) -> Path:
        return self.settings.storage.run_dir / PID_FILE

    def worker_model_path(self, worker: WorkerSettings) -> str:
        if worker.model_path:
            return worker.model_path
        if worker.kind != "llamacpp":
            raise StackError(f"a {worker.kind} worker needs model_path (a Hugging Face model folder or name)")
        return str(self.settings.storage.default_llm_file)

    def worker_prefill_path(self, worker: WorkerSettings) -> str:
        """The bf16 copy of the GGUF that reads this worker's prompts, or "" (WorkerSettings.prefill_weights)."""
        if worker.kind != "llamacpp" or worker.port in self._gguf_only or not reads_prompts_in_bf16(
            worker.prefill_weights
        ):
            return ""
        return str(prefill_gguf_path(Path(self.worker_model_path(worker))))

    def worker_model_name(self, worker: WorkerSettings) -> str:
        return worker.model_name or self.settings.llm.model

    def plan(self) -> list[ProcessSpec]:
        s = self.settings
        logs = s.storage.logs_dir
        controller = s.fastchat.controller_url
        specs = [
            ProcessSpec(
                "controller",
                [
                    "controller",
                    "--host",
                    s.fastchat.host,
                    "--port",
                    str(s.fastchat.controller_port),
                    "--dispatch-method",
                    s.fastchat.dispatch_method,
                ],
                logs / "fastchat-controller.log",
            ),
            ProcessSpec(
                "openai_api_server",
                [
                    "openai_api_server",
                    "--host",
                    s.fastchat.host,
                    "--port",
                    str(s.fastchat.api_port),
                    "--controller-address",
                    controller,
                ],
                logs / "fastchat-openai-api.log",
            ),
        ]
        for worker in s.fastchat.workers:
            specs.append(
                ProcessSpec(
                    f"worker-{worker.port}",
                    self._worker_argv(worker),
                    logs / f"fastchat-worker-{worker.port}.log",
                    worker_port=worker.port,
                )
            )
        return specs

    def _worker_argv(self, worker: WorkerSettings) -> list[str]:
        s = self.settings
        common = [
            "--host",
            s.fastchat.host,
            "--port",
            str(worker.port),
            "--worker-address",
            f"http://{s.fastchat.host}:{worker.port}",
            "--controller-address",
            s.fastchat.controller_url,
            "--model-path",
            self.worker_model_path(worker),
            "--model-names",
            self.worker_model_name(worker),
            "--limit-worker-concurrency",
            str(worker.concurrency),
        ]
        if worker.conv_template:
            common += ["--conv-template", worker.conv_template]
        if worker.kind == "llamacpp":
            return [
                "llamacpp_worker",
                *common,
                "--context-length",
                str(worker.context_length),
                "--threads",
                str(worker.threads),
                "--speculative-tokens",
                str(worker.speculative_tokens),
                "--prefill-model-path",
                self.worker_prefill_path(worker),
            ]
        if worker.kind == "hf":
            return ["model_worker", *common, "--device", worker.device, *worker.extra_args]
        return ["vllm_worker", *common, *worker.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        heart_beat = self.settings.fastchat.heart_beat_s
        env.update(
            LOGDIR=str(self.settings.storage.logs_dir / "fastchat"),  # FastChat's own loggers (copies of our logs)
            FASTCHAT_WORKER_HEART_BEAT_INTERVAL=str(heart_beat),
            FASTCHAT_CONTROLLER_HEART_BEAT_EXPIRATION=str(3 * heart_beat),
            # FastChat's API server gives up on a worker that sends nothing for 100 s by default: a question queued
            # behind other users' answers would end mid-stream while our client still waits (llm.timeout_s).
            FASTCHAT_WORKER_API_TIMEOUT=str(math.ceil(self.settings.llm.timeout_s)),
            PYTHONUNBUFFERED="1",
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        return env

    def preflight(self) -> None:
        if running_processes(self.settings):
            raise StackError(f"an LLM stack is already running (see {self.pid_file}); stop it with `kbqa llm down`")
        s = self.settings
        ports = [s.fastchat.controller_port, s.fastchat.api_port, *(w.port for w in s.fastchat.workers)]
        if len(set(ports)) != len(ports):
            raise StackError(f"the FastChat ports must differ: {ports}")
        for port in ports:
            if not port_is_free(s.fastchat.host, port):
                raise StackError(f"port {s.fastchat.host}:{port} is in use; free it or change the port in settings")
        for worker in s.fastchat.workers:
            if worker.kind == "llamacpp":
                model = Path(self.worker_model_path(worker))
                require_model_file(model)
                if self.worker_prefill_path(worker):
                    try:
                        if prepare_prefill_for(model, worker.prefill_weights, report=self.report) is None:
                            self._gguf_only.add(worker.port)
                    except ModelFileError as exc:
                        raise StackError(str(exc)) from exc

    def start(self, *, detach: bool = False) -> None:
        """Start everything and wait until the API lists every model; on any failure stop what was started."""
        self.preflight()
        (self.settings.storage.logs_dir / "fastchat").mkdir(parents=True, exist_ok=True)
        self.settings.storage.run_dir.mkdir(parents=True, exist_ok=True)
        specs = self.plan()
        try:
            self._spawn(specs[0], detach)
            controller_test = f"{self.settings.fastchat.controller_url}/test_connection"
            self._wait_until(lambda: answers_ok(controller_test), "controller")
            for spec in specs[1:]:
                self._spawn(spec, detach)
            self._write_pid_file()
            self._wait_until(self.models_ready, "the model workers", self.settings.fastchat.start_timeout_s)
            now = time.monotonic()
            self._watches = {p.spec.name: WorkerWatch(now, serving=True, progress_at=now) for p in self.processes}
        except BaseException:
            self.stop()
            raise
        self.report(f"LLM ready: {self.settings.fastchat.api_url} serves {', '.join(self.model_names())}")

    def model_names(self) -> list[str]:
        return sorted({self.worker_model_name(w) for w in self.settings.fastchat.workers})

    def models_ready(self) -> bool:
        """The API lists every model and every worker answers on its own port: a FastChat worker registers with
        the controller before its HTTP server listens, so a listed model alone could still be sent to a worker
        that refuses the connection."""
        try:
            response = httpx.get(f"{self.settings.fastchat.api_url}/models", timeout=5)
            listed = {card["id"] for card in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError):
            return False
        return set(self.model_names()) <= listed and all(
            self._worker_answers(w) for w in self.settings.fastchat.workers
        )

    def _worker_answers(self, worker: WorkerSettings) -> bool:
        return self._worker_status(worker.port) is not None

    def _worker_status(self, port: int) -> dict[str, object] | None:
        try:
            response = httpx.post(f"http://{self.settings.fastchat.host}:{port}/worker_get_status", timeout=5)
            status = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return status if isinstance(status, dict) else None

    def probe_workers(self) -> list[str]:
        """Restart every worker that is alive but not serving; returns their names.

        A worker can stop serving without exiting (a lock it never released, a generation stuck in native code,
        a stopped process); its heartbeat may still tell the controller it is fine, and every request sent to it
        then waits forever. A worker that leaves status requests unanswered for `fastchat_stall_timeout_s`, or has
        calls queued but produces no token (and finishes no call) for as long, is stopped and started again.
        """
        restarted = []
        for index, proc in enumerate(self.processes):
            if proc.spec.worker_port is None or proc.popen.poll() is not None:
                continue
            reason = self._stall_reason(proc)
            if reason is None:
                continue
            message = f"{proc.spec.name} is alive but not serving ({reason}); restarting it"
            self.report(f"{message} (log: {proc.spec.log_file})")
            proc.log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {message} ====\n".encode())
            proc.log.close()
            terminate([proc.popen.pid], grace_s=5)
            self.processes[index] = self._launch(proc.spec, detach=False)
            restarted.append(proc.spec.name)
        if restarted:
            self._write_pid_file()
        return restarted

    def _stall_reason(self, proc: RunningProcess) -> str | None:
        assert proc.spec.worker_port is not None
        now = time.monotonic()
        limit = self.settings.fastchat.stall_timeout_s
        watch = self._watches.setdefault(proc.spec.name, WorkerWatch(now, serving=False, progress_at=now))
        status = self._worker_status(proc.spec.worker_port)
        if status is None:
            silent = now - watch.answered_at
            if not watch.serving:
                limit = self.settings.fastchat.start_timeout_s
            return f"no answer to a status request for {silent:.0f} s" if silent >= limit else None
        watch.answered_at, watch.serving = now, True
        progress = (status.get("tokens_generated"), status.get("call_ct"))
        if progress == (None, None):  # a stock FastChat worker: it reports no progress, so only silence counts
            return None
        if not status.get("queue_length") or progress != watch.progress:
            watch.progress, watch.progress_at = progress, now
            return None
        idle = now - watch.progress_at
        if idle < limit:
            return None
        return f"{status['queue_length']} call(s) admitted and no token produced for {idle:.0f} s"

    def _spawn(self, spec: ProcessSpec, detach: bool) -> None:
        self.processes.append(self._launch(spec, detach))

    def _launch(self, spec: ProcessSpec, detach: bool) -> RunningProcess:
        now = time.monotonic()
        self._watches[spec.name] = WorkerWatch(now, serving=False, progress_at=now)  # loading its model
        log = spec.log_file.open("ab")
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name} ====\n".encode())
        log.flush()
        popen = subprocess.Popen(
            [sys.executable, "-m", ENTRYPOINT, *spec.argv],
            cwd=PROJECT_ROOT,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detach else die_with_parent,
        )
        return RunningProcess(spec, popen, log)

    def _wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.raise_if_died()
            if ready():
                return
            time.sleep(0.3)
        raise StackError(
            f"{what} did not become ready within {timeout_s:.0f} s; see the logs in {self.settings.storage.logs_dir}"
        )

    def raise_if_died(self) -> None:
        for proc in self.processes:
            code = proc.popen.poll()
            if code is not None:
                raise StackError(
                    f"{proc.spec.name} exited with code {code}; last lines of {proc.spec.log_file}:\n"
                    + tail(proc.spec.log_file)
                )

    def _write_pid_file(self) -> None:
        entries = [
            {"name": p.spec.name, "pid": p.popen.pid, "started": psutil.Process(p.popen.pid).create_time()}
            for p in self.processes
        ]
        self.pid_file.write_text(json.dumps({"api_url": self.settings.fastchat.api_url, "processes": entries}))

    def revive(self) -> list[str]:
        """Restart every process that has exited (a crashed worker comes back on its port and re-registers)."""
        revived = []
        for index, proc in enumerate(self.processes):
            code = proc.popen.poll()
            if code is None:
                continue
            self.report(f"{proc.spec.name} exited with code {code}; restarting it (log: {proc.spec.log_file})")
            proc.log.close()
            self.processes[index] = self._launch(proc.spec, detach=False)
            revived.append(proc.spec.name)
        if revived:
            self._write_pid_file()
        return revived

    def wait(self, stopping: threading.Event | None = None, max_restarts_per_minute: int = 3) -> None:
        """Supervise until Ctrl-C (or until `stopping` is set): restart what dies or stops serving; give up
        (StackError) on processes that keep dying."""
        stopping = stopping or threading.Event()
        restarts: list[float] = []
        next_probe = time.monotonic() + self.settings.fastchat.probe_interval_s
        while not stopping.wait(0.5):
            restarted = self.revive()
            if time.monotonic() >= next_probe and not stopping.is_set():
                restarted += self.probe_workers()
                next_probe = time.monotonic() + self.settings.fastchat.probe_interval_s
            if restarted:
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > max_restarts_per_minute:
                    raise StackError(f"processes keep dying; see the logs in {self.settings.storage.logs_dir}")

    def supervise_in_background(self) -> Callable[[], None]:
        """`wait()` in a thread, for a launcher whose main thread serves something else (`kbqa up`); returns
        the function that ends the supervision (call it before `stop()`)."""
        stopping = threading.Event()

        def supervise() -> None:
            try:
                self.wait(stopping)
            except StackError as exc:
                self.report(f"error: {exc}; the LLM stack is no longer supervised")

        thread = threading.Thread(target=supervise, name="llm-supervisor", daemon=True)
        thread.start()

        def end() -> None:
            stopping.set()
            thread.join()

        return end

    def stop(self) -> None:
        terminate([p.popen.pid for p in self.processes])
        for proc in self.processes:
            proc.log.close()
        self.processes.clear()
        self.pid_file.unlink(missing_ok=True)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def answers_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL what is still alive after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def running_processes(settings: Settings) -> list[int]:
    """Pids from the pid file that are still the processes we started (not reused pids)."""
    path = settings.storage.run_dir / PID_FILE
    try:
        entries = json.loads(path.read_text())["processes"]
    except (OSError, ValueError, KeyError):
        return []
    alive = []
    for entry in entries:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(entry["pid"])
            if abs(proc.create_time() - entry["started"]) < 1 and ENTRYPOINT in " ".join(proc.cmdline()):
                alive.append(proc.pid)
    return alive


def stop_running(settings: Settings) -> int:
    """Stop the stack recorded in the pid file; returns how many processes were stopped."""
    pids = running_processes(settings)
    terminate(pids)
    (settings.storage.run_dir / PID_FILE).unlink(missing_ok=True)
    return len(pids)
