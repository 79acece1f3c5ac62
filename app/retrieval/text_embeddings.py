"""Embeddings for any client: the product's own embedding model, as OpenAI's `/v1/embeddings` serves it.

A client such as LangChain's `OpenAIEmbeddings` embeds both its documents and its queries through this one call,
so every text gets the model's query prompt ("query: " for e5, which its authors advise for symmetric tasks).
Texts longer than the model's window (512 tokens for e5) are truncated by the model, as sentence-transformers
does everywhere; the usage counts the tokens the model actually read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import InvalidInput, ModelNotFound
from app.retrieval.embeddings import Embedder
from app.settings import Settings

MAX_INPUTS = 2048  # OpenAI's own limit per request
MAX_INPUT_CHARS = 100_000  # per text: bounds what one request can make the tokenizer allocate


@dataclass
class Embeddings:
    vectors: np.ndarray
    tokens: int


class EmbeddingService:
    def __init__(self, settings: Settings, embedder: Callable[[], Embedder]) -> None:
        self.settings = settings
        self.embedder = embedder

    @property
    def model_id(self) -> str:
        return Path(self.settings.resolved_embedding_model).name

    def embed(self, model: str, texts: list[str]) -> Embeddings:
        if model != self.model_id:
            raise ModelNotFound(f"unknown embedding model {model!r}: this server embeds with {self.model_id!r}")
        if not texts:
            raise InvalidInput("input must not be empty")
        if len(texts) > MAX_INPUTS:
            raise InvalidInput(f"input holds {len(texts)} texts; at most {MAX_INPUTS} per request")
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"input[{index}] is empty")
            if len(text) > MAX_INPUT_CHARS:
                raise InvalidInput(f"input[{index}] has {len(text)} characters; at most {MAX_INPUT_CHARS}")
        embedder = self.embedder()
        return Embeddings(embedder.encode_texts(texts, embedder.query_prompt), embedder.count_tokens(texts))
