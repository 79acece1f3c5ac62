"""Validation of user-chosen names: knowledge-base display names and uploaded file names.

Display names may be Chinese and contain quotes: they are stored in the catalog only. Milvus sees a
collection name derived from the knowledge base's id (ASCII, stable), never the display name.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

from app.errors import InvalidInput

_FORBIDDEN_KB_CHARS = set("/\\")
# Names with this prefix belong to the evaluation's temporary copies of a knowledge base (another chunk size):
# users cannot create them, and listings leave them out.
TEMPORARY_PREFIX = "评测临时-"


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in text)


def is_temporary(name: str) -> bool:
    return name.startswith(TEMPORARY_PREFIX)


def normalize_kb_name(name: str) -> str:
    """The one spelling a name is stored and looked up in: NFC (a name typed as "e" + combining accent finds the
    knowledge base created with "é"), without surrounding blanks."""
    return unicodedata.normalize("NFC", name).strip()


def validate_kb_name(name: str, max_chars: int, temporary: bool = False) -> str:
    cleaned = normalize_kb_name(name)
    if is_temporary(cleaned) != temporary:
        raise InvalidInput(f"knowledge base names starting with {TEMPORARY_PREFIX!r} are reserved for evaluations")
    if not cleaned:
        raise InvalidInput("knowledge base name must not be empty")
    if len(cleaned) > max_chars:
        raise InvalidInput(f"knowledge base name is {len(cleaned)} characters long; the limit is {max_chars}")
    if _has_control_chars(cleaned) or _FORBIDDEN_KB_CHARS & set(cleaned):
        raise InvalidInput("knowledge base name must not contain control characters, '/' or '\\'")
    return cleaned


def collection_name_for(kb_id: str) -> str:
    """Milvus collection names allow [A-Za-z0-9_] and must start with a letter or underscore."""
    return f"kb_{kb_id}"


def sanitize_filename(raw: str, max_chars: int) -> str:
    """Keep only the last path part, drop control characters and leading dots; shorten but keep the extension."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/")
    name = PurePosixPath(name).name if "/" in name else name
    name = "".join(ch for ch in name if not _has_control_chars(ch)).strip().lstrip(".").strip()
    if not name or name in {".", ".."}:
        raise InvalidInput(f"file name {raw!r} has no usable name part")
    if len(name) > max_chars:
        suffix = PurePosixPath(name).suffix
        suffix = suffix if len(suffix) <= 16 else ""
        name = name[: max_chars - len(suffix)].rstrip() + suffix
    return name


def file_extension(filename: str) -> str:
    return PurePosixPath(filename).suffix.lower()
