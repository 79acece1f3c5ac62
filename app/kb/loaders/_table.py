"""Rows of a sheet or CSV file as self-contained records: one Section per row, "header: value" pairs.

A chunk of rows cut from the middle of a table would no longer say which column is which, so every row carries
its headers: "姓名: 张三 | 部门: 销售部 | 电话: 139…". The splitter packs whole rows into chunks (see
`app.kb.splitter.pack_rows`); the rows' numbers and the sheet's name become the chunk's heading.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from openpyxl.utils import get_column_letter

from app.kb.documents import Section
from app.kb.loaders._common import Kind
from app.kb.loaders._limits import LoadLimits, too_large

Grid = dict[int, dict[int, object]]  # row number -> column number -> a value that is not empty (both 1-based)
_MAX_TITLE_ROWS = 3


class CellBudget:
    """Counts the cells holding a value that one file has produced, against limits.max_sheet_cells."""

    def __init__(self, limits: LoadLimits, kind: Kind) -> None:
        self.limit = limits.max_sheet_cells
        self.kind = kind
        self.used = 0

    def spend(self, cells: int, where: str = "") -> None:
        self.used += cells
        if self.used > self.limit:
            raise too_large(
                f"{self.kind[0]}{where}至少有 {self.used:,} 个有内容的单元格",
                f"{self.kind[1]}{where and ' (' + where + ')'} holds at least {self.used:,} cells with a value",
                "max_sheet_cells",
                f"{self.limit:,}",
            )


def is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def cell_text(value: object) -> str:
    """A cell's value as it reads: whitespace collapsed, whole numbers without ".0", dates without a zero time."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.15g}"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


def table_sections(grid: Grid, label: str | None, page: int | None) -> list[Section]:
    """One Section per row below the header row, rows numbered as in the file.

    Leading title rows (see `_is_title`) join the label. The first row after them is the header row when all its
    values are text; otherwise the columns are named by their letters (A, B, ...) and every row is a record. A
    table that is only a header row keeps it as a row.
    """
    numbers = sorted(grid)
    titles: list[str] = []
    while len(numbers) > 1 and len(titles) < _MAX_TITLE_ROWS and _is_title(grid[numbers[0]], grid[numbers[1]]):
        titles.append(cell_text(next(iter(grid[numbers.pop(0)].values()))))
    label = " · ".join(t for t in [label, *titles] if t) or None
    header: dict[int, str] = {}
    if len(numbers) > 1 and all(_is_label(v) for v in grid[numbers[0]].values()):
        header = {column: cell_text(value) for column, value in grid[numbers[0]].items()}
    records = list(_records(grid, numbers[1:] if header else numbers, header))
    if header and not records:
        records = [(numbers[0], " | ".join(header.values()))]
    return [Section(text=text, page=page, heading=label, rows=(n, n)) for n, text in records]


def _is_title(row: dict[int, object], following: dict[int, object]) -> bool:
    """A row holding one value over a table: merged across several columns (so filled into each), or alone above a
    row of three values or more. A lone value above a row of two is more likely a header whose neighbour is blank."""
    values = {cell_text(value) for value in row.values()}
    return len(values) == 1 and (len(row) > 1 or len(following) >= 3)


def _is_label(value: object) -> bool:
    """Text that is not a number written as text ("2024", "3.5" in a CSV file)."""
    if not isinstance(value, str):
        return False
    try:
        float(value.replace(",", ""))
    except ValueError:
        return True
    return False


def _records(grid: Grid, numbers: list[int], header: dict[int, str]) -> Iterator[tuple[int, str]]:
    for number in numbers:
        row = grid[number]
        if header and all(cell_text(row.get(c, "")) == name for c, name in header.items()) and len(row) == len(header):
            continue  # the header repeated (a table pasted twice, a print title)
        pairs = (f"{_name(header, column)}: {cell_text(row[column])}" for column in sorted(row))
        yield number, " | ".join(pairs)


def _name(header: dict[int, str], column: int) -> str:
    """The column's header, or its letter where it has none."""
    return header.get(column) or get_column_letter(column)
