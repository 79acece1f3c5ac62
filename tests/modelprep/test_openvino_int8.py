"""The default embedding runtime: OpenVINO with static int8, calibrated at `kbqa models prepare`.

Its vectors are checked against the fp32 model's (PyTorch), texts unlike the calibration
paragraphs included, and retrieval with it must rank as fp32 does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.modelprep.openvino_int8 import CALIBRATION_TEXTS, QUESTION_CHARS, calibration_inputs, export_openvino_int8
from app.modelprep.prepare import prepare_embedding_model
from app.retrieval.embeddings import Embedder
from app.settings import OPENVINO_INT8_FILE

# Measured on 384 zh and 384 en eval chunks (2026-12-03): min 0.9986 / 0.9978, mean 0.9991 / 0.9989 against fp32;
# ONNX Runtime's dynamic int8 reaches min 0.989 / 0.990 on the same chunks.
MIN_COSINE = 0.99

TEXTS = [
    "如何重置路由器的管理员密码？",
    "第三条 乙方应于每月五日前支付上月服务费人民币12,800元（含税），逾期按日万分之五计收违约金。",
    "2025年第三季度营业收入同比增长17.4%，毛利率为32.1%，经营活动现金流净额为4.6亿元。",
    "型号 | 功率 | 价格\nKX-200 | 200W | 1999元\nKX-350 | 350W | 2899元",
    "How do I reset the administrator password of the router?",
    "Take one tablet twice daily with food; do not exceed 4 tablets in 24 hours.",
    "在 Python 3.11 中使用 numpy（向量化）计算，速度提升约 10 倍！",
    "Ἐν ἀρχῇ ἦν ὁ λόγος — текст на русском 😀 ★★★ ((( ))) 0x7fff",
]
PAIRS = [
    ("员工一年有几天带薪年假？", "公司规定：员工每年享有十天带薪年假，需提前一周申请，未休完的可顺延至次年三月。"),
    ("路由器管理员密码忘了怎么办？", "按住路由器背面的 RESET 键十秒，设备恢复出厂设置后，管理员密码变回 admin。"),
    ("When is the quarterly report due?", "The quarterly report is due on the second Friday after quarter end."),
    ("What is the maximum daily dose?", "Adults: one tablet twice daily with food; never more than 4 in 24 hours."),
]


@pytest.fixture(scope="module")
def int8(embedding_model_dir: Path) -> Embedder:
    return Embedder(str(embedding_model_dir), backend="openvino-int8")


@pytest.fixture(scope="module")
def fp32(embedding_model_dir: Path) -> Embedder:
    return Embedder(str(embedding_model_dir), backend="torch")


def test_calibration_reads_every_paragraph_as_a_passage_and_its_first_sentence_as_a_question() -> None:
    rows = [json.loads(line) for line in CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines()]
    assert {row["lang"] for row in rows} == {"zh", "en"}
    inputs = list(calibration_inputs("passage: ", "query: "))
    assert len(inputs) == 2 * len(rows)
    passages, questions = inputs[0::2], inputs[1::2]
    assert [p.removeprefix("passage: ") for p in passages] == [row["text"] for row in rows]
    assert all(q.startswith("query: ") for q in questions)
    for row, question in zip(rows, questions, strict=True):
        sentence = question.removeprefix("query: ")
        assert row["text"].startswith(sentence) and 0 < len(sentence) <= min(QUESTION_CHARS, len(row["text"]) - 1)


def test_int8_vectors_agree_with_fp32(int8: Embedder, fp32: Embedder) -> None:
    for prompt in (int8.query_prompt, int8.passage_prompt):
        cosines = np.sum(int8.encode_texts(TEXTS, prompt) * fp32.encode_texts(TEXTS, prompt), axis=1)
        assert cosines.min() >= MIN_COSINE, cosines


def test_int8_ranks_passages_as_fp32_does(int8: Embedder, fp32: Embedder) -> None:
    passages = [passage for _, passage in PAIRS]
    for model in (int8, fp32):
        scores = np.stack([model.encode_query(q) for q, _ in PAIRS]) @ model.encode_passages(passages).T
        assert list(scores.argmax(axis=1)) == list(range(len(PAIRS)))


def test_prepare_again_keeps_the_int8_model(embedding_model_dir: Path) -> None:
    model = embedding_model_dir / OPENVINO_INT8_FILE
    stamps = (model.stat().st_mtime_ns, model.with_suffix(".bin").stat().st_mtime_ns)
    prepare_embedding_model(embedding_model_dir)
    export_openvino_int8(embedding_model_dir, "passage: ", "query: ")
    assert (model.stat().st_mtime_ns, model.with_suffix(".bin").stat().st_mtime_ns) == stamps
    assert not list(embedding_model_dir.parent.glob(f".{embedding_model_dir.name}.*-staging"))


def test_openvino_sends_and_writes_nothing_outside_the_data_folder(embedding_model_dir: Path, tmp_path: Path) -> None:
    """OpenVINO and nncf send usage events and keep a client id under ~/intel unless their telemetry is cut off."""
    script = (
        "import app, openvino, nncf\n"
        "from openvino.tools import ovc\n"
        "from nncf.telemetry import wrapper\n"
        "from app.retrieval.embeddings import Embedder\n"
        f"Embedder({str(embedding_model_dir)!r}).encode_query('测试')\n"
        "print(type(ovc.telemetry).__module__, isinstance(wrapper.telemetry, wrapper.NNCFTelemetry))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]
    assert list(tmp_path.iterdir()) == []
