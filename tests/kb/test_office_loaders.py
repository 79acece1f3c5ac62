"""Excel, CSV/TSV and PowerPoint files, generated here: rows as "header: value" records in chunks of whole rows
with the sheet and rows as their place, slides in reading order with their numbers as pages; hostile and careless
spreadsheets (a million empty rows, 16,384 columns, formulas without values, passwords, zip bombs, binary or
mixed-encoding CSV files) end with a clear reason and bounded work; and, through the API, a question about one row
finds that row with its headers, and a slide's sentence comes back with its slide number."""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openpyxl
import pytest
from fastapi.testclient import TestClient
from openpyxl.utils import get_column_letter
from pptx import Presentation
from pptx.util import Inches

from app.kb.documents import (
    CorruptDocument,
    EncryptedDocument,
    LoadedDocument,
    UnsupportedFileType,
)
from app.kb.loaders import SUPPORTED_EXTENSIONS, LoadLimits, load_document
from app.kb.splitter import split_document
from tests.conftest import create_kb, upload_ready
from tests.kb.test_hostile_files import MIB, PeakRss, bomb_member, member, refused, write_zip

DEFAULTS = LoadLimits.from_settings()
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
NAMES = ["王晓梅", "李建国", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏"]
DEPARTMENTS = ["销售部", "研发部", "财务部", "人事部", "市场部"]


# ------------------------------------------------------------------------------------------------ generators


def staff_rows(count: int) -> list[list[object]]:
    """Employees with distinct names and extensions: (工号, 姓名, 部门, 分机号, 入职日期)."""
    rows = []
    for i in range(count):
        name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i))
        department = DEPARTMENTS[i % len(DEPARTMENTS)]
        rows.append([f"E{1000 + i}", name, department, 8100 + i * 7, f"2020-{1 + i % 12:02d}-15"])
    return rows


