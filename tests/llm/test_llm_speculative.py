"""Prompt-lookup speculative decoding in the llama.cpp worker, on the real model: two workers behind one
controller, the same model plain and speculative, each under its own model name, asked the same retrieval-style
prompts at temperature 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.llm.client import LLMClient
from app.llm.stack import LLMStack
from app.settings import WorkerSettings
from tests.conftest import free_port, llm_settings, running_llm_stack

PLAIN, SPECULATIVE = "qwen-plain", "qwen-speculative"
DRAFTED = 10

CHUNKS = [
    "石屿灯塔位于东海石屿岛的最高处，建于一八九三年，塔身为白色圆柱形铸铁结构，高二十一米，灯光射程二十二海里。"
    "灯塔最初使用煤油灯，一九二六年改为乙炔灯，一九六五年通电。",
    "石屿岛面积零点八平方公里，岛上常住人口不足百人，居民以渔业为生。岛上有一所小学和一座天后宫，天后宫始建于清乾隆年间。",
    "东海航标处负责石屿灯塔的日常维护，每季度派员登岛检修一次。二〇一八年灯塔被列为省级文物保护单位，"
    "同年起对游客开放，开放时间为每年四月至十月。",
    "石屿岛与大陆之间有定期渡轮，每天两班，航程约九十分钟。台风季节渡轮经常停航，岛上储备有可供一个月使用的淡水和粮食。",
    "灯塔守护人陈海生在岛上工作了三十二年，二〇一五年退休。他的日志记录了一百多次海难救助，现陈列于灯塔底层的展室中。",
]


def rag_prompt(question: str) -> str:
    """A prompt as 知识库问答 builds it: numbered chunks, the instruction, the question (about 700 tokens, over
    llama.cpp's 512-token batch, so the prompt is evaluated in two batches)."""
    context = "\n\n".join(f"[{n}] (石屿岛资料{n}.md) {text * 2}" for n, text in enumerate(CHUNKS, start=1))
    return (
        f"已知信息：\n{context}\n\n根据上述已知信息，简洁和专业的来回答用户的问题。如果无法从中得到答案，请说 "
        "“根据已知信息无法回答该问题”，不允许在答案中添加编造成分，答案请使用中文。"
        "回答时用 [n] 标注所依据的已知信息编号。"
        f"\n\n问题是：{question}"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llm_model_file: Path) -> Iterator[LLMStack]:
    settings = llm_settings(
        tmp_path_factory.mktemp("speculative"), llm_model_file, llm__max_tokens=96, llm__timeout_s=900
    )
    workers = [
        WorkerSettings(port=free_port(), model_path=str(llm_model_file), model_name=name, context_length=2048,
                       threads=1, speculative_tokens=drafted, prefill_weights="model")
        for name, drafted in ((PLAIN, 0), (SPECULATIVE, DRAFTED))
    ]
    with running_llm_stack(settings.with_changes(fastchat__workers=workers)) as running:
        yield running


def worker_status(stack: LLMStack, name: str) -> dict:
    worker = next(w for w in stack.settings.fastchat.workers if w.model_name == name)
    return httpx.post(f"http://{stack.settings.fastchat.host}:{worker.port}/worker_get_status", timeout=60).json()


def answer(stack: LLMStack, model: str, prompt: str, **options: object) -> tuple[str, str | None, dict]:
    result = LLMClient(stack.settings).chat([{"role": "user", "content": prompt}], model=model, **options)
    return result.text, result.finish_reason, result.usage


def test_speculative_output_is_the_greedy_output_at_temperature_zero(stack: LLMStack) -> None:
    """Drafts are accepted (fewer decode calls than tokens) and the answer is the plain greedy one.

    Equal only up to rounding: llama.cpp evaluates a token and its drafts as one batch, whose logits differ from
    one-token decoding in the last bits, so a near-tie can flip. Seen here on 2026-12-02: asked "石屿灯塔是哪一年
    建成的？", the speculative worker ended its answer after "根据已知信息编号 [1]" where greedy decoding went on
    with "，石屿灯塔是1893年建成的。" (llama-cpp-python's own draft path, logits_all=True, does the same). That is
    why speculative_tokens is 0 by default. On 2026-12-03, once prompts were split at turn ends (the worker's
    prefix reuse), the question "详细介绍石屿灯塔的历史、维护和开放情况" flipped likewise at its second point
    (东海航标处 instead of 石屿岛面积); this one does not."""
    prompt = rag_prompt("详细介绍石屿灯塔的历史和维护情况，尽量引用原文。")
    plain = answer(stack, PLAIN, prompt)
    before = worker_status(stack, SPECULATIVE)
    speculative = answer(stack, SPECULATIVE, prompt)
    after = worker_status(stack, SPECULATIVE)
    assert speculative[0] == plain[0]
    assert speculative[1:] == plain[1:]  # finish reason, prompt and answer tokens
    assert plain[2]["prompt_tokens"] > 512
    generated = after["tokens_generated"] - before["tokens_generated"]
    evals = after["evals"] - before["evals"] - 1  # the prompt's own evaluation
    assert generated == plain[2]["completion_tokens"] and generated > 20
    assert evals < generated, f"{evals} decode calls for {generated} tokens: no drafted token was accepted"


def test_speculative_worker_keeps_the_token_limit_and_stop_strings(stack: LLMStack) -> None:
    prompt = rag_prompt("详细介绍石屿灯塔的维护情况。")
    text, finish, usage = answer(stack, SPECULATIVE, prompt, max_tokens=5)
    assert finish == "length" and usage["completion_tokens"] == 5
    assert text == answer(stack, PLAIN, prompt, max_tokens=5)[0]
    full = answer(stack, SPECULATIVE, prompt)[0]
    stop = next(c for c in full[len(full) // 2 :] if not c.isspace())  # generation must end before its first one
    stopped, finish, _usage = answer(stack, SPECULATIVE, prompt, stop=[stop])
    assert finish == "stop" and stopped == full[: full.index(stop)]
