"""The base of every request body: a 422 naming the field for values no field can use.

Python's json module accepts what nothing downstream can store or send on: the bare tokens NaN and Infinity
(any number field), and lone UTF-16 surrogates such as "\\ud800" (any text), which are not Unicode text and cannot
be encoded as UTF-8 for the catalog, Milvus, the LLM or the response itself. Checking them once here, for every
field and everything nested in it, keeps each model free of field-by-field checks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

NOT_FINITE = "必须是有限的数 (must be a finite number: NaN and Infinity are not accepted)"
LONE_SURROGATE = "含有孤立的 UTF-16 代理字符，不是有效文本 (contains a lone UTF-16 surrogate such as \\ud800)"


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _leaves(value: Any) -> Iterator[Any]:
    """Everything in a value: itself, and what JSON arrays and objects (keys included) hold, however deep. A
    stack, not recursion: JSON may nest deeper than the recursion limit leaves room for here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        else:
            yield item


class RequestModel(BaseModel):
    """Request bodies derive from this. The check runs before pydantic's own (whose messages for these values vary:
    a NaN in an int field, a surrogate it cannot decode), so a value nested in a field is refused at that field."""

    model_config = ConfigDict(allow_inf_nan=False)  # also refuses "nan" and "inf" given as strings

    @field_validator("*", mode="before")
    @classmethod
    def _usable(cls, value: Any) -> Any:
        for leaf in _leaves(value):
            if isinstance(leaf, float) and not math.isfinite(leaf):
                raise PydanticCustomError("finite_number", NOT_FINITE)
            if isinstance(leaf, str) and not _is_text(leaf):
                raise PydanticCustomError("lone_surrogate", LONE_SURROGATE)
        return value