def make_xlsx(path: Path, staff: int = 12) -> Path:
    """Three sheets: staff under a merged title row, with a department merged down two rows; prices; notes."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "员工名单"
    sheet.append(["2024 年员工通讯录"])
    sheet.merge_cells("A1:E1")
    sheet.append(["工号", "姓名", "部门", "分机号", "入职日期"])
    for row in staff_rows(staff):
        sheet.append(row)
    sheet["C4"] = None  # C3:C4 merged: both rows belong to the department in C3
    sheet.merge_cells("C3:C4")
    prices = workbook.create_sheet("价格表")
    prices.append(["产品", "单价（元）", "库存"])
    prices.append(["蓝色保温杯", 59.9, 120])
    prices.append(["红色雨伞", 35, 0])
    notes = workbook.create_sheet("说明")
    notes.append(["本表仅供内部使用。"])
    workbook.save(path)
    return path


def xlsx_parts(rows: list[list[object]] | None = None) -> dict[str, bytes]:
    workbook = openpyxl.Workbook()
    for row in rows or [["名称", "数量"], ["苹果", 3]]:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def xlsx_with_sheet_data(path: Path, extra_rows: bytes, dimension: str | None = None, merged: str = "") -> Path:
    """A real two-row workbook (名称/数量, 苹果/3) whose sheet gets `extra_rows` of raw <row> XML appended, and
    optionally a merged range (written as XML: openpyxl makes an object per merged cell)."""
    parts = xlsx_parts()
    xml = parts["xl/worksheets/sheet1.xml"]
    if dimension:
        xml = re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="%s"/>' % dimension.encode(), xml)
    merge = b'<mergeCells count="1"><mergeCell ref="%s"/></mergeCells>' % merged.encode() if merged else b""
    parts["xl/worksheets/sheet1.xml"] = xml.replace(b"</sheetData>", extra_rows + b"</sheetData>" + merge)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def make_pptx(path: Path) -> Path:
    """Slide 1: a title, two text boxes side by side (the right one added first and a little higher), a group, a
    table and speaker notes. Slide 2: a title and body. Slide 3: one sentence only there."""
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "季度经营汇报"
    slide.shapes.add_textbox(Inches(5), Inches(2), Inches(3), Inches(1)).text_frame.text = "右栏：华东区增长显著。"
    slide.shapes.add_textbox(Inches(1), Inches(2.05), Inches(3), Inches(1)).text_frame.text = "左栏：总收入创新高。"
    slide.shapes.add_textbox(Inches(1), Inches(6.5), Inches(3), Inches(0.5)).text_frame.text = "页脚：内部资料"
    group = slide.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(3.2), Inches(3), Inches(0.5)).text_frame.text = "组合中的说明文字"
    table = slide.shapes.add_table(3, 2, Inches(1), Inches(4), Inches(4), Inches(1.5)).table
    for r, (a, b) in enumerate([("项目", "金额（万元）"), ("收入", "1200"), ("支出", "800")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    slide.notes_slide.notes_text_frame.text = "讲者备注：强调华东区的增长来自新客户。"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "下季度计划"
    second.placeholders[1].text_frame.text = "扩大研发投入。"
    third = deck.slides.add_slide(deck.slide_layouts[6])
    third.shapes.add_textbox(
        Inches(1), Inches(1), Inches(8), Inches(1)
    ).text_frame.text = "第三页独有的句子：公司吉祥物是一只名叫团团的熊猫。"
    deck.save(path)
    return path


def pptx_parts() -> dict[str, bytes]:
    buffer = io.BytesIO()
    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6]).shapes.add_textbox(0, 0, Inches(2), Inches(1)).text_frame.text = "x"
    deck.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def texts(doc: LoadedDocument) -> list[str]:
    return [section.text for section in doc.sections]


# ------------------------------------------------------------------------------------------------ Excel


def test_xlsx_rows_are_header_value_records_on_every_sheet(tmp_path: Path) -> None:
    doc = load_document(make_xlsx(tmp_path / "通讯录.xlsx"))
    assert doc.pages == 3 and doc.metadata["file_type"] == "xlsx"
    first = doc.sections[0]
    assert first.text == "工号: E1000 | 姓名: 王晓梅 | 部门: 销售部 | 分机号: 8100 | 入职日期: 2020-01-15"
    assert first.page == 1 and first.rows == (3, 3)
    assert first.heading == "员工名单 · 2024 年员工通讯录"  # the merged title row joins the sheet's name
    prices = [s for s in doc.sections if s.page == 2]
    assert [s.text for s in prices] == [
        "产品: 蓝色保温杯 | 单价（元）: 59.9 | 库存: 120",
        "产品: 红色雨伞 | 单价（元）: 35 | 库存: 0",
    ]
    assert prices[0].heading == "价格表" and prices[0].rows == (2, 2)
    assert [s.text for s in doc.sections if s.page == 3] == ["A: 本表仅供内部使用。"]


def test_xlsx_merged_cells_are_filled_with_their_value(tmp_path: Path) -> None:
    doc = load_document(make_xlsx(tmp_path / "merged.xlsx"))
    second = next(s for s in doc.sections if s.rows == (4, 4))
    assert "姓名: 李建国 | 部门: 销售部" in second.text  # C4 is empty in the file: C3:C4 is merged


def test_a_lone_title_row_is_told_from_a_header_with_a_blank_neighbour(tmp_path: Path) -> None:
    path = tmp_path / "titles.xlsx"
    workbook = openpyxl.Workbook()
    for row in [["问题", None], ["怎么退货？", "七天内无理由退货。"]]:
        workbook.active.append(row)
    sales = workbook.create_sheet("销售")
    for row in [["2024 销售表（未合并的标题）"], ["地区", "销售额", "负责人"], ["华东", 100, "王芳"]]:
        sales.append(row)
    workbook.save(path)
    doc = load_document(path)
    assert texts(doc) == ["问题: 怎么退货？ | B: 七天内无理由退货。", "地区: 华东 | 销售额: 100 | 负责人: 王芳"]
    assert doc.sections[1].heading == "销售 · 2024 销售表（未合并的标题）"


def test_xlsx_chunks_hold_whole_rows_and_name_sheet_and_rows(tmp_path: Path) -> None:
    doc = load_document(make_xlsx(tmp_path / "big.xlsx", staff=120))
    chunks = split_document(doc, chunk_size=300, chunk_overlap=30)
    staff = [c for c in chunks if c.page == 1]
    assert len(staff) > 5
    covered: list[int] = []
    for chunk in staff:
        for line in chunk.text.split("\n"):
            assert re.fullmatch(r"工号: E\d+ \| 姓名: \S+ \| 部门: \S+ \| 分机号: \d+ \| 入职日期: [\d-]+", line), line
        assert len(chunk.text) <= 300
        found = re.fullmatch(r"员工名单 · 2024 年员工通讯录 · 第 (\d+)–(\d+) 行 \(rows \1-\2\)", chunk.heading or "")
        assert found, chunk.heading
        first, last = int(found[1]), int(found[2])
        assert last - first + 1 == len(chunk.text.split("\n"))
        covered += range(first, last + 1)
    assert covered == list(range(3, 123))  # every row once, in order: no overlap between chunks of rows
    assert [c.heading for c in chunks if c.page == 2] == ["价格表 · 第 2–3 行 (rows 2-3)"]


def test_a_row_longer_than_a_chunk_is_cut_between_its_pairs(tmp_path: Path) -> None:
    path = tmp_path / "wide.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append([f"字段{i}" for i in range(40)])
    workbook.active.append([f"值{i}" for i in range(40)])
    workbook.save(path)
    chunks = split_document(load_document(path), chunk_size=100, chunk_overlap=10)
    assert len(chunks) > 1 and all(c.heading == "Sheet · 第 2 行 (row 2)" for c in chunks)
    pairs = [pair for c in chunks for pair in c.text.split(" | ")]
    assert pairs == [f"字段{i}: 值{i}" for i in range(40)]


def test_formulas_keep_their_saved_value_or_read_as_formula_text(tmp_path: Path) -> None:
    """Excel saves a formula's value beside it (<v>): that value is read. openpyxl saves formulas without values:
    those cells read as their formula text instead of vanishing, and are counted."""
    cached = '<row r="3"><c r="A3" t="inlineStr"><is><t>合计</t></is></c><c r="B3"><f>SUM(B2:B2)</f><v>3</v></c></row>'
    cached = cached.encode()
    doc = load_document(xlsx_with_sheet_data(tmp_path / "excel.xlsx", cached))
    assert texts(doc)[-1] == "名称: 合计 | 数量: 3" and "formulas_without_values" not in doc.metadata
    path = tmp_path / "script.xlsx"
    workbook = openpyxl.Workbook()
    for row in [["项目", "金额"], ["收入", "=100*12"], ["支出", "=SUM(1,2)"]]:
        workbook.active.append(row)
    workbook.save(path)
    doc = load_document(path)
    assert texts(doc) == ["项目: 收入 | 金额: =100*12", "项目: 支出 | 金额: =SUM(1,2)"]
    assert doc.metadata["formulas_without_values"] == "2"


def test_a_million_empty_rows_cost_bounded_work_and_memory(tmp_path: Path) -> None:
    """A million formatted empty rows (openpyxl would keep a dict for each) after the data, and a sheet that
    declares A1:XFD1048576: only the rows holding data are read; nothing is padded to the declared size."""
    rows = b"".join(b'<row r="%d" ht="20" customHeight="1"/>' % n for n in range(3, 1_000_003))
    path = xlsx_with_sheet_data(tmp_path / "flood.xlsx", rows, dimension="A1:XFD1048576")
    assert path.stat().st_size < 4 * MIB
    with PeakRss() as rss:
        doc = load_document(path)
    assert texts(doc) == ["名称: 苹果 | 数量: 3"]
    assert rss.growth < 256 * MIB, f"reading grew memory by {rss.growth / MIB:.0f} MiB"
    far = b'<row r="1048576"><c r="XFD1048576" s="1"/></row>'  # one empty formatted cell in the last corner
    doc = load_document(xlsx_with_sheet_data(tmp_path / "corner.xlsx", far, dimension="A1:XFD1048576"))
    assert texts(doc) == ["名称: 苹果 | 数量: 3"]


def test_16384_columns_read_up_to_the_last_one_holding_data(tmp_path: Path) -> None:
    empties = b"".join(b'<c r="%s3" s="1"/>' % get_column_letter(c).encode() for c in range(1, 16385))
    value = '<row r="4"><c r="A4" t="inlineStr"><is><t>梨</t></is></c><c r="XFD4"><v>7</v></c></row>'.encode()
    doc = load_document(xlsx_with_sheet_data(tmp_path / "wide.xlsx", b'<row r="3">' + empties + b"</row>" + value))
    assert texts(doc) == ["名称: 苹果 | 数量: 3", "名称: 梨 | XFD: 7"]


def test_cells_past_the_sheet_limit_are_refused_naming_it(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "many.xlsx", staff=40)
    limits = replace(DEFAULTS, max_sheet_cells=100)
    message = refused(lambda: load_document(path, limits=limits), "limits.max_sheet_cells")
    assert "员工名单" in message and "100" in message
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("\n".join(",".join(map(str, r)) for r in staff_rows(40)), encoding="utf-8")
    refused(lambda: load_document(csv_path, limits=limits), "limits.max_sheet_cells")


def test_a_merge_over_the_whole_sheet_stays_within_the_data(tmp_path: Path) -> None:
    path = xlsx_with_sheet_data(tmp_path / "merged-all.xlsx", b"", merged="A2:XFD1048576")
    assert texts(load_document(path)) == ["名称: 苹果 | 数量: 苹果"]


def test_password_protected_xlsx_is_encrypted_and_old_xls_is_named(tmp_path: Path) -> None:
    """Excel stores a password-protected .xlsx as an OLE2 container holding an "EncryptedPackage" stream."""
    locked = tmp_path / "locked.xlsx"
    locked.write_bytes(OLE + b"\0" * 504 + "EncryptedPackage".encode("utf-16-le"))
    with pytest.raises(EncryptedDocument, match="encrypted with a password") as caught:
        load_document(locked)
    assert "密码" in str(caught.value)
    old = tmp_path / "renamed.xlsx"
    old.write_bytes(OLE + b"\0" * 504 + "Workbook".encode("utf-16-le"))
    with pytest.raises(CorruptDocument, match=r"old binary \.xls file"):
        load_document(old)


def test_password_protected_pptx_is_encrypted(tmp_path: Path) -> None:
    locked = tmp_path / "locked.pptx"
    locked.write_bytes(OLE + b"\0" * 504 + "EncryptedPackage".encode("utf-16-le"))
    with pytest.raises(EncryptedDocument, match="PowerPoint file is encrypted"):
        load_document(locked)


def test_xlsm_stored_under_a_generated_name_is_read_by_its_uploaded_name(tmp_path: Path) -> None:
    stored = make_xlsx(tmp_path / "upload-0001.bin")  # openpyxl itself refuses paths without an Excel extension
    doc = load_document(stored, filename="宏.XLSM")
    assert doc.metadata["file_type"] == "xlsm" and doc.pages == 3


def test_damaged_or_foreign_xlsx_is_corrupt(tmp_path: Path) -> None:
    text = tmp_path / "text.xlsx"
    text.write_text("not a workbook")
    with pytest.raises(CorruptDocument, match="zip"):
        load_document(text)
    docx_named_xlsx = tmp_path / "word.xlsx"
    write_zip(docx_named_xlsx, [member("word/document.xml", b"<w:document/>")])
    with pytest.raises(CorruptDocument, match="damaged"):
        load_document(docx_named_xlsx)


@pytest.mark.parametrize(
    ("suffix", "parts", "inflated"),
    [(".xlsx", xlsx_parts, "xl/worksheets/sheet1.xml"), (".pptx", pptx_parts, "ppt/slides/slide1.xml")],
)
def test_xlsx_and_pptx_zip_bombs_are_refused_before_anything_inflates(
    tmp_path: Path,
    suffix: str,
    parts,
    inflated: str,  # type: ignore[no-untyped-def]
) -> None:
    package = parts()
    xml = package.pop(inflated)
    root = re.search(rb"<[a-zA-Z][^>]*>", xml)  # the root element's start tag: blanks go right after it
    assert root is not None
    bomb = bomb_member(inflated, xml[: root.end()], 1024, xml[root.end() :])
    path = write_zip(tmp_path / f"bomb{suffix}", [member(n, d) for n, d in package.items()] + [bomb])
    assert path.stat().st_size < 2 * MIB
    message = refused(lambda: load_document(path), "limits.max_xml_mb")
    assert inflated in message and "1,024.0 MB" in message


# ------------------------------------------------------------------------------------------------ CSV / TSV


def test_gbk_csv_with_sniffed_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("城市;人口（万）;简称\n北京;2185;京\n上海;2487;沪\n".encode("gbk"))
    doc = load_document(path)
    assert texts(doc) == ["城市: 北京 | 人口（万）: 2185 | 简称: 京", "城市: 上海 | 人口（万）: 2487 | 简称: 沪"]
    assert doc.metadata["encoding"] == "gb18030" and doc.metadata["delimiter"] == ";"
    assert [s.rows for s in doc.sections] == [(2, 2), (3, 3)] and doc.sections[0].page is None


def test_utf8_bom_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + '问题,答案\r\n"退货,怎么办?","七天内\r\n无理由退货"\r\n'.encode())
    doc = load_document(path)
    assert texts(doc) == ["问题: 退货,怎么办? | 答案: 七天内 无理由退货"]
    assert doc.metadata["encoding"] == "utf-8-sig"


def test_tsv_uses_tabs_and_a_numeric_first_row_is_not_a_header(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("2023\t15.5\n2024\t17,0\n", encoding="utf-8")
    doc = load_document(path)
    assert texts(doc) == ["A: 2023 | B: 15.5", "A: 2024 | B: 17,0"]  # a comma is data in a TSV file


def test_csv_with_mixed_encodings_keeps_both_parts(tmp_path: Path) -> None:
    """Two exports appended: UTF-8 lines, then GBK lines. Decoding the whole as either turns one part to mojibake."""
    path = tmp_path / "mixed.csv"
    path.write_bytes("姓名,城市\n张三,北京\n".encode() + "李四,上海\n王五,广州\n".encode("gbk"))
    doc = load_document(path)
    assert texts(doc) == ["姓名: 张三 | 城市: 北京", "姓名: 李四 | 城市: 上海", "姓名: 王五 | 城市: 广州"]
    assert doc.metadata["encoding"] == "utf-8+gb18030"


def test_csv_with_a_nul_byte_loses_only_the_nul(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    tools = ["扳手", "钳子", "锤子", "卷尺", "电钻"]
    rest = "".join(f"{i},{tool}\n" for i, tool in enumerate(tools, 2))
    path.write_bytes(f"编号,名称\n1,螺丝\x00刀\n{rest}".encode())
    doc = load_document(path)
    assert texts(doc) == ["编号: 1 | 名称: 螺丝刀"] + [f"编号: {i} | 名称: {t}" for i, t in enumerate(tools, 2)]
    assert doc.metadata["nul_bytes"] == "1"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (os.urandom(4096), "binary data"),
        (b"PK\x03\x04" + os.urandom(2048), "zip package"),
        (OLE + os.urandom(2048), "old Office file"),
    ],
    ids=["random-bytes", "a-zip-named-csv", "an-xls-named-csv"],
)
def test_a_csv_that_is_really_binary_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(CorruptDocument, match=reason) as caught:
        load_document(path)
    assert "CSV" in str(caught.value).split("(")[0]


# ------------------------------------------------------------------------------------------------ PowerPoint


def test_pptx_slides_in_reading_order_with_tables_and_notes(tmp_path: Path) -> None:
    doc = load_document(make_pptx(tmp_path / "汇报.pptx"))
    assert doc.pages == 3 and doc.metadata["file_type"] == "pptx"
    first, second, third = doc.sections
    assert (first.page, first.heading) == (1, "季度经营汇报")
    order = [
        "季度经营汇报",
        "左栏：总收入创新高。",
        "右栏：华东区增长显著。",
        "组合中的说明文字",
        "项目 | 金额（万元）",
    ]
    order += ["页脚：内部资料", "备注 (notes): 讲者备注"]
    positions = [first.text.index(part) for part in order]
    assert positions == sorted(positions), first.text
    assert "项目 | 金额（万元）\n收入 | 1200\n支出 | 800" in first.text
    assert (second.page, second.heading) == (2, "下季度计划") and "扩大研发投入。" in second.text
    assert (third.page, third.heading) == (3, None) and "团团" in third.text


def test_pptx_chunks_keep_the_slide_number(tmp_path: Path) -> None:
    chunks = split_document(load_document(make_pptx(tmp_path / "deck.pptx")), chunk_size=200, chunk_overlap=20)
    assert {c.page for c in chunks if "团团" in c.text} == {3}
    assert {c.page for c in chunks if "讲者备注" in c.text} == {1}


# ------------------------------------------------------------------------------------------------ dispatch


@pytest.mark.parametrize(("old", "new"), [(".doc", "docx"), (".xls", "xlsx"), (".ppt", "pptx")])
def test_old_binary_office_formats_say_how_to_convert(tmp_path: Path, old: str, new: str) -> None:
    path = tmp_path / f"旧文件{old}"
    path.write_bytes(OLE + b"\0" * 64)
    with pytest.raises(UnsupportedFileType) as caught:
        load_document(path)
    message = str(caught.value)
    assert f"另存为 .{new}" in message and f"libreoffice --headless --convert-to {new} file{old}" in message
    for ext in (".docx", ".xlsx", ".pptx", ".csv"):
        assert ext in message


def test_every_registered_type_has_a_label_and_a_loader() -> None:
    assert {".xlsx", ".xlsm", ".csv", ".tsv", ".pptx"} <= set(SUPPORTED_EXTENSIONS)
    assert all(t.label and callable(t.load) for t in SUPPORTED_EXTENSIONS.values())


# ------------------------------------------------------------------------------------------------ through the API

KB = "办公文件"


@pytest.fixture(scope="module")
def office_docs(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    folder = tmp_path_factory.mktemp("office")
    create_kb(client, KB)
    files = [make_xlsx(folder / "通讯录.xlsx", staff=60), make_pptx(folder / "汇报.pptx")]
    gbk = folder / "城市.csv"
    gbk.write_bytes("城市,人口（万）,简称\n北京,2185,京\n上海,2487,沪\n".encode("gbk"))
    docs = upload_ready(client, KB, *((p.name, p.read_bytes()) for p in [*files, gbk]))
    yield {d["filename"]: d for d in docs}


def _search(client: TestClient, question: str) -> list[dict]:
    response = client.post(f"/api/kbs/{KB}/search", json={"question": question, "top_k": 3, "mode": "hybrid"})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def test_office_files_are_ready(office_docs: dict[str, dict]) -> None:
    assert {name: d["status"] for name, d in office_docs.items()} == dict.fromkeys(office_docs, "ready")
    assert office_docs["通讯录.xlsx"]["pages"] == 3 and office_docs["汇报.pptx"]["pages"] == 3


def test_a_question_about_one_row_finds_that_row_with_its_headers(
    client: TestClient, office_docs: dict[str, dict]
) -> None:
    name, extension = "张伟", 8100 + 2 * 7
    top = _search(client, f"{name}的分机号是多少？")[0]
    assert top["file_name"] == "通讯录.xlsx" and top["page"] == 1
    assert f"工号: E1002 | 姓名: {name} | 部门: 财务部 | 分机号: {extension} | 入职日期: 2020-03-15" in top["text"]
    found = re.search(r"第 (\d+)–(\d+) 行", top["heading"])
    assert top["heading"].startswith("员工名单") and found and int(found[1]) <= 5 <= int(found[2])
    top = _search(client, "上海的简称是什么")[0]
    assert top["file_name"] == "城市.csv" and "城市: 上海 | 人口（万）: 2487 | 简称: 沪" in top["text"]


def test_a_slide_sentence_comes_back_with_its_slide_number(client: TestClient, office_docs: dict[str, dict]) -> None:
    top = _search(client, "公司的吉祥物是什么动物？")[0]
    assert top["file_name"] == "汇报.pptx" and top["page"] == 3 and "团团" in top["text"]
    top = _search(client, "讲者备注里说华东区的增长来自哪里")[0]
    assert top["file_name"] == "汇报.pptx" and top["page"] == 1


def test_new_types_are_accepted_and_old_office_formats_refused_with_a_way_out(
    client: TestClient, office_docs: dict[str, dict]
) -> None:
    accepted = client.get("/api/status").json()["file_types"]
    assert {".xlsx", ".xlsm", ".csv", ".tsv", ".pptx"} <= set(accepted)
    before = client.get(f"/api/kbs/{KB}/documents").json()
    response = client.post(f"/api/kbs/{KB}/documents", files=[("files", ("旧报表.xls", OLE + b"\0" * 64))])
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "旧报表.xls" in detail and ".xlsx" in detail and "libreoffice --headless --convert-to xlsx" in detail
    assert client.get(f"/api/kbs/{KB}/documents").json() == before
