"""The embedding model exported for another runtime into a staging folder beside it, from which the preparation
steps move only the files they keep (a half-done export never lands in the model's folder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def export_to_staging(target: Path, backend: str) -> tuple[SentenceTransformer, Path]:
    """The sentence-transformers folder `target` exported from its PyTorch weights for `backend` ("onnx",
    "openvino"), loaded, and saved into a fresh staging folder; the model and that folder."""
    from sentence_transformers import SentenceTransformer

    staging = target.parent / f".{target.name}.{backend}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model = SentenceTransformer(
        str(target), device="cpu", backend=backend, tokenizer_kwargs={"fix_mistral_regex": False}
    )
    model.save_pretrained(str(staging))
    return model, staging
