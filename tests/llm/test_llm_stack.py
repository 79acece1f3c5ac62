"""The real FastChat stack (stock controller and openai_api_server, our llama.cpp worker, the real Qwen2.5 GGUF),
reached through the `openai` package exactly as the backend reaches it."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.llm.client import LLMClient, LLMRequestRejected, LLMStreamError, LLMUnavailable
from app.llm.stack import LLMStack, StackError, port_is_free, running_processes, stop_running
from app.modelprep.llm_gguf import prefill_gguf_path, reads_prompts_in_bf16
from app.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port, llm_settings, running_llm_stack, wait_until

ZH_QUESTION = [{"role": "user", "content": "中国的首都是哪个城市？只回答城市名。"}]
EN_QUESTION = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
LONG_ANSWER = [{"role": "user", "content": "Write a long essay about the history of printing, in English."}]


def test_models_lists_the_configured_model(llm_stack: LLMStack) -> None:
    assert LLMClient(llm_stack.settings).list_models() == [llm_stack.settings.llm.model]


def test_chinese_chat_completion(llm_stack: LLMStack) -> None:
    result = LLMClient(llm_stack.settings).chat(ZH_QUESTION)
    assert "北京" in result.text
    assert result.finish_reason == "stop"
    assert result.usage["prompt_tokens"] > 10
    assert result.usage["completion_tokens"] >= 1
    assert result.usage["total_tokens"] == result.usage["prompt_tokens"] + result.usage["completion_tokens"]


def test_english_chat_completion_streams_token_by_token(llm_stack: LLMStack) -> None:
    question = "Name the capital of France, then the capital of Italy, in one sentence."
    deltas = list(LLMClient(llm_stack.settings).stream([{"role": "user", "content": question}]))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text and "Rome" in text
    assert len([d for d in deltas if d.text]) >= 5, "the answer must arrive in pieces, not at once"
    assert deltas[-1].finish_reason == "stop"


def test_stream_and_non_stream_agree_at_temperature_zero(llm_stack: LLMStack) -> None:
    client = LLMClient(llm_stack.settings)
    streamed = "".join(d.text for d in client.stream(ZH_QUESTION))
    assert streamed == client.chat(ZH_QUESTION).text


def test_raw_sse_events_are_valid_json_with_unicode(llm_stack: LLMStack) -> None:
    """The pydantic 2 fix: FastChat's stream used to fail on `chunk.json(ensure_ascii=False)`."""
    body = {"model": llm_stack.settings.llm.model, "messages": ZH_QUESTION, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{llm_stack.settings.fastchat.api_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "北京" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_the_same_long_prompt_twice_gets_the_same_answer(llm_stack: LLMStack) -> None:
    """A regression guard: llama-cpp-python's prompt-cache reuse answered a repeated RAG prompt with garbage."""
    prompt = (
        "已知信息：\n[1] (灯塔.md) 石屿灯塔建于一八九三年，灯光射程二十二海里。\n\n"
        "根据上述已知信息，简洁和专业的来回答用户的问题。如果无法从中得到答案，请说 “根据已知信息无法回答该问题” "
        "或 “没有提供足够的相关信息”，不允许在答案中添加编造成分，答案请使用中文。\n\n问题是：石屿灯塔是哪一年建成的？"
    )
    client = LLMClient(llm_stack.settings)
    answers = [client.chat([{"role": "user", "content": prompt}]).text for _ in range(3)]
    assert "一八九三" in answers[0] or "1893" in answers[0]
    assert answers[1] == answers[0] and answers[2] == answers[0]


def test_a_conversation_reuses_its_earlier_turns_and_answers_as_if_evaluated_whole(llm_stack: LLMStack) -> None:
    """The second turn resumes after the turns it shares with the first prompt (its system message and first
    question are not evaluated again), and its greedy answer is the one the whole prompt gets from scratch."""
    client = LLMClient(llm_stack.settings)
    worker = llm_stack.settings.fastchat.workers[0]

    def reused() -> int:
        url = f"http://{llm_stack.settings.fastchat.host}:{worker.port}/worker_get_status"
        return httpx.post(url, timeout=60).json()["prompt_tokens_reused"]

    first_turn = [{"role": "user", "content": "长城是什么时候开始修建的？请分朝代说明，每个朝代一句话。" * 3}]
    first_answer = client.chat(first_turn, max_tokens=48).text
    second_turn = [*first_turn, {"role": "assistant", "content": first_answer},
                   {"role": "user", "content": "那么明长城有多长？"}]
    before = reused()
    resumed = client.chat(second_turn, max_tokens=48).text
    first_prompt_tokens = client.chat(first_turn, max_tokens=1).usage["prompt_tokens"]
    assert reused() - before > first_prompt_tokens // 2, "the first turn was evaluated again"

    client.chat([{"role": "system", "content": "Another system message."}, *EN_QUESTION], max_tokens=1)
    before = reused()
    whole = client.chat(second_turn, max_tokens=48).text
    assert reused() == before, "nothing was shared with the question before: the prompt must be evaluated whole"
    assert resumed == whole and resumed


def test_prompts_are_read_by_the_bf16_copy_and_answers_decoded_by_the_gguf(
    llm_stack: LLMStack, llm_model_file: Path
) -> None:
    """prefill_weights bf16 (the fixture's): the worker reads prompts with the copy made beside the GGUF; the
    conversation and regression tests above run on this path, and the answer here is right."""
    worker = llm_stack.settings.fastchat.workers[0]
    url = f"http://{llm_stack.settings.fastchat.host}:{worker.port}/worker_get_status"
    assert httpx.post(url, timeout=60).json()["prefill_model"] == str(prefill_gguf_path(llm_model_file))
    assert "北京" in LLMClient(llm_stack.settings).chat(ZH_QUESTION).text


@pytest.mark.parametrize("choice", ["auto", "bf16", "model"])
def test_prefill_weights_choose_the_copy_that_reads_prompts(tmp_path: Path, choice: str) -> None:
    settings = Settings(storage__data_dir=tmp_path,  # type: ignore[arg-type]
                        fastchat__workers=[{"kind": "llamacpp", "port": 21002, "prefill_weights": choice}])
    argv = LLMStack(settings).plan()[-1].argv
    assert reads_prompts_in_bf16(choice) == (choice == "bf16") or choice == "auto"
    expected = str(prefill_gguf_path(settings.storage.default_llm_file)) if reads_prompts_in_bf16(choice) else ""
    assert argv[argv.index("--prefill-model-path") + 1] == expected


def _stack_on(model: Path, prefill_weights: str, data_dir: Path, lines: list[str]) -> LLMStack:
    worker = {"kind": "llamacpp", "port": free_port(), "model_path": str(model), "prefill_weights": prefill_weights}
    settings = Settings(storage__data_dir=data_dir, fastchat__controller_port=free_port(),  # type: ignore[arg-type]
                        fastchat__api_port=free_port(), fastchat__workers=[worker])
    return LLMStack(settings, report=lines.append)


def _unconvertible_gguf(folder: Path) -> Path:
    model = folder / "unconvertible.gguf"
    model.write_bytes(b"GGUF" + bytes(4096))  # llama.cpp's quantizer cannot read it
    return model


def test_a_bf16_copy_that_cannot_be_written_stops_a_worker_set_to_bf16(tmp_path: Path) -> None:
    stack = _stack_on(_unconvertible_gguf(tmp_path), "bf16", tmp_path, [])
    with pytest.raises(StackError, match=r"could not write a bf16 copy of .*unconvertible.gguf"):
        stack.preflight()


@pytest.mark.skipif(not reads_prompts_in_bf16("auto"), reason="auto reads prompts with the GGUF on this machine "
                    "(no bf16 in hardware, or under 16 GiB of memory), so it never writes a copy")
def test_a_bf16_copy_auto_cannot_write_leaves_the_worker_on_the_gguf(tmp_path: Path) -> None:
    lines: list[str] = []
    stack = _stack_on(_unconvertible_gguf(tmp_path), "auto", tmp_path, lines)
    stack.preflight()
    assert "could not write a bf16 copy" in lines[-1] and "prompts are read with the GGUF itself" in lines[-1]
    argv = stack.plan()[-1].argv
    assert argv[argv.index("--prefill-model-path") + 1] == ""


def test_max_tokens_ends_with_length(llm_stack: LLMStack) -> None:
    result = LLMClient(llm_stack.settings).chat(LONG_ANSWER, max_tokens=8)
    assert result.finish_reason == "length"
    assert result.usage["completion_tokens"] == 8


def test_prompt_over_the_context_length_is_a_clear_4xx(llm_stack: LLMStack) -> None:
    too_long = [{"role": "user", "content": "上下文长度测试。" * 800}]  # far over the 2,048-token context
    with pytest.raises(LLMRequestRejected, match="maximum context length is 2048 tokens"):
        LLMClient(llm_stack.settings).chat(too_long)
    with pytest.raises(LLMRequestRejected):
        list(LLMClient(llm_stack.settings).stream(too_long))
    body = {"model": llm_stack.settings.llm.model, "messages": too_long}
    response = httpx.post(f"{llm_stack.settings.fastchat.api_url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 40303


def test_fastchat_waits_on_a_queued_worker_as_long_as_our_client_does(llm_stack: LLMStack) -> None:
    """FastChat's API server drops a worker that sends nothing for FASTCHAT_WORKER_API_TIMEOUT (100 s by default):
    with several users queued behind one worker, the last question ended mid-stream while our client still waited."""
    expected = str(math.ceil(llm_stack.settings.llm.timeout_s))
    pids = running_processes(llm_stack.settings)
    seen = [psutil.Process(pid).environ().get("FASTCHAT_WORKER_API_TIMEOUT") for pid in pids]
    assert len(seen) >= 3, seen  # controller, API server, worker
    assert set(seen) == {expected}


def test_unknown_model_is_404(llm_stack: LLMStack) -> None:
    with pytest.raises(LLMUnavailable, match="does not serve"):
        LLMClient(llm_stack.settings).chat(EN_QUESTION, model="no-such-model")


def test_llm_down_names_the_url_it_tried(tmp_path: Path) -> None:
    settings = Settings(storage__data_dir=tmp_path, llm__base_url=f"http://127.0.0.1:{free_port()}/v1")  # type: ignore[arg-type]
    client = LLMClient(settings)
    with pytest.raises(LLMUnavailable, match=f"LLM server at {settings.llm.base_url} is not reachable"):
        client.chat(EN_QUESTION)
    with pytest.raises(LLMUnavailable, match="kbqa llm up"):
        list(client.stream(EN_QUESTION))


@pytest.mark.usefixtures("settings_from_env")
def test_cli_chat_streams_the_answer(llm_stack: LLMStack) -> None:
    env = {"KBQA_LLM__BASE_URL": llm_stack.settings.fastchat.api_url, "KBQA_LLM__TEMPERATURE": "0"}
    result = CliRunner().invoke(cli_app, ["chat", "中国的首都是哪个城市？只回答城市名。"], env=env)
    assert result.exit_code == 0, result.output
    assert "北京" in result.output


@pytest.mark.usefixtures("settings_from_env")
def test_cli_chat_with_llm_down_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(cli_app, ["chat", "你好"], env={"KBQA_LLM__BASE_URL": url})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: LLM server at {url} is not reachable (ConnectError); start it with `kbqa llm up` "
                     "or point llm.base_url at a running OpenAI-compatible server"]


def test_worker_dying_mid_stream_ends_the_stream_with_an_error_then_recovers(
    tmp_path: Path, llm_model_file: Path
) -> None:
    with running_llm_stack(llm_settings(tmp_path, llm_model_file, llm__max_tokens=400)) as stack:
        client = LLMClient(stack.settings)
        worker = next(p for p in stack.processes if p.spec.name.startswith("worker-"))
        received = []
        with pytest.raises(LLMStreamError, match="stopped answering mid-stream"):
            for delta in client.stream(LONG_ANSWER):
                received.append(delta.text)
                if len(received) == 3:
                    os.killpg(worker.popen.pid, signal.SIGKILL)
        assert len(received) >= 3

        with pytest.raises((LLMUnavailable, LLMStreamError)):
            client.chat(EN_QUESTION)  # no worker: a clear error, not a hang

        worker.popen.wait(timeout=120)  # its socket closes before the process is gone: revive only a dead one
        assert stack.revive() == [worker.spec.name]
        deadline = time.monotonic() + 300
        while True:
            try:
                result = client.chat(EN_QUESTION)
                break
            except (LLMUnavailable, LLMStreamError):
                assert time.monotonic() < deadline, "the restarted worker never served again"
                time.sleep(0.5)
        assert "Paris" in result.text


def test_two_workers_behind_one_controller_pass_over_the_busy_one(tmp_path: Path, llm_model_file: Path) -> None:
    """While one worker generates a long answer, the controller sends the next question to the other.

    The controller balances on the queue lengths the workers' heartbeats report, and counts its own dispatches in
    between; a heartbeat that lands after a dispatch but before the request reaches the worker resets that count
    (on a busy CI machine four concurrent questions once all went to one worker). `/refresh_all_workers` makes the
    controller ask both workers now, the state the next heartbeat would bring, so the test waits on no timer. The
    long answer counts to 3,000, which cannot end (by EOS or by its token limit) before the question is answered."""
    settings = llm_settings(tmp_path, llm_model_file, workers=2, llm__max_tokens=3000)
    controller = f"http://{settings.fastchat.host}:{settings.fastchat.controller_port}"

    def status(port: int) -> dict[str, int]:
        return httpx.post(f"http://{settings.fastchat.host}:{port}/worker_get_status", timeout=60).json()

    def both_registered_after_refresh() -> bool:
        """FastChat's refresh drops a worker that does not answer its status request within 5 s (a loaded machine)."""
        httpx.post(f"{controller}/refresh_all_workers", timeout=120).raise_for_status()
        return httpx.post(f"{controller}/worker_get_status", timeout=120).json()["speed"] == 2  # 1 per worker

    with running_llm_stack(settings):
        client = LLMClient(settings)
        assert client.list_models() == [settings.llm.model]  # one model name, two workers
        counting = client.stream([{"role": "user", "content": "Count from 1 to 3000, one number per line."}])
        next(d for d in counting if d.text)  # a token arrived: one worker is generating
        ports = [w.port for w in settings.fastchat.workers]
        busy = [port for port in ports if status(port)["queue_length"] == 1]
        assert len(busy) == 1, [status(port) for port in ports]
        idle = next(port for port in ports if port not in busy)
        wait_until(both_registered_after_refresh, "the controller to hold both workers")

        assert "Paris" in client.chat(EN_QUESTION, max_tokens=16).text
        assert status(busy[0])["queue_length"] == 1, "the count ended before the question was sent: no proof"
        assert status(idle)["call_ct"] == 1, "the question was not answered by the idle worker"
        counting.close()


def test_stop_leaves_no_process_and_frees_the_ports(tmp_path: Path, llm_model_file: Path) -> None:
    settings = llm_settings(tmp_path, llm_model_file)
    with running_llm_stack(settings) as stack:
        pids = [p.popen.pid for p in stack.processes]
        assert running_processes(settings) == pids
        assert (settings.storage.logs_dir / "fastchat-controller.log").stat().st_size > 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
    ports = [settings.fastchat.controller_port, settings.fastchat.api_port, settings.fastchat.workers[0].port]
    assert all(port_is_free(settings.fastchat.host, port) for port in ports)
    assert not (settings.storage.run_dir / "llm-stack.json").exists()


def _cli_env(settings: Settings) -> dict[str, str]:
    worker = settings.fastchat.workers[0]
    return {
        **os.environ,
        "KBQA_STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "KBQA_FASTCHAT__CONTROLLER_PORT": str(settings.fastchat.controller_port),
        "KBQA_FASTCHAT__API_PORT": str(settings.fastchat.api_port),
        "KBQA_FASTCHAT__WORKERS": json.dumps([worker.model_dump()]),
    }


def _wait_for_ready(settings: Settings, launcher: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not LLMStack(settings).models_ready():
        assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
        assert time.monotonic() < deadline, "kbqa llm up never got ready"
        time.sleep(0.5)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c, started as a background job", "kill -9 of the launcher"])
def test_kbqa_llm_up_leaves_no_orphans(tmp_path: Path, llm_model_file: Path, how: str) -> None:
    """A shell starts a background job (`kbqa llm up &`, as CI scripts do) with SIGINT ignored, and Python keeps
    an inherited SIG_IGN: the launcher must still stop on SIGINT, as it promises."""
    settings = llm_settings(tmp_path, llm_model_file)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "llm", "up"], cwd=PROJECT_ROOT, env=_cli_env(settings),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_ignore_sigint if "background" in how else None,
    )
    try:
        _wait_for_ready(settings, launcher)
        children = [psutil.Process(pid) for pid in running_processes(settings)]
        assert len(children) == 3
        launcher.send_signal(signal.SIGKILL if "kill" in how else signal.SIGINT)
        try:
            launcher.wait(timeout=120)  # a bound for a hung launcher, far above its stop (at most ~15 s)
        except subprocess.TimeoutExpired:
            launcher.kill()
            pytest.fail(f"the launcher did not stop after {how}: {launcher.communicate()[0]}")
        _gone, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, f"orphans left after {how}: {alive}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        stop_running(settings)


def test_kbqa_llm_up_detached_then_down(tmp_path: Path, llm_model_file: Path) -> None:
    settings = llm_settings(tmp_path, llm_model_file)
    env = _cli_env(settings)
    up = subprocess.run([sys.executable, "-m", "app.cli", "llm", "up", "--detach"], cwd=PROJECT_ROOT, env=env,
                        capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert settings.fastchat.api_url in up.stdout
        assert LLMStack(settings).models_ready()
        again = subprocess.run([sys.executable, "-m", "app.cli", "llm", "up", "--detach"], cwd=PROJECT_ROOT,
                               env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "app.cli", "llm", "down"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert "stopped 3 process(es)" in down.stdout
    assert running_processes(settings) == []
    assert not LLMStack(settings).models_ready()


def test_missing_model_file_is_reported_with_the_fix(tmp_path: Path) -> None:
    settings = Settings(storage__data_dir=tmp_path, fastchat__controller_port=free_port(),  # type: ignore[arg-type]
                        fastchat__api_port=free_port())
    env = _cli_env(settings) | {"KBQA_FASTCHAT__WORKERS": json.dumps([{"kind": "llamacpp", "port": free_port()}])}
    result = subprocess.run([sys.executable, "-m", "app.cli", "llm", "up"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"model file {settings.storage.default_llm_file} is missing; run `kbqa models prepare`" in result.stdout


def test_port_in_use_is_refused_before_starting(tmp_path: Path, llm_model_file: Path) -> None:
    settings = llm_settings(tmp_path, llm_model_file)
    with socket.socket() as busy:
        busy.bind((settings.fastchat.host, settings.fastchat.api_port))
        busy.listen()
        stack = LLMStack(settings, report=lambda _line: None)
        with pytest.raises(Exception, match=f"port {settings.fastchat.host}:{settings.fastchat.api_port} is in use"):
            stack.start()
    assert stack.processes == []


def test_worker_kinds_launch_the_matching_fastchat_worker(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[arg-type]
        storage__data_dir=tmp_path,
        fastchat__workers=[
            {"kind": "llamacpp", "port": 21002, "threads": 4},
            {"kind": "hf", "port": 21003, "model_path": "/models/qwen", "device": "cuda", "model_name": "big"},
            {"kind": "vllm", "port": 21004, "model_path": "/models/qwen", "extra_args": ["--num-gpus", "2"]},
        ],
    )
    plan = {spec.name: spec.argv for spec in LLMStack(settings).plan()}
    assert plan["worker-21002"][0] == "llamacpp_worker"
    model_path = plan["worker-21002"][plan["worker-21002"].index("--model-path") + 1]
    assert model_path == str(settings.storage.default_llm_file)
    assert plan["worker-21003"][:1] == ["model_worker"] and "cuda" in plan["worker-21003"]
    assert plan["worker-21003"][plan["worker-21003"].index("--model-names") + 1] == "big"
    assert plan["worker-21004"][0] == "vllm_worker" and plan["worker-21004"][-2:] == ["--num-gpus", "2"]
    with pytest.raises(Exception, match="needs model_path"):
        LLMStack(Settings(storage__data_dir=tmp_path, fastchat__workers=[{"kind": "hf"}])).plan()  # type: ignore[arg-type]


def test_client_disconnect_stops_generation(llm_stack: LLMStack) -> None:
    """Closing a stream frees the worker at once: the next request is answered without waiting for the first."""
    client = LLMClient(llm_stack.settings)
    stream = client.stream(LONG_ANSWER, max_tokens=1000)
    for _ in zip(range(3), stream, strict=False):
        pass
    stream.close()
    worker = llm_stack.settings.fastchat.workers[0]
    status_url = f"http://{llm_stack.settings.fastchat.host}:{worker.port}/worker_get_status"
    finished = threading.Event()
    result: list[str] = []

    def ask() -> None:
        result.append(client.chat(EN_QUESTION, max_tokens=8).text)
        finished.set()

    threading.Thread(target=ask, daemon=True).start()
    # 1,000 tokens would take ~30 s at 35 tokens/s; a freed worker answers the 8-token question in about 1 s.
    assert finished.wait(20), "the abandoned generation kept the worker busy"
    assert "Paris" in result[0]
    assert httpx.post(status_url, timeout=5).json()["queue_length"] == 0


def test_kbqa_llm_up_restarts_a_worker_that_is_alive_but_not_serving(tmp_path: Path, llm_model_file: Path) -> None:
    """A stopped worker (SIGSTOP: alive, holding its port, answering nothing) is what a wedged one looks like from
    outside; the supervisor must notice it within its stall timeout, say so, and start a worker that serves."""
    settings = llm_settings(tmp_path, llm_model_file)
    env = _cli_env(settings) | {"KBQA_FASTCHAT__STALL_TIMEOUT_S": "4", "KBQA_FASTCHAT__PROBE_INTERVAL_S": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "llm", "up"], cwd=PROJECT_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    printed = threading.Condition()  # notified on every line the launcher prints, and when its output ends
    ended = False

    def read_output() -> None:
        nonlocal ended
        for line in launcher.stdout or []:
            with printed:
                lines.append(line)
                printed.notify_all()
        with printed:
            ended = True
            printed.notify_all()

    def wait_for_line(fragment: str, deadline: float, what: str) -> None:
        def seen() -> bool:
            return any(fragment in line for line in lines)

        with printed:
            printed.wait_for(lambda: ended or seen(), timeout=max(0.0, deadline - time.monotonic()))
            assert seen(), f"{what}: {''.join(lines)}"

    threading.Thread(target=read_output, daemon=True).start()
    try:
        # The launcher's own readiness, not the test's: it supervises only once it has seen the stack ready.
        wait_for_line("press Ctrl-C to stop", time.monotonic() + 300, "kbqa llm up never got ready")
        worker = psutil.Process(running_processes(settings)[-1])
        assert "llamacpp_worker" in " ".join(worker.cmdline())
        worker.suspend()
        deadline = time.monotonic() + 180
        wait_for_line("is alive but not serving", deadline, "the stuck worker was never noticed")
        _gone, alive = psutil.wait_procs([worker], timeout=60)  # the stopped worker is killed, not left behind
        assert not alive
        client = LLMClient(settings)
        while True:
            try:
                assert "Paris" in client.chat(EN_QUESTION).text
                break
            except (LLMUnavailable, LLMStreamError):
                assert time.monotonic() < deadline + 180, "the restarted worker never served"
                time.sleep(1)
        note = next(line for line in lines if "is alive but not serving" in line)
        assert "no answer to a status request" in note
        log = (settings.storage.logs_dir / f"fastchat-worker-{settings.fastchat.workers[0].port}.log").read_text()
        assert "is alive but not serving" in log
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                launcher.kill()
            stop_running(settings)
