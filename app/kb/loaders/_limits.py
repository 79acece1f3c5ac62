"""Bounds on what reading one document may inflate or allocate.

A hostile or careless file (a zip bomb, a PDF of a million pages, hundreds of megabytes of text, an HTML page of
millions of tags) is refused with a `DocumentTooLarge` that names the limit and the setting behind it,
before the memory is spent. The limits are `settings.limits`; how pictures are read is `settings.ocr`.
"""

from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

from app.kb.documents import CorruptDocument, DocumentLoadError, DocumentTooLarge
from app.kb.loaders._common import Kind, _reason
from app.settings import LimitsSettings, OcrSettings, Settings, setting_ref

MB = 1024 * 1024
BYTES_PER_CHAR_MAX = 4  # UTF-8, UTF-16/32 and GB18030 never use more than 4 bytes for a character
# Members smaller than this are not held to the compression ratio: a little blank XML compresses past 100:1.
_RATIO_GRACE_BYTES = MB
# A central-directory entry is 46 bytes plus its name and extras: well under 1 KiB in any real package.
_DIRECTORY_ENTRY_BYTES = 1024


@dataclass(frozen=True)
class LoadLimits:
    """The limits for one document (named as in `settings.limits`), and how pictures in it are read (OCR: `ocr` is
    `settings.ocr.enabled`, `ocr_<name>` is `settings.ocr.<name>`)."""

    max_text_chars: int
    max_html_elements: int
    max_pdf_pages: int
    max_zip_members: int
    max_zip_member_mb: float
    max_zip_total_mb: float
    max_zip_ratio: float
    max_xml_mb: float
    max_sheet_cells: int
    ocr: bool
    ocr_languages: str
    ocr_dpi: int
    ocr_page_timeout_s: float
    ocr_workers: int
    ocr_max_image_pixels: int
    ocr_max_pictures: int

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LoadLimits:
        """The limits `settings` set; without settings, the defaults."""
        limits, ocr = (settings.limits, settings.ocr) if settings else (LimitsSettings(), OcrSettings())
        values = {f.name: getattr(limits, f.name) for f in fields(cls) if f.name.startswith("max_")}
        values |= {f.name: getattr(ocr, f.name.removeprefix("ocr_")) for f in fields(cls) if f.name.startswith("ocr_")}
        return cls(ocr=ocr.enabled, **values)


def setting_path(field: str) -> str:
    """The setting behind a LoadLimits field: max_xml_mb -> limits.max_xml_mb, ocr_dpi -> ocr.dpi."""
    return f"ocr.{field.removeprefix('ocr_')}" if field.startswith("ocr_") else f"limits.{field}"


def too_large(zh: str, en: str, setting: str, limit: str) -> DocumentTooLarge:
    """A refusal that names the limit and its setting (a LoadLimits field) with its environment variable, Chinese
    first."""
    ref = setting_ref(setting_path(setting))
    return DocumentTooLarge(f"{zh}，超过上限 {limit}（设置 {ref}）。 ({en}, over the limit of {limit}; setting {ref}.)")


def megabytes(size: float) -> str:
    return f"{size / MB:,.1f} MB" if size >= MB else f"{size / 1024:,.1f} KB"


def read_text_bytes(path: Path, limits: LoadLimits, kind: Kind) -> bytes:
    """The bytes of a text-like file, unless they cannot decode to max_text_chars characters or fewer."""
    size = path.stat().st_size
    if size > BYTES_PER_CHAR_MAX * limits.max_text_chars:
        least = size // BYTES_PER_CHAR_MAX
        raise too_large(
            f"{kind[0]}有 {megabytes(size)}，解码后至少 {least:,} 个字符",
            f"{kind[1]} holds {megabytes(size)}, at least {least:,} characters once decoded",
            "max_text_chars",
            f"{limits.max_text_chars:,}",
        )
    return path.read_bytes()


def check_text_chars(count: int, limits: LoadLimits, kind: Kind) -> None:
    if count > limits.max_text_chars:
        raise too_large(
            f"{kind[0]}的文字有 {count:,} 个字符",
            f"{kind[1]} holds {count:,} characters of text",
            "max_text_chars",
            f"{limits.max_text_chars:,}",
        )


