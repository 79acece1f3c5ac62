"""A FastChat model worker for GGUF models over llama-cpp-python.

FastChat's own model_worker cannot load GGUF and decodes a 1.5B model at ~2.6 tokens/s on fp32 weights here;
llama.cpp does 25-30. This worker speaks FastChat's worker protocol through `BaseModelWorker` and the routes
of `fastchat.serve.base_model_worker` (register, heartbeats, `/worker_generate_stream` with NUL-separated JSON
carrying the cumulative text, `/worker_generate`, `/count_token`, `/model_details`,
`/worker_get_conv_template`), so the stock controller and openai_api_server serve it like any other worker.

The routes are this module's own (`create_app`), not `base_model_worker.app`: the stock routes take a semaphore
and release it only when the call returns normally, so one call that raised (its `/worker_get_embeddings` on a
worker without embeddings) or a stream whose client left early locked the worker for good while its heartbeat
still said it was alive. Here nothing is held across a call: the queue length the controller balances on is a
count kept in `try/finally`, and an unsupported call answers its error at once.

Generation runs in a thread, one request at a time per model (llama.cpp contexts are not thread-safe), and
stops within one token when the client goes away. `tokens_generated` in the status lets a supervisor tell a busy
worker from a stuck one (see `app.llm.stack.LLMStack.probe_workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastchat.constants import ErrorCode
from fastchat.serve.base_model_worker import BaseModelWorker
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

from app.modelprep.llama_cpu import has_amx, llama_loading

_DONE = object()


class _Llama(llama_cpp.Llama):
    """`llama_cpp.Llama` that evaluates a prompt turn by turn and keeps the turns a new prompt shares with the last.

    Reuse without changing answers: llama.cpp's logits depend on how a prompt is split into batches (by up to 0.5
    here), and greedy decoding flips on near-ties, so llama-cpp-python's own prefix reuse (which evaluates whatever
    follows the shared tokens as one batch) answered the same RAG prompt differently the second time. Here every
    prompt is split at the same places whether it is evaluated whole or resumed: after each end-of-turn token
    (`<|im_end|>`), and every n_batch tokens from the start of a turn. A new prompt resumes at the last such turn end
    it shares with the last prompt, so the kept cache holds exactly what evaluating it whole would compute; the
    system message and, in a conversation, every earlier turn are evaluated once.

    With a draft model (speculative decoding), llama-cpp-python 0.3.36 wants the logits of every position of every
    batch and copies them into `scores`, which holds n_batch rows unless `logits_all=True` allocates n_ctx x 152k
    floats (2.5 GB): a prompt over n_batch tokens then fails, and computing and copying the logits of every prompt
    token slows the first token. The sampler reads logits inside llama.cpp by batch index, so `scores` is not
    needed: only the short batches that verify drafted tokens get logits at every position.

    With a prefill model (a bf16 copy of the same GGUF), a prompt but its last token is read in that model's own
    context, split as above, and its cache is copied into this context, which reads the last token and decodes: on
    a CPU that multiplies bf16 in hardware, bf16 weights read prompts faster and the quantized ones decode faster.
    On a CPU with AMX, the GGUF itself is the prefill model when no copy is given (see `__init__`).
    The prefill context keeps the last prompt but its last token, so a new prompt resumes there the same way.
    """

    def __init__(self, *args: Any, verify_batch: int = 0, prefill_model_path: str = "", **kwargs: Any) -> None:
        # On a CPU with AMX, llama.cpp's AMX buffers crash on batches but decode single tokens ~1.13x as fast: this
        # context keeps them where it never reads a batch (a prefill context reads the prompts, the GGUF itself if
        # no copy was given, and no drafts are verified here).
        single_tokens = kwargs.get("draft_model") is None and (bool(prefill_model_path) or has_amx())
        if single_tokens and not prefill_model_path:
            prefill_model_path = kwargs.get("model_path", "")
        with llama_loading(extra_buffers=single_tokens):
            super().__init__(*args, **kwargs)
        self.verify_batch = verify_batch  # a sampled token and its drafts: at most this many tokens
        self.evals = 0  # llama.cpp decode calls: one per token without drafts, fewer when drafts are accepted
        self.prompt_tokens_reused = 0
        self._evaluated_prompt: list[int] = []  # the tokens whose evaluation the kept cache holds
        self._prompt_pending = False  # the next eval() reads the rest of a prompt
        self.prefill: llama_cpp.Llama | None = None
        if prefill_model_path:
            options = {k: v for k, v in kwargs.items() if k not in ("model_path", "draft_model")}
            with llama_loading():
                self.prefill = llama_cpp.Llama(model_path=prefill_model_path, **options)
        self._state = ctypes.create_string_buffer(0)

    def eval(self, tokens: Sequence[int]) -> None:
        self.evals += 1
        if self._prompt_pending:
            self._prompt_pending = False
            if self.prefill is not None and len(tokens) > 1:
                self._prefill_with_copy(tokens[:-1])
                tokens = tokens[-1:]
        every_position = self.draft_model is not None and len(tokens) <= self.verify_batch
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        for batch in [tokens] if every_position else self._turn_batches(tokens):
            self._batch.set_batch(batch=batch, n_past=self.n_tokens, logits_all=every_position)
            self._ctx.decode(self._batch)
            self.input_ids[self.n_tokens : self.n_tokens + len(batch)] = batch
            self.n_tokens += len(batch)
        self._requires_eval = False

    def _prefill_with_copy(self, tokens: Sequence[int]) -> None:
        """Read `tokens` after the kept cache in the prefill context, then copy its cache into this context."""
        assert self.prefill is not None
        context, batch = self.prefill._ctx, self.prefill._batch
        context.kv_cache_seq_rm(-1, self.n_tokens, -1)
        n_past = self.n_tokens
        for part in self._turn_batches(tokens):
            batch.set_batch(batch=part, n_past=n_past, logits_all=False)
            context.decode(batch)
            n_past += len(part)
        size = llama_cpp.llama_state_seq_get_size(context.ctx, 0)
        if len(self._state) < size:
            self._state = ctypes.create_string_buffer(size)
        state = ctypes.cast(self._state, ctypes.POINTER(ctypes.c_uint8))
        written = llama_cpp.llama_state_seq_get_data(context.ctx, state, size, 0)
        if llama_cpp.llama_state_seq_set_data(self._ctx.ctx, state, written, 0) != written:
            raise RuntimeError("the prefill model's cache does not fit this model's context (not the same model?)")
        self.input_ids[self.n_tokens : n_past] = tokens
        self.n_tokens = n_past

    def _turn_batches(self, tokens: Sequence[int]) -> Iterator[Sequence[int]]:
        start = 0
        for end, token in enumerate(tokens, start=1):
            if end - start == self.n_batch or self._ends_turn(token):
                yield tokens[start:end]
                start = end
        if start < len(tokens):
            yield tokens[start:]

    def _ends_turn(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    def resume(self, prompt: list[int]) -> list[int]:
        """Keep the cache up to the last turn end `prompt` shares with the last evaluated prompt; what is left of
        `prompt` to evaluate. Call `evaluated(prompt)` once that has been evaluated."""
        shared = 0
        for old, new in zip(self._evaluated_prompt, prompt[:-1], strict=False):  # at least one token left
            if old != new:
                break
            shared += 1
        keep = max((end for end in range(1, shared + 1) if self._ends_turn(prompt[end - 1])), default=0)
        self._evaluated_prompt = []  # until this prompt's evaluation completes
        self.n_tokens = keep
        self._ctx.kv_cache_seq_rm(-1, keep, -1)
        self._requires_eval = True
        self._prompt_pending = True
        self.prompt_tokens_reused += keep
        return prompt[keep:]

    def evaluated(self, prompt: list[int]) -> None:
        self._evaluated_prompt = prompt[:-1] if self.prefill is not None else prompt


@dataclass
class GenerationParams:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    stop: list[str]
    stop_token_ids: set[int]
    echo: bool

    @classmethod
    def from_request(cls, params: dict[str, Any]) -> GenerationParams:
        stop = params.get("stop") or []
        return cls(
            prompt=params["prompt"],
            max_new_tokens=int(params.get("max_new_tokens") or 256),
            temperature=float(params.get("temperature", 0.7)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=int(params.get("top_k", -1)),
            presence_penalty=float(params.get("presence_penalty", 0.0)),
            frequency_penalty=float(params.get("frequency_penalty", 0.0)),
            stop=[stop] if isinstance(stop, str) else [s for s in stop if s],
            stop_token_ids=set(params.get("stop_token_ids") or []),
            echo=bool(params.get("echo", False)),
        )


class LlamaCppWorker(BaseModelWorker):
    def __init__(
        self,
        *,
        controller_addr: str,
        worker_addr: str,
        model_path: str,
        model_names: list[str],
        conv_template: str | None,
        context_length: int,
        threads: int,
        concurrency: int,
        speculative_tokens: int = 0,
        prefill_model_path: str = "",
    ) -> None:
        super().__init__(
            controller_addr,
            worker_addr,
            uuid.uuid4().hex[:8],
            model_path,
            model_names,
            concurrency,
            conv_template=conv_template or None,
        )
        # Prompt-lookup decoding drafts the next tokens by finding the last two tokens earlier in the prompt or
        # answer (answers from retrieved text repeat it) and verifies them in one batch: at temperature 0 the
        # output is the greedy one, only sooner when drafts are accepted.
        draft = LlamaPromptLookupDecoding(num_pred_tokens=speculative_tokens) if speculative_tokens else None
        self.llm = _Llama(
            model_path=model_path,
            draft_model=draft,
            verify_batch=speculative_tokens + 1,
            n_ctx=context_length,
            # llama-cpp-python's own default is half the cores, which decodes ~30% slower here.
            n_threads=threads or os.cpu_count(),
            n_threads_batch=threads or os.cpu_count(),
            n_batch=512,
            prefill_model_path=prefill_model_path,
            verbose=False,
        )
        self.context_len = self.llm.n_ctx()
        self._model_lock = threading.Lock()
        self.in_flight = 0  # admitted calls not yet finished: the queue length the controller balances on
        self.tokens_generated = 0

    def get_queue_length(self) -> int:
        return self.in_flight

    def _is_end_of_generation(self, token: int, stop_token_ids: set[int]) -> bool:
        return token in stop_token_ids or bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_token(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"count": len(self.tokenize(params["prompt"])), "error_code": 0}

    def get_status(self) -> dict[str, Any]:
        return {
            **super().get_status(),
            "call_ct": self.call_ct,
            "tokens_generated": self.tokens_generated,
            "evals": self.llm.evals,
            "prompt_tokens_reused": self.llm.prompt_tokens_reused,
            "prefill_model": self.llm.prefill.model_path if self.llm.prefill is not None else "",
        }

    def get_embeddings(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "text": f"{self.model_names[0]} serves chat and completions only: the llama.cpp worker computes no "
            "embeddings (the kbqa API's /v1/embeddings serves its embedding model)",
            "error_code": ErrorCode.PARAM_OUT_OF_RANGE,
        }

    def generate(self, params: GenerationParams, cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        """Yield FastChat's worker outputs: cumulative text, usage and, on the last one, finish_reason."""
        prompt_ids = self.tokenize(params.prompt)
        room = self.context_len - len(prompt_ids)
        if room <= 0:
            yield {
                "text": f"This model's maximum context length is {self.context_len} tokens. However, your "
                f"messages resulted in {len(prompt_ids)} tokens. Please reduce the length of the messages.",
                "error_code": ErrorCode.CONTEXT_OVERFLOW,
            }
            return
        max_new = min(params.max_new_tokens, room)
        prefix = params.prompt if params.echo else ""
        output_ids: list[int] = []
        output_bytes = b""  # a piece may end inside a UTF-8 character, so the bytes are decoded as a whole
        finish_reason = "length"
        text = ""
        with self._model_lock:
            tokens = self.llm.generate(
                self.llm.resume(prompt_ids),
                reset=False,
                top_k=params.top_k if params.top_k > 0 else 0,
                top_p=params.top_p,
                min_p=0.0,
                temp=params.temperature,
                repeat_penalty=1.0,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
            )
            try:
                for token in tokens:
                    if not output_ids:
                        self.llm.evaluated(prompt_ids)  # the first token comes once the whole prompt is in
                    if cancelled.is_set():
                        finish_reason = "cancelled"
                        break
                    if self._is_end_of_generation(token, params.stop_token_ids):
                        finish_reason = "stop"
                        break
                    output_ids.append(token)
                    self.tokens_generated += 1
                    output_bytes += self.llm.detokenize([token])  # detokenizing them all each time is O(n²)
                    text = output_bytes.decode("utf-8", errors="ignore")
                    cut = _stop_position(text, params.stop)
                    if cut is not None:
                        text = text[:cut]
                        finish_reason = "stop"
                        break
                    if len(output_ids) >= max_new:
                        break
                    visible = text[: len(text) - _held_back(text, params.stop)]
                    yield self._output(prefix + visible, len(prompt_ids), len(output_ids), None)
            finally:
                tokens.close()
        self.call_ct += 1
        yield self._output(prefix + text, len(prompt_ids), len(output_ids), finish_reason)

    @staticmethod
    def _output(text: str, prompt_tokens: int, completion_tokens: int, finish_reason: str | None) -> dict[str, Any]:
        return {
            "text": text,
            "error_code": 0,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "finish_reason": finish_reason,
        }

    async def generate_stream_gate(self, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """Stream from a thread; when the client disconnects, the cancelled await stops generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for output in self._safe_generate(params, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, output)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        self.in_flight += 1
        try:
            loop.run_in_executor(None, produce)
            while (output := await queue.get()) is not _DONE:
                yield json.dumps(output).encode() + b"\0"
        finally:
            cancelled.set()  # the thread finishes its current token, then frees the model
            self.in_flight -= 1

    async def generate_gate(self, params: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        try:
            outputs = self._safe_generate(params, threading.Event())
            return await asyncio.to_thread(lambda: deque(outputs, maxlen=1)[0])  # each output holds all the text
        finally:
            self.in_flight -= 1

    def _safe_generate(self, params: dict[str, Any], cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        try:
            yield from self.generate(GenerationParams.from_request(params), cancelled)
        except (KeyError, TypeError, ValueError) as exc:
            yield {"text": f"bad generation request: {exc}", "error_code": ErrorCode.PARAM_OUT_OF_RANGE}
        except Exception as exc:  # a worker must answer, not drop the stream
            yield {"text": f"generation failed: {type(exc).__name__}: {exc}", "error_code": ErrorCode.INTERNAL_ERROR}


def _stop_position(text: str, stops: list[str]) -> int | None:
    positions = [pos for stop in stops if (pos := text.find(stop)) >= 0]
    return min(positions) if positions else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could be the start of a stop string, so they are not streamed yet."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def create_app(worker: LlamaCppWorker) -> FastAPI:
    """FastChat's worker routes over `worker`; none of them holds anything once it has answered."""
    app = FastAPI(title="kbqa llama.cpp worker")

    async def params_of(request: Request) -> dict[str, Any]:
        params = await request.json()
        if not isinstance(params, dict):
            raise ValueError("the request body must be a JSON object")
        return params

    @app.exception_handler(ValueError)
    async def _bad_request(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"text": f"bad request: {exc}", "error_code": ErrorCode.VALIDATION_TYPE_ERROR}, 400)

    @app.post("/worker_generate_stream")
    async def generate_stream(request: Request) -> StreamingResponse:
        return StreamingResponse(worker.generate_stream_gate(await params_of(request)))

    @app.post("/worker_generate")
    async def generate(request: Request) -> JSONResponse:
        return JSONResponse(await worker.generate_gate(await params_of(request)))

    @app.post("/worker_get_embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        return JSONResponse(worker.get_embeddings(await params_of(request)))

    @app.post("/worker_get_status")
    async def status() -> dict[str, Any]:
        return worker.get_status()

    @app.post("/count_token")
    async def count_token(request: Request) -> dict[str, Any]:
        return worker.count_token(await params_of(request))

    @app.post("/worker_get_conv_template")
    async def conv_template() -> dict[str, Any]:
        return worker.get_conv_template()

    @app.post("/model_details")
    async def model_details() -> dict[str, Any]:
        return {"context_length": worker.context_len}

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FastChat model worker for GGUF models (llama-cpp-python)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=20002)
    parser.add_argument("--worker-address", default="")
    parser.add_argument("--controller-address", default="http://127.0.0.1:20001")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-names", type=lambda s: s.split(","), default=None)
    parser.add_argument("--conv-template", default="")
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--limit-worker-concurrency", type=int, default=1)
    parser.add_argument("--speculative-tokens", type=int, default=0, help="prompt-lookup drafts per step; 0: off")
    parser.add_argument("--prefill-model-path", default="", help="a bf16 copy of the model that reads prompts")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    worker = LlamaCppWorker(
        controller_addr=args.controller_address,
        worker_addr=args.worker_address or f"http://{args.host}:{args.port}",
        model_path=args.model_path,
        model_names=args.model_names,
        conv_template=args.conv_template,
        context_length=args.context_length,
        threads=args.threads,
        concurrency=args.limit_worker_concurrency,
        speculative_tokens=args.speculative_tokens,
        prefill_model_path=args.prefill_model_path,
    )
    worker.init_heart_beat()
    uvicorn.run(create_app(worker), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
