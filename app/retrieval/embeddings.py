"""Sentence embeddings through sentence-transformers: OpenVINO or ONNX Runtime with int8 weights, or PyTorch.

Embedding is the slowest step of ingestion on a CPU, so passages are always encoded in batches, and the default
backend is OpenVINO with static int8 weights and activations calibrated at `kbqa models prepare`
(app/modelprep/openvino_int8.py): 1.64x (zh) and 1.24x (en) ONNX Runtime's dynamic int8 on the eval corpora, 4.3x and
3.5x fp32, with dense recall@5 0.953 / 0.940 against fp32's 0.950 / 0.940 (scripts/bench_embedding.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from app.settings import ONNX_INT8_FILE, OPENVINO_INT8_FILE

PROGRESS_STEP = 128
# transformers 4.57 warns about a "Mistral regex" for any large local tokenizer (transformers#44031); the
# warning does not apply to XLM-R's tokenizer, and asking for no fix silences it.
_TOKENIZER_KWARGS = {"fix_mistral_regex": False}


def _onnx_model_kwargs(threads: int, for_queries: bool) -> dict[str, object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    if for_queries:
        # ONNX Runtime's threads busy-wait after each run by default: good for batches of passages, but after a
        # single query they would burn the cores the LLM is about to evaluate its prompt on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return {"session_options": options}


def _openvino_model_kwargs(threads: int, for_queries: bool) -> dict[str, object]:
    """OpenVINO's worker threads are one pool per process, shared by every model and created with the niceness of
    the thread that first needs them (the services load every OpenVINO model from a lowered thread). A query is
    therefore run on one thread, the caller's own: it keeps the caller's priority, and a single short text gains
    nothing from more (7-8 ms either way on 2 cores)."""
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if for_queries or threads > 0:
        config["INFERENCE_NUM_THREADS"] = 1 if for_queries else threads
    return {"ov_config": config}


# backend setting -> (sentence-transformers backend, file `kbqa models prepare` writes, its model_kwargs)
_INT8_RUNTIMES = {
    "openvino-int8": ("openvino", OPENVINO_INT8_FILE, _openvino_model_kwargs),
    "onnx-int8": ("onnx", ONNX_INT8_FILE, _onnx_model_kwargs),
}


class Embedder:
    """Encodes queries and passages with the model's own prompts ("query: " / "passage: " for e5)."""

    def __init__(
        self,
        model: str,
        backend: str = "openvino-int8",
        batch_size: int = 16,
        threads: int = 0,
        query_prompt: str = "query: ",
        passage_prompt: str = "passage: ",
        for_queries: bool = False,
    ) -> None:
        """`for_queries`: tuned for single texts between other work (no idle busy-waiting, OpenVINO on the
        caller's thread) rather than for batches of passages."""
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        self.backend = backend
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.passage_prompt = passage_prompt
        if backend in _INT8_RUNTIMES:
            runtime, file_name, runtime_kwargs = _INT8_RUNTIMES[backend]
            if not (Path(model) / file_name).exists():
                raise FileNotFoundError(
                    f"{Path(model) / file_name} is missing: run `kbqa models prepare`, or set embedding.backend: torch"
                )
            self.model = SentenceTransformer(
                model,
                device="cpu",
                backend=runtime,
                model_kwargs={"file_name": file_name, **runtime_kwargs(threads, for_queries)},
                tokenizer_kwargs=_TOKENIZER_KWARGS,
            )
        else:
            if threads > 0:
                import torch

                torch.set_num_threads(threads)
            self.model = SentenceTransformer(model, device="cpu", tokenizer_kwargs=_TOKENIZER_KWARGS)
        self.dim = int(self.model.get_sentence_embedding_dimension() or 0)
        self._lock = threading.Lock()

    @staticmethod
    def shares_process_thread_pool(backend: str) -> bool:
        """Whether every model of `backend` runs on one pool of threads per process (OpenVINO's), created with the
        niceness of the thread that first needs it: a process lowers either all of them or none."""
        return backend == "openvino-int8"

    def encode_query(self, text: str) -> np.ndarray:
        return self._encode([text], self.query_prompt)[0]

    def encode_passages(
        self, texts: Sequence[str], on_progress: Callable[[np.ndarray], Collection[int] | None] | None = None
    ) -> np.ndarray:
        """Encode longest first in steps of `PROGRESS_STEP` texts, calling `on_progress(indices)` after each step
        with the indices just encoded. Ordering the whole input by length keeps padding low across steps.
        `on_progress` may return indices no longer wanted (a document deleted meanwhile): they are skipped, and
        their rows of the result are left undefined."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pending = np.argsort([-len(t) for t in texts], kind="stable")
        skipped = np.zeros(len(texts), dtype=bool)
        step = max(PROGRESS_STEP, self.batch_size)
        while len(pending):
            indices, pending = pending[:step], pending[step:]
            out[indices] = self._encode([texts[i] for i in indices], self.passage_prompt)
            dropped = on_progress(indices) if on_progress else None
            if dropped:
                skipped[list(dropped)] = True
                pending = pending[~skipped[pending]]
        return out

    def encode_texts(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        """Normalised vectors of `texts`, each read with `prompt` before it, in one locked pass of batches."""
        return self._encode(texts, prompt)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads of `texts` with the query prompt (special tokens included, window-capped)."""
        limit = self.model.max_seq_length
        encoded = self.model.tokenizer([self.query_prompt + t for t in texts], truncation=True, max_length=limit)
        return sum(len(ids) for ids in encoded["input_ids"])

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                prompt=prompt,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