def check_zip(path: Path, limits: LoadLimits, kind: Kind) -> None:
    """Refuse a zip package (.docx, .xlsx, .pptx) whose members would inflate past the limits: first by the sizes
    its directory declares, then by inflating each member piece by piece, since declared sizes can lie.

    Reading a member whole, as python-docx does, inflates all of its stream in one step and only then cuts it to
    the declared size, so a member that declares a megabyte but holds a gigabyte costs a gigabyte. Once every
    member is known to inflate to no more than it declares, the declared sizes bound that reading too.
    """
    with path.open("rb") as handle:
        end = zipfile._EndRecData(handle)  # the end record, read before zipfile builds an object per member
    if end is None:
        return  # not a zip file: the format's own reader says so
    # A directory far larger than its declared count needs is counted by its size.
    members = max(end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE] // _DIRECTORY_ENTRY_BYTES)
    if members > limits.max_zip_members:
        raise too_large(
            f"{kind[0]}包含 {members:,} 个部件",
            f"{kind[1]} holds {members:,} members",
            "max_zip_members",
            f"{limits.max_zip_members:,}",
        )
    try:
        archive = zipfile.ZipFile(path)
    except Exception:  # a damaged package: the format's own reader reports it
        return
    with archive:
        total = 0
        for info in archive.infolist():
            _check_member(info, limits, kind)
            total += info.file_size
            if total > limits.max_zip_total_mb * MB:
                raise too_large(
                    f"{kind[0]}解压后至少有 {megabytes(total)}",
                    f"{kind[1]} inflates to at least {megabytes(total)}",
                    "max_zip_total_mb",
                    f"{limits.max_zip_total_mb:g} MB",
                )
        for info in archive.infolist():
            _check_inflation(archive, info, kind)


def _short_name(info: zipfile.ZipInfo) -> str:
    return info.filename if len(info.filename) <= 80 else info.filename[:77] + "..."


def _check_member(info: zipfile.ZipInfo, limits: LoadLimits, kind: Kind) -> None:
    name = _short_name(info)
    size = info.file_size
    is_xml = info.filename.lower().endswith((".xml", ".rels"))
    setting, limit_mb = ("max_xml_mb", limits.max_xml_mb) if is_xml else ("max_zip_member_mb", limits.max_zip_member_mb)
    if size > limit_mb * MB:
        raise too_large(
            f"{kind[0]}中的 {name} 解压后有 {megabytes(size)}",
            f"{name} in {kind[1]} inflates to {megabytes(size)}",
            setting,
            f"{limit_mb:g} MB",
        )
    packed = max(info.compress_size, 1)
    if size > _RATIO_GRACE_BYTES and size > limits.max_zip_ratio * packed:
        ratio = f"{size / packed:,.0f}:1"
        raise too_large(
            f"{kind[0]}中的 {name} 压缩比为 {ratio}（{megabytes(packed)} 解压成 {megabytes(size)}）",
            f"{name} in {kind[1]} is compressed {ratio} ({megabytes(packed)} inflating to {megabytes(size)})",
            "max_zip_ratio",
            f"{limits.max_zip_ratio:g}:1",
        )


def _check_inflation(archive: zipfile.ZipFile, info: zipfile.ZipInfo, kind: Kind) -> None:
    """Inflate a member a megabyte at a time, with room for one byte more than it declares: a stream that holds
    more is refused at that byte."""
    name = _short_name(info)
    budget = copy.copy(info)
    budget.file_size = info.file_size + 1
    inflated = 0
    try:
        with archive.open(budget) as stream:
            while piece := stream.read(MB):
                inflated += len(piece)
                if inflated > info.file_size:
                    raise CorruptDocument(
                        f"{kind[0]}已损坏或被篡改：{name} 解压后超过它声明的 {megabytes(info.file_size)}。 "
                        f"({kind[1]} is damaged or tampered with: {name} inflates past the "
                        f"{megabytes(info.file_size)} it declares.)"
                    )
    except DocumentLoadError:
        raise
    except Exception as exc:  # a bad CRC, a broken deflate stream, an unknown compression or encryption
        raise CorruptDocument(
            f"{kind[0]}已损坏：无法解压其中的 {name}（{_reason(exc)}）。 ({kind[1]} is damaged: {name} cannot be "
            f"inflated ({_reason(exc)}).)"
        ) from exc
