"""Static int8 quantization of the embedding model for OpenVINO, calibrated on text like the users' chunks.

Dynamic int8 (ONNX Runtime) measures each activation's range at run time, on every batch; static int8 measures
them once, here, on `calibration_texts.jsonl` (original Chinese and English paragraphs in the styles of the
documents people upload: policies, manuals, contracts, reports with numbers, flattened tables, FAQs), read the way
the product reads them ("passage: " + chunk, "query: " + a first sentence). On this project's CPUs that is
1.2-1.6x the dynamic int8 model's throughput, and closer to fp32 (scripts/bench_embedding.py).

The fp32 graph is exported from the PyTorch weights by optimum-intel (through sentence-transformers), which keeps
attention as one fused operation: the same model read from the ONNX export ran English chunks at 68 chunks/s
against 86. OpenVINO's and nncf's usage telemetry is cut off in app/__init__.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from app.modelprep.staging import export_to_staging
from app.settings import OPENVINO_INT8_FILE

log = logging.getLogger(__name__)

CALIBRATION_TEXTS = Path(__file__).with_name("calibration_texts.jsonl")
QUESTION_CHARS = 120
_FIRST_SENTENCE = re.compile(r".+?(?:[。！？!?]|\.(?=\s)|(?=\n)|$)", re.S)


def calibration_inputs(passage_prompt: str, query_prompt: str) -> Iterator[str]:
    """Every calibration paragraph as a passage, and its first sentence (or line) as a question."""
    for line in CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        yield passage_prompt + text
        first = _FIRST_SENTENCE.match(text)
        yield query_prompt + (first.group(0) if first else text)[:QUESTION_CHARS]


def export_openvino_int8(target: Path, passage_prompt: str, query_prompt: str) -> None:
    """Write `target / OPENVINO_INT8_FILE` (and its .bin) from the sentence-transformers folder `target`."""
    final = target / OPENVINO_INT8_FILE
    if final.exists():
        return
    import nncf
    import openvino

    fp32, staging = export_to_staging(target, "openvino")
    model = openvino.Core().read_model(str(staging / "openvino" / "openvino_model.xml"))
    names = [port.get_any_name() for port in model.inputs]

    def features(text: str) -> dict[str, object]:
        encoded = fp32.tokenizer([text], truncation=True, max_length=fp32.max_seq_length, return_tensors="np")
        return {name: encoded[name] for name in names}

    texts = list(calibration_inputs(passage_prompt, query_prompt))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(texts, features),
        model_type=nncf.ModelType.TRANSFORMER,  # keeps the attention's softmax and layer norms in float
        subset_size=len(texts),
    )
    openvino.save_model(quantized, str(staging / final.name))
    final.parent.mkdir(exist_ok=True)
    # The .xml names the model ready: the .bin it refers to goes first.
    shutil.move(staging / final.with_suffix(".bin").name, final.with_suffix(".bin"))
    shutil.move(staging / final.name, final)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("static int8 OpenVINO model written to %s (%d calibration inputs)", final, len(texts))
