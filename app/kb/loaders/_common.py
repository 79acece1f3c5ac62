"""Helpers shared by several loaders: short error reasons, the heading-path Section builder, OLE files."""

from __future__ import annotations

import zipfile
from pathlib import Path

from lxml import etree

from app.kb.documents import CorruptDocument, EncryptedDocument, Section

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
Kind = tuple[str, str]  # what is being read, in Chinese and in English: ("Word 文件", "the Word file")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def damaged_package(kind: Kind, extension: str, exc: BaseException) -> CorruptDocument:
    """The error for an Office package whose zip, XML or parts cannot be read: all mean a damaged file."""
    if isinstance(exc, zipfile.BadZipFile):
        reason = "it is not a valid zip package"
    elif isinstance(exc, etree.XMLSyntaxError):
        reason = f"broken XML: {_reason(exc)}"
    else:
        reason = f"{type(exc).__name__}: {_reason(exc)}"
    return CorruptDocument(
        f"{kind[0]}已损坏，或不是 {extension} 文件（{reason}）。 "
        f"({_sentence(kind[1])} is damaged or not a {extension} file ({reason}).)"
    )


class _SectionBuilder:
    """Collects text blocks under the current heading path and cuts a Section whenever a heading starts."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._sections: list[Section] = []

    def start_heading(self, level: int, title: str) -> None:
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, " ".join(title.split())))

    def reset_headings(self) -> None:
        self._flush()
        self._stack = []

    def add_text(self, text: str) -> None:
        if text.strip():
            self._blocks.append(text.strip("\n"))

    def add_ocr_text(self, text: str) -> None:
        """Text read from a picture: a Section of its own (flagged `ocr`) under the current heading."""
        self._flush()
        if text.strip():
            self._sections.append(Section(text=text.strip(), heading=self._heading(), ocr=True))

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        text = "\n\n".join(self._blocks).strip()
        if text:
            self._sections.append(Section(text=text, heading=self._heading()))
        self._blocks = []

    def _heading(self) -> str | None:
        return " > ".join(title for _, title in self._stack) or None


def reject_ole_file(path: Path, kind: Kind, old: str, new: str) -> None:
    """Office files saved with a password (.docx, .xlsx, .pptx) and the old binary formats (.doc, .xls, .ppt) are
    OLE2 containers, not zip packages: say which, instead of "not a zip file"."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head != OLE_MAGIC:
        return
    if "EncryptedPackage".encode("utf-16-le") in path.read_bytes():
        raise EncryptedDocument(
            f"{kind[0]}设有打开密码（已加密），请去掉密码后重新上传。 "
            f"({_sentence(kind[1])} is encrypted with a password; remove it and upload it again.)"
        )
    raise CorruptDocument(
        f"这是旧版二进制 {old} 文件，不是 {new}：请另存为 {new} 后再上传。 "
        f"(This is an old binary {old} file, not {new}; save it as {new} first.)"
    )
