"""Excel (.xlsx, .xlsm) loading with openpyxl: every sheet, merged cells filled, each row a "header: value" record.

Formulas: a cell holds the value Excel saved with its formula (openpyxl's data_only reading). Excel and LibreOffice
always save that value; files written by scripts (openpyxl, some exporters) may hold formulas without one, and such
a cell is read as its formula text ("=SUM(B2:B4)") rather than dropped, and counted in the document's metadata
(`formulas_without_values`). Nothing is ever calculated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
from lxml.etree import _Element
from openpyxl.utils import range_boundaries
from openpyxl.workbook.workbook import Workbook
from openpyxl.worksheet._read_only import ReadOnlyWorksheet
from openpyxl.worksheet._reader import FORMULA_TAG, WorkSheetParser

from app.kb.documents import CorruptDocument, DocumentLoadError, LoadedDocument, Section
from app.kb.loaders._common import _reason, damaged_package, reject_ole_file
from app.kb.loaders._limits import LoadLimits, check_zip
from app.kb.loaders._table import CellBudget, Grid, is_empty, table_sections

_KIND = ("Excel 文件", "the Excel file")


def _load_xlsx(path: Path, limits: LoadLimits) -> LoadedDocument:
    """One record Section per row of every sheet; the sheet's number is the page, its name the heading.

    Sheets are read as a stream of the cells the file holds (never padded to the size a sheet declares, so a
    declared A1:XFD1048576 or a far-away empty cell costs nothing); only cells holding a value are kept, at most
    limits.max_sheet_cells of them; the work on empty cells is bounded by limits.max_xml_mb, the size of a sheet's XML.
    """
    reject_ole_file(path, _KIND, ".xls", ".xlsx")
    check_zip(path, limits, _KIND)
    budget = CellBudget(limits, _KIND)
    sections: list[Section] = []
    uncached = 0
    with path.open("rb") as handle:
        workbook = _open_workbook(handle)
        try:
            sheets = [ws for ws in workbook.worksheets if isinstance(ws, ReadOnlyWorksheet)]
            for number, sheet in enumerate(sheets, start=1):
                grid, missing = _read_sheet(workbook, sheet, budget)
                uncached += missing
                sections += table_sections(grid, sheet.title, number)
        except DocumentLoadError:
            raise
        except Exception as exc:
            raise CorruptDocument(
                f"Excel 文件已损坏，无法读取（{_reason(exc)}）。 (The Excel file is damaged ({_reason(exc)}).)"
            ) from exc
        finally:
            workbook.close()
    metadata = {"sheets": str(len(sheets))}
    if uncached:
        metadata["formulas_without_values"] = str(uncached)
    title = (workbook.properties.title or "").strip() if workbook.properties else ""
    if title:
        metadata["title"] = title
    return LoadedDocument(sections=sections, pages=len(sheets), metadata=metadata)


def _open_workbook(handle: Any) -> Workbook:
    """Open read-only from the file object: openpyxl checks a path's extension, and uploads are stored under
    generated names."""
    try:
        return openpyxl.load_workbook(handle, read_only=True, data_only=True, keep_links=False)
    except Exception as exc:
        raise damaged_package(_KIND, ".xlsx", exc) from exc


class _SheetParser(WorkSheetParser):
    """openpyxl's own streaming sheet parser (the one its read-only worksheets use), changed in two ways: a formula
    saved without its value reads as its formula text, and rows keep no per-row formatting (openpyxl records the
    attributes of every formatted row, which a million formatted empty rows would turn into a million dicts)."""

    uncached = 0

    def parse_cell(self, element: _Element) -> dict[str, Any]:
        cell = super().parse_cell(element)
        if element.find(FORMULA_TAG) is not None:
            formula = self.parse_formula(element)  # always: it also records shared formulas for later cells
            text = getattr(formula, "text", formula)
            if cell["value"] is None and isinstance(text, str) and text != "=":
                cell["value"] = text
                self.uncached += 1
        return cell

    def parse_row(self, row: _Element) -> tuple[int, list[dict[str, Any]]]:
        number = row.get("r")
        self.row_counter = int(float(number)) if number else self.row_counter + 1
        self.col_counter = 0
        return self.row_counter, [self.parse_cell(element) for element in row]


def _read_sheet(workbook: Workbook, sheet: ReadOnlyWorksheet, budget: CellBudget) -> tuple[Grid, int]:
    """The cells of `sheet` holding a value, merged ranges filled with their value; and how many formulas had no
    saved value."""
    grid: Grid = {}
    with sheet._get_source() as source:
        parser = _SheetParser(
            source,
            workbook.shared_strings,
            data_only=True,
            epoch=workbook.epoch,
            date_formats=workbook._date_formats,
            timedelta_formats=workbook._timedelta_formats,
        )
        for number, cells in parser.parse():
            values = {cell["column"]: cell["value"] for cell in cells if not is_empty(cell["value"])}
            if values:
                budget.spend(len(values), f"“{sheet.title}”")
                grid.setdefault(number, {}).update(values)
    if grid and parser.merged_cells is not None:
        _fill_merged(grid, [cell.ref for cell in parser.merged_cells.mergeCell], budget)
    return grid, parser.uncached


def _fill_merged(grid: Grid, ranges: list[str], budget: CellBudget) -> None:
    """Give every cell of a merged range the value of its top-left cell, within the rows and columns that hold
    data (a range may span a whole sheet)."""
    last_row = max(grid)
    last_column = max(max(row) for row in grid.values())
    for ref in ranges:
        min_col, min_row, max_col, max_row = range_boundaries(ref)
        value = grid.get(min_row, {}).get(min_col)
        if value is None:
            continue
        rows = range(min_row, min(max_row, last_row) + 1)
        columns = range(min_col, min(max_col, last_column) + 1)
        budget.spend(len(rows) * len(columns) - 1)
        for number in rows:
            row = grid.setdefault(number, {})
            for column in columns:
                row[column] = value
