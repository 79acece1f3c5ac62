"""Plain-text loading and the encoding detection (BOM, UTF-8, then Chinese-first guessing) Markdown shares."""

from __future__ import annotations

import codecs
import unicodedata
from pathlib import Path

import charset_normalizer

from app.kb.documents import CorruptDocument, LoadedDocument, Section
from app.kb.loaders._limits import LoadLimits, check_text_chars, read_text_bytes


def _load_text(path: Path, limits: LoadLimits) -> LoadedDocument:
    what = ("文本文件", "the text file")
    text, encoding = _decode_bytes(read_text_bytes(path, limits, what))
    check_text_chars(len(text), limits, what)
    text = _normalize_newlines(text)
    if _control_ratio(text) > 0.05:
        raise CorruptDocument("The file does not look like text (it contains binary data).")
    return LoadedDocument(
        sections=[Section(text=text.strip())], pages=None, metadata={"file_type": "txt", "encoding": encoding}
    )


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _control_ratio(text: str) -> float:
    if not text:
        return 0.0
    control = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t\f\v")
    return control / len(text)


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_GB_FAMILY = frozenset({"gb18030", "gbk", "gb2312", "hz", "cp936", "euc_cn"})
_BIG5_FAMILY = frozenset({"big5", "big5hkscs", "cp950"})


def _decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode text, Chinese first: BOM, strict UTF-8, then charset-normalizer with GB18030/Big5 preferred.

    GBK and GB2312 are read as GB18030, their superset. Short Chinese texts are ambiguous to detectors (GBK
    bytes also decode as Korean cp949 or as Big5), so among the least chaotic candidates a Chinese encoding
    wins, and GB18030 vs Big5 is settled by which decoding yields more of that encoding's common characters.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _normalize_newlines(data.decode(encoding, errors="replace")).lstrip("\ufeff"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = _detect_encoding(data)
    return data.decode(encoding, errors="replace"), encoding


def _detect_encoding(data: bytes) -> str:
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return "gb18030" if _decodes(data, "gb18030") else "latin-1"
    least = min(match.chaos for match in matches)
    close = [match.encoding for match in matches if match.chaos <= least + 0.02]
    gb = any(name in _GB_FAMILY for name in close) and _decodes(data, "gb18030")
    big5 = any(name in _BIG5_FAMILY for name in close) and _decodes(data, "big5")
    if gb and big5:
        return "big5" if _common_share(data, "big5") > _common_share(data, "gb18030") else "gb18030"
    if gb:
        return "gb18030"
    if big5:
        return "big5"
    best = matches[0].encoding
    return "gb18030" if best in _GB_FAMILY else best


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _common_share(data: bytes, encoding: str) -> float:
    """Share of non-ASCII characters in the encoding's frequent-character zone (GB2312 level 1 / Big5 A440-C67E)."""
    chars = [ch for ch in data.decode(encoding) if ord(ch) > 127]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if _is_common(ch, encoding)) / len(chars)


def _is_common(ch: str, encoding: str) -> bool:
    try:
        if encoding == "big5":
            raw = ch.encode("big5")
            return len(raw) == 2 and 0xA4 <= raw[0] <= 0xC6
        raw = ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(raw) == 2 and 0xB0 <= raw[0] <= 0xD7
