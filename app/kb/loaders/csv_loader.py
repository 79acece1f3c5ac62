"""CSV and TSV loading: encoding detected, delimiter sniffed, each row a "header: value" record as in Excel."""

from __future__ import annotations

import csv
import io
import unicodedata
from pathlib import Path

from app.kb.documents import CorruptDocument, LoadedDocument
from app.kb.loaders._common import OLE_MAGIC, _reason
from app.kb.loaders._limits import LoadLimits, check_text_chars, read_text_bytes
from app.kb.loaders._table import CellBudget, Grid, table_sections
from app.kb.loaders.text_loader import _decode_bytes, _detect_encoding, _normalize_newlines

_KIND = ("CSV 文件", "the CSV file")
_SNIFF_CHARS = 64 * 1024
_BINARY_SHARE = 0.05  # control characters and undecodable bytes past this share of the text: not a text file
_MAGIC = (
    (b"PK\x03\x04", "zip 压缩包（如 .xlsx、.docx）", "a zip package (such as .xlsx or .docx)"),
    (OLE_MAGIC, "旧版 Office 文件（如 .xls）", "an old Office file (such as .xls)"),
    (b"%PDF", "PDF 文件", "a PDF file"),
)


def _load_csv(path: Path, limits: LoadLimits) -> LoadedDocument:
    return _load_delimited(path, limits, None)


def _load_tsv(path: Path, limits: LoadLimits) -> LoadedDocument:
    return _load_delimited(path, limits, "\t")


def _load_delimited(path: Path, limits: LoadLimits, delimiter: str | None) -> LoadedDocument:
    """Rows as records (see `table_sections`); the delimiter is sniffed from the first 64 KB unless given.

    Stray NUL bytes (left by some exporters) are dropped and counted in the metadata (`nul_bytes`); a file that is
    mostly control characters or undecodable bytes is refused as binary.
    """
    data = read_text_bytes(path, limits, _KIND)
    _refuse_binary_magic(data)
    text, encoding = _decode_mixed(data)
    check_text_chars(len(text), limits, _KIND)
    if _binary_share(text) > _BINARY_SHARE:
        raise CorruptDocument(
            "文件内容不是文本（含大量二进制数据），不能作为 CSV 读取。 "
            "(The file is not text: it holds binary data, so it cannot be read as CSV.)"
        )
    nuls = text.count("\x00")
    text = _normalize_newlines(text.replace("\x00", ""))
    delimiter = delimiter or _sniff_delimiter(text[:_SNIFF_CHARS])
    grid = _read_rows(text, delimiter, CellBudget(limits, _KIND))
    metadata = {"encoding": encoding, "delimiter": "\\t" if delimiter == "\t" else delimiter}
    if nuls:
        metadata["nul_bytes"] = str(nuls)
    return LoadedDocument(sections=table_sections(grid, None, None), pages=None, metadata=metadata)


def _refuse_binary_magic(data: bytes) -> None:
    for magic, zh, en in _MAGIC:
        if data.startswith(magic):
            raise CorruptDocument(
                f"这不是 CSV 文件，而是{zh}：请用它本来的扩展名上传。 "
                f"(This is not a CSV file but {en}; upload it with its real extension.)"
            )


def _decode_mixed(data: bytes) -> tuple[str, str]:
    """Decode as text files are (BOM, UTF-8, then Chinese-first detection), except that a file whose lines are
    partly UTF-8 and partly in a legacy encoding (two exports appended to one another) is decoded line by line, so
    neither part turns to mojibake."""
    text, encoding = _decode_bytes(data)
    if encoding.startswith("utf"):
        return text, encoding
    lines = data.split(b"\n")
    utf8 = [_utf8(line) for line in lines]
    if not any(decoded is not None and not decoded.isascii() for decoded in utf8):
        return text, encoding
    legacy = _detect_encoding(b"\n".join(line for line, decoded in zip(lines, utf8, strict=True) if decoded is None))
    parts = [
        decoded if decoded is not None else line.decode(legacy, errors="replace")
        for line, decoded in zip(lines, utf8, strict=True)
    ]
    return "\n".join(parts), f"utf-8+{legacy}"


def _utf8(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _binary_share(text: str) -> float:
    if not text:
        return 0.0
    bad = sum(1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f\v"))
    return bad / len(text)


def _sniff_delimiter(sample: str) -> str:
    """csv.Sniffer's choice among comma, tab, semicolon and bar; a comma when it cannot tell (one column)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _read_rows(text: str, delimiter: str, budget: CellBudget) -> Grid:
    grid: Grid = {}
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for number, row in enumerate(reader, start=1):
            values = {column: value for column, value in enumerate(row, start=1) if value.strip()}
            if values:
                budget.spend(len(values))
                grid[number] = values
    except csv.Error as exc:
        raise CorruptDocument(
            f"CSV 文件第 {reader.line_num} 行无法解析（{_reason(exc)}）。 "
            f"(Line {reader.line_num} of the CSV file cannot be parsed ({_reason(exc)}).)"
        ) from exc
    return grid
