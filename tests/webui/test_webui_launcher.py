"""`kbqa up` and `kbqa ui` start the web UI for real (Streamlit serving webui_st.py), pointed at the API by
environment, and stop it with the rest."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from app.settings import PROJECT_ROOT
from tests.conftest import KBQA, api_env, free_port


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_answering(process: subprocess.Popen[bytes], log: Path, *urls: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not all(answers(url) for url in urls):
        assert process.poll() is None, f"exited early: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"not answering: {urls}\n{log.read_text()[-2000:]}"
        time.sleep(0.5)


def streamlit_child(process: subprocess.Popen[bytes]) -> psutil.Process:
    children = psutil.Process(process.pid).children(recursive=True)
    return next(c for c in children if "streamlit" in " ".join(c.cmdline()))


@pytest.fixture
def env(tmp_path: Path, embedding_model_dir: Path) -> dict[str, str]:
    return api_env(
        tmp_path / "data", embedding_model_dir, {"ui__port": free_port(), "security__client_api_key": "k-123"}
    )


def test_up_serves_ui_and_api_and_ctrl_c_stops_both(env: dict[str, str], tmp_path: Path) -> None:
    api, ui = f"http://127.0.0.1:{env['KBQA_API__PORT']}", f"http://127.0.0.1:{env['KBQA_UI__PORT']}"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*KBQA, "up", "--no-llm"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out)
    try:
        wait_answering(process, log, f"{api}/health", f"{ui}/_stcore/health")
        assert "<title>" in httpx.get(ui).text  # the Streamlit page itself
        child = streamlit_child(process)
        assert child.environ()["KBQA_API_URL"] == api
        assert child.environ()["KBQA_CLIENT_API_KEY"] == "k-123"
        assert f"web UI:                {ui}" in log.read_text()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    _, alive = psutil.wait_procs([child], timeout=30)
    assert not alive, "the UI outlived `kbqa up`"
    assert not answers(f"{ui}/_stcore/health") and not answers(f"{api}/health")


def test_up_refuses_a_taken_ui_port(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["KBQA_UI__PORT"])))
        taken.listen()
        result = subprocess.run(
            [*KBQA, "up", "--no-llm"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode != 0
    assert f"port {env['KBQA_UI__PORT']} on 127.0.0.1 is taken" in result.stderr + result.stdout
    assert not answers(f"http://127.0.0.1:{env['KBQA_API__PORT']}/health")


def test_ui_command_runs_streamlit_on_the_configured_address(env: dict[str, str], tmp_path: Path) -> None:
    ui = f"http://127.0.0.1:{env['KBQA_UI__PORT']}"
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*KBQA, "ui"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out)
    try:
        wait_answering(process, log, f"{ui}/_stcore/health", timeout=60)
        listening = {c.laddr for c in psutil.Process(process.pid).net_connections() if c.status == "LISTEN"}
        assert {(addr.ip, addr.port) for addr in listening} == {("127.0.0.1", int(env["KBQA_UI__PORT"]))}
    finally:
        process.terminate()
        process.wait(30)
