"""Chat faults that need a stack of their own: a worker dying mid-answer, a client walking away mid-answer."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.llm.stack import LLMStack
from kbqa_client import sse_events
from tests.conftest import answering_settings, llm_settings, running_llm_stack, wait_until
from tests.live_api import serving

LONG = "请写一篇很长的文章，介绍印刷术从古至今的历史，至少一千字。"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llm_model_file: Path) -> Iterator[LLMStack]:
    settings = llm_settings(tmp_path_factory.mktemp("faults-llm"), llm_model_file)
    with running_llm_stack(settings) as running:
        yield running


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, stack: LLMStack) -> Iterator[str]:
    """The API served by a real uvicorn, so a client that disconnects really closes its socket."""
    settings = answering_settings(tmp_path_factory.mktemp("faults-api"), embedding_model_dir, stack, max_tokens=1000)
    with serving(settings) as url:
        yield url


def stream_events(http: httpx.Client, url: str, body: dict, stop_after_deltas: int | None = None) -> list[dict]:
    events = []
    with http.stream("POST", f"{url}/api/chat", json={"stream": True, **body}) as response:
        assert response.status_code == 200
        for event in sse_events(response):
            events.append(event)
            if stop_after_deltas is not None and sum(e["type"] == "delta" for e in events) >= stop_after_deltas:
                break
    return events


def worker_status(stack: LLMStack) -> dict:
    worker = stack.settings.fastchat.workers[0]
    return httpx.post(f"http://{stack.settings.fastchat.host}:{worker.port}/worker_get_status", timeout=30).json()


def test_client_disconnect_stops_the_generation(api_url: str, stack: LLMStack) -> None:
    """The answer may run to 1,000 tokens; a client that leaves after 3 must stop it. Proven by the worker's own
    token count, not by how soon the next answer comes (a busy machine makes any answer slow)."""
    before = worker_status(stack)["tokens_generated"]
    with httpx.Client(timeout=300) as http:
        events = stream_events(http, api_url, {"question": LONG, "mode": "llm"}, stop_after_deltas=3)
        assert [e["type"] for e in events][:2] == ["sources", "delta"]
    wait_until(lambda: worker_status(stack)["queue_length"] == 0, "the worker to let go of the abandoned generation")
    spent = worker_status(stack)["tokens_generated"] - before
    assert 3 <= spent < 100, f"{spent} tokens generated for a client that left after 3"
    with httpx.Client(timeout=300) as http:
        body = {"question": "1+1等于几？只回答数字。", "mode": "llm", "stream": False, "max_tokens": 8}
        assert "2" in http.post(f"{api_url}/api/chat", json=body).json()["answer"]
    assert worker_status(stack)["queue_length"] == 0


def test_worker_dying_mid_answer_ends_with_an_error_event(api_url: str, stack: LLMStack) -> None:
    worker = next(p for p in stack.processes if p.spec.name.startswith("worker-"))
    events: list[dict] = []
    with httpx.Client(timeout=120) as http, http.stream(
        "POST", f"{api_url}/api/chat", json={"question": LONG, "mode": "llm", "stream": True}
    ) as response:
        for event in sse_events(response):
            events.append(event)
            if sum(e["type"] == "delta" for e in events) == 3:
                os.killpg(worker.popen.pid, signal.SIGKILL)
    assert events[-1]["type"] == "error", events[-4:]
    assert events[-1]["status"] == 503 and "mid-stream" in events[-1]["message"]
    assert events[-1]["code"] == "llm_stream_broken"
    assert events[-1]["partial_answer"] == "".join(e["text"] for e in events if e["type"] == "delta")

    worker.popen.wait(timeout=120)  # its socket closes before the process is gone: revive only a dead one
    assert stack.revive() == [worker.spec.name]
    deadline = time.monotonic() + 300
    with httpx.Client(timeout=120) as http:
        while True:
            body = {"question": "1+1等于几？只回答数字。", "mode": "llm", "stream": False, "max_tokens": 8}
            response = http.post(f"{api_url}/api/chat", json=body)
            if response.status_code == 200:
                break
            assert response.status_code == 503 and time.monotonic() < deadline, response.text
            time.sleep(0.5)
    assert "2" in response.json()["answer"]


@pytest.mark.usefixtures("settings_from_env")
def test_cli_ask_streams_the_answer_then_its_sources(api_url: str) -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli_app

    with httpx.Client(base_url=api_url, timeout=60) as http:
        assert http.post("/api/kbs", json={"name": "灯塔库"}).status_code == 201
        fact = "石屿灯塔建于一八九三年，灯光射程二十二海里。".encode()
        uploaded = http.post("/api/kbs/灯塔库/documents", files=[("files", ("灯塔.md", fact))])
        assert uploaded.status_code == 202
        wait_until(lambda: http.get("/api/kbs/灯塔库/documents").json()[0]["status"] == "ready", "灯塔.md indexed")
    runner = CliRunner()
    env = {"KBQA_API_URL": api_url}
    result = runner.invoke(cli_app, ["ask", "灯塔库", "石屿灯塔是哪一年建成的？", "--top-k", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "1893" in result.output or "一八九三" in result.output
    assert "[1] 灯塔.md (灯塔库, score" in result.output
    missing = runner.invoke(cli_app, ["ask", "没有的库", "问题"], env=env)
    assert missing.exit_code == 1 and "404" in missing.output and "没有的库" in missing.output
