"""Loaders on real files: generated PDFs/DOCX/TXT/Markdown/HTML and the public documents in ../shared/docs."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from app.kb.documents import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    LoadedDocument,
    UnsupportedFileType,
)
from app.kb.loaders import SUPPORTED_EXTENSIONS, clean_pdf_text, load_document
from tests.conftest import SHARED
from tests.fixtures_docs import (
    BIG5_TEXT,
    DOCX_AFTER_TABLE,
    DOCX_BEFORE_TABLE,
    EN_PAGE2_SENTENCE,
    FONT_HINT,
    GBK_TEXT,
    LEFT_COLUMN,
    MIXED_PAGE3_SENTENCE,
    RIGHT_COLUMN,
    ZH_LEFT_COLUMN,
    ZH_PAGE1_PARA2,
    ZH_PAGE1_SENTENCE,
    ZH_PAGE3_SENTENCE,
    ZH_RIGHT_COLUMN,
    cjk_fonts,
    make_big5_txt,
    make_corrupt_docx,
    make_corrupt_pdf,
    make_docx,
    make_encrypted_pdf,
    make_gbk_txt,
    make_html,
    make_image_only_pdf,
    make_markdown,
    make_multipage_pdf,
    make_simple_pdf,
    make_two_column_pdf,
    make_utf8_bom_txt,
)

SHARED_DOCS = SHARED / "docs"
needs_cjk_fonts = pytest.mark.skipif(
    cjk_fonts() is None, reason=f"fpdf2 needs CJK fonts to write Chinese PDFs: {FONT_HINT}"
)
CJK_BREAK = re.compile(r"[\u4e00-\u9fff，、；：]\n[\u4e00-\u9fff]")


def page_of(doc: LoadedDocument, needle: str) -> int | None:
    """The page of the one Section that contains `needle` (None when no Section does)."""
    pages = [s.page for s in doc.sections if needle in s.text]
    assert len(pages) <= 1, f"{needle!r} found on several pages: {pages}"
    return pages[0] if pages else None


def full_text(doc: LoadedDocument) -> str:
    return "\n\n".join(s.text for s in doc.sections)


# ------------------------------------------------------------------------------------------------ PDF


@needs_cjk_fonts
def test_pdf_known_sentences_are_on_their_pages(tmp_path: Path) -> None:
    doc = load_document(make_multipage_pdf(tmp_path))
    assert doc.pages == 3
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert page_of(doc, ZH_PAGE1_SENTENCE) == 1
    assert page_of(doc, EN_PAGE2_SENTENCE) == 2
    assert page_of(doc, MIXED_PAGE3_SENTENCE) == 3
    assert page_of(doc, ZH_PAGE3_SENTENCE) == 3


@needs_cjk_fonts
def test_pdf_chinese_line_breaks_removed_but_paragraphs_kept(tmp_path: Path) -> None:
    page1 = load_document(make_multipage_pdf(tmp_path)).sections[0].text
    assert ZH_PAGE1_SENTENCE in page1  # the PDF wraps it over two lines
    assert "\n" + ZH_PAGE1_PARA2 in page1  # a real paragraph still starts on its own line
    assert not CJK_BREAK.search(page1), page1


@needs_cjk_fonts
def test_pdf_hyphenated_line_end_is_joined(tmp_path: Path) -> None:
    page2 = load_document(make_multipage_pdf(tmp_path)).sections[1].text
    assert "simple component test." in page2
    assert "compo-" not in page2


def test_two_column_pdf_reads_left_column_first(tmp_path: Path) -> None:
    text = load_document(make_two_column_pdf(tmp_path)).sections[0].text
    positions = [text.find(paragraph) for paragraph in LEFT_COLUMN + RIGHT_COLUMN]
    assert -1 not in positions, text  # every paragraph intact: the columns were not interleaved line by line
    assert positions == sorted(positions)


@needs_cjk_fonts
def test_two_column_chinese_pdf_keeps_columns_apart(tmp_path: Path) -> None:
    text = load_document(make_two_column_pdf(tmp_path, chinese=True)).sections[0].text
    assert text.count(ZH_LEFT_COLUMN) == 3 and text.count(ZH_RIGHT_COLUMN) == 3
    assert text.rfind(ZH_LEFT_COLUMN) < text.find(ZH_RIGHT_COLUMN)


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EncryptedDocument, match="encrypted"):
        load_document(make_encrypted_pdf(tmp_path))


def test_pdf_with_only_an_owner_password_opens(tmp_path: Path) -> None:
    doc = load_document(make_encrypted_pdf(tmp_path, user_password=""))
    assert doc.pages == 2
    assert "Simple page 2." in doc.sections[1].text


def test_truncated_pdf_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptDocument, match="damaged") as caught:
        load_document(make_corrupt_pdf(tmp_path))
    assert "(" in str(caught.value)  # carries pypdf's short reason


def test_non_pdf_bytes_named_pdf_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.pdf"
    path.write_text("<html>not a pdf</html>")
    with pytest.raises(CorruptDocument, match="PDF"):
        load_document(path)


def test_image_only_pdf_is_read_by_ocr_and_its_blank_page_reported(tmp_path: Path) -> None:
    doc = load_document(make_image_only_pdf(tmp_path))
    assert [(s.page, s.ocr, s.text) for s in doc.sections] == [(1, True, "SCANNED PAGE WITHOUT TEXT LAYER")]
    assert (doc.report.text_pages, doc.report.ocr_pages, doc.report.empty_pages) == (0, 1, [2])


def test_simple_pdf_metadata(tmp_path: Path) -> None:
    doc = load_document(make_simple_pdf(tmp_path, pages=3))
    assert doc.pages == 3 and doc.metadata["file_type"] == "pdf"


# ----------------------------------------------------------------------------------- PDF text clean-up


def test_clean_joins_wrapped_chinese_lines_only() -> None:
    raw = (
        "一、主要职能\n"
        "（一）贯彻执行国家和本市有关财政工作的法律、法规、规章和方针、政策；研\n"
        "究拟订本区财政发展战略、规划、政策和改革方案并组织实施。\n"
        "（二）承担政府各项财政收支管理的责任；负责政府财政资金和财政专户管理；\n"
        "负责编制年度财政预决算并组织执行。\n"
    )
    assert clean_pdf_text(raw).split("\n") == [
        "一、主要职能",
        "（一）贯彻执行国家和本市有关财政工作的法律、法规、规章和方针、政策；研究拟订本区财政发展战略、规划、"
        "政策和改革方案并组织实施。",
        "（二）承担政府各项财政收支管理的责任；负责政府财政资金和财政专户管理；负责编制年度财政预决算并组织执行。",
    ]


def test_clean_joins_english_lines_and_hyphens() -> None:
    raw = (
        "The FAA proposes to supersede an airworthiness di-\n"
        "rective that applies to all airplanes, and the agency\n"
        "has determined that final action is necessary.\n"
        "DATES: Comments are due soon.\n"
        "Soekarno-\n"
        "Hatta International Airport   \n"
    )
    assert clean_pdf_text(raw).split("\n") == [
        "The FAA proposes to supersede an airworthiness directive that applies to all airplanes, and the agency "
        "has determined that final action is necessary.",
        "DATES: Comments are due soon.",
        "Soekarno-Hatta International Airport",
    ]


def test_clean_keeps_layout_table_rows_and_collapses_spaces() -> None:
    raw = (
        "  项目                         决算数        项目                       决算数\n"
        "201    06     01  行政运行                      1,511.90   1,511.89        0.01\n"
        "这一行是很长的说明文字，它足够宽，所以看起来像是被自动换行的一行文字，\n"
        "续行。\n"
    )
    lines = clean_pdf_text(raw, layout=True).split("\n")
    assert lines[0] == "项目 决算数 项目 决算数"
    assert lines[1] == "201 06 01 行政运行 1,511.90 1,511.89 0.01"
    assert lines[2].endswith("一行文字，续行。")


def test_clean_list_markers_start_new_lines() -> None:
    raw = "下列事项需要说明，这一行很长很长很长很长很长很长很长很长很长很长：\n1、第一项\n2、第二项\n• bullet item\n"
    assert clean_pdf_text(raw).split("\n") == [
        "下列事项需要说明，这一行很长很长很长很长很长很长很长很长很长很长：",
        "1、第一项",
        "2、第二项",
        "• bullet item",
    ]


# ------------------------------------------------------------------------------------------------- DOCX


def test_docx_keeps_body_order_with_tables_as_rows(tmp_path: Path) -> None:
    doc = load_document(make_docx(tmp_path))
    section = next(s for s in doc.sections if DOCX_BEFORE_TABLE in s.text)
    text = section.text
    assert text.index(DOCX_BEFORE_TABLE) < text.index("A | B | C") < text.index(DOCX_AFTER_TABLE)
    assert "收入 | 支出 | 结余\n100 | 80 | 20" in text
    assert "合并单元格 | 备注" in text.split("\n")  # a merged cell appears once
    assert doc.pages is None and doc.metadata["title"] == "测试文档"


def test_docx_headings_become_heading_paths(tmp_path: Path) -> None:
    doc = load_document(make_docx(tmp_path))
    headings = {s.heading for s in doc.sections}
    assert headings == {
        "第一章 总则",
        "第一章 总则 > 第一节 预算",
        "第二章 检索",
        "第二章 检索 > 自定义样式的小节",  # a style literally named "标题 2"
        "第二章 检索 > 大纲级别标题",  # a Normal paragraph with outline level 1
    }
    under_custom = next(s for s in doc.sections if "这一段位于自定义样式的标题下面。" in s.text)
    assert under_custom.heading == "第二章 检索 > 自定义样式的小节"


def test_damaged_docx_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptDocument, match="damaged"):
        load_document(make_corrupt_docx(tmp_path))
    not_zip = tmp_path / "text.docx"
    not_zip.write_text("plain text, not a zip")
    with pytest.raises(CorruptDocument, match="zip") as caught:
        load_document(not_zip)
    assert "已损坏" in str(caught.value)
    assert str(tmp_path) not in str(caught.value), "the error must not name where the server stores files"


def test_password_protected_docx_is_encrypted(tmp_path: Path) -> None:
    """Word stores a password-protected .docx as an OLE2 container holding an "EncryptedPackage" stream."""
    path = tmp_path / "locked.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504 + "EncryptedPackage".encode("utf-16-le"))
    with pytest.raises(EncryptedDocument, match="encrypted"):
        load_document(path)


# -------------------------------------------------------------------------------------------- text files


def test_gbk_text_is_decoded(tmp_path: Path) -> None:
    doc = load_document(make_gbk_txt(tmp_path))
    assert doc.sections[0].text == GBK_TEXT.strip()
    assert doc.metadata["encoding"] == "gb18030"


def test_big5_text_is_decoded(tmp_path: Path) -> None:
    doc = load_document(make_big5_txt(tmp_path))
    assert doc.sections[0].text == BIG5_TEXT


def test_utf8_bom_and_crlf(tmp_path: Path) -> None:
    doc = load_document(make_utf8_bom_txt(tmp_path))
    assert doc.sections[0].text == "带 BOM 的 UTF-8 文本。\n第二行。"


def test_short_gbk_text_is_not_taken_for_korean(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_bytes("中文测试".encode("gbk"))
    assert load_document(path).sections[0].text == "中文测试"


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  "])
def test_empty_or_blank_text_is_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(EmptyDocument):
        load_document(path)


def test_binary_named_txt_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "binary.txt"
    path.write_bytes(bytes(range(32)) * 64)
    with pytest.raises(CorruptDocument, match="binary"):
        load_document(path)


# ---------------------------------------------------------------------------------------------- Markdown


def test_markdown_sections_carry_heading_paths(tmp_path: Path) -> None:
    doc = load_document(make_markdown(tmp_path))
    assert [s.heading for s in doc.sections] == [
        "用户手册",
        "用户手册 > 安装",
        "用户手册 > 安装 > 配置",
        "用户手册 > 使用",
        "用户手册 > Setext Heading",
    ]
    install = doc.sections[1].text
    assert "# 这一行是代码注释，不是标题\npip install kbqa" in install  # fenced code is not a heading
    assert doc.metadata["title"] == "用户手册"
    assert "title:" not in full_text(doc)  # front matter dropped


# -------------------------------------------------------------------------------------------------- HTML


def test_html_visible_text_only(tmp_path: Path) -> None:
    doc = load_document(make_html(tmp_path))
    text = full_text(doc)
    for hidden in ("SECRET_HEAD_SCRIPT", "SECRET_BODY_SCRIPT", "SECRET_STYLE", "NAV_LINK_TEXT", "NOSCRIPT_TEXT"):
        assert hidden not in text
    assert "HTML_COMMENT_TEXT" not in text
    assert "欢迎使用本地知识库。这里的文字应当被保留。" in text
    assert doc.metadata["title"] == "知识库帮助页面"


def test_html_headings_tables_and_breaks(tmp_path: Path) -> None:
    doc = load_document(make_html(tmp_path))
    by_heading = {s.heading: s.text for s in doc.sections}
    assert by_heading["知识库帮助页面"] == "Intro paragraph before any heading."
    faq = by_heading["帮助中心 > 常见问题"]
    assert "问：文件会上传到云端吗？\n答：不会，所有数据都保存在本机。" in faq
    assert "格式 | 支持\nPDF | 是" in faq
    assert "line one\n    indented line two" in faq  # <pre> keeps its spacing


# ---------------------------------------------------------------------------------------------- dispatch


def test_unsupported_type_lists_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "slides.key"  # Apple Keynote
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(UnsupportedFileType) as caught:
        load_document(path)
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in str(caught.value)


def test_old_doc_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "old.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(UnsupportedFileType, match=r"\.docx"):
        load_document(path)


def test_filename_decides_the_type(tmp_path: Path) -> None:
    stored = tmp_path / "upload-0001.bin"  # uploads are stored under generated names
    stored.write_text("# 标题\n\n正文。", encoding="utf-8")
    doc = load_document(stored, filename="笔记.MD")
    assert doc.sections[0].heading == "标题"
    assert doc.metadata["file_type"] == "markdown"


# ------------------------------------------------------------------------------------ shared real documents


def shared_manifest() -> list[dict]:
    manifest = SHARED_DOCS / "MANIFEST.json"
    if not manifest.is_file():
        return []
    return json.loads(manifest.read_text(encoding="utf-8"))


def shared_doc(name: str) -> Path:
    path = SHARED_DOCS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared documents live in ../shared beside the project root")
    return path


@functools.cache
def load_shared(name: str) -> LoadedDocument:
    """Each shared document is loaded once per run (the table-heavy PDF takes ~2 s)."""
    return load_document(shared_doc(name))


SHARED_PDFS = [entry for entry in shared_manifest() if entry["file"].endswith(".pdf")]


@pytest.mark.skipif(not SHARED_PDFS, reason=f"{SHARED_DOCS}/MANIFEST.json is absent (../shared not mounted)")
@pytest.mark.parametrize("entry", SHARED_PDFS, ids=lambda entry: entry["file"])
def test_shared_pdfs_pages_and_text(entry: dict) -> None:
    doc = load_shared(entry["file"])
    assert doc.pages == entry["pages"]
    pages = [s.page for s in doc.sections]
    assert pages == sorted(set(pages)) and pages[0] >= 1 and pages[-1] <= entry["pages"]
    substantial = [s for s in doc.sections if len(s.text) >= 20]
    assert len(substantial) >= 0.9 * entry["pages"]
    text = full_text(doc)
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) == entry["cjk_chars"]  # no Chinese character lost
    assert sum(not ch.isspace() for ch in text) >= 0.75 * entry["text_chars"]


def test_shared_chinese_report_sentences_tables_and_line_joins() -> None:
    doc = load_shared("zh_gov_shanghai_putuo_finance_bureau_2024_final_accounts.pdf")
    assert page_of(doc, "第二条上海市普陀区财政局是主管全区财政工作的区政府工作部门，为正处级。") == 4
    # wrapped over two lines in the PDF, joined without a break inside the sentence
    assert page_of(doc, "法规、规章和方针、政策；研究拟订本区财政发展战略") == 4
    assert "201 06 01 行政运行 1,511.90 1,511.89 0.01" in doc.sections[7].text.split("\n")
    assert doc.sections[7].page == 8
    prose = next(s.text for s in doc.sections if s.page == 4)
    assert not CJK_BREAK.search(prose), CJK_BREAK.search(prose)


def test_shared_poems_join_wrapped_lines() -> None:
    doc = load_shared("zh_classical_poems_qwen_agent.pdf")
    assert page_of(doc, "鸥鹭飞难辨，沙汀望莫分。") == 1
    assert page_of(doc, "——孟郊《雪》") == 1
    assert page_of(doc, "好雨知时节，当春乃发生。随风潜入夜，润物细无声。") == 3


def test_shared_two_column_register_keeps_sentences_whole() -> None:
    doc = load_shared("en_federal_register_2020_17221.pdf")
    assert page_of(doc, "This proposed AD would also apply to a narrower set of airplanes than the superseded AD") == 1
    page1 = doc.sections[0].text
    assert page1.index("SUMMARY:") < page1.index("DATES:") < page1.index("FOR FURTHER INFORMATION CONTACT")


def test_shared_table_report_keeps_rows() -> None:
    doc = load_shared("en_ca_warn_report_tables.pdf")
    lines = full_text(doc).split("\n")
    assert any(line.endswith("Toyota Motor North America Torrance 3000 Closure Permanent") for line in lines)
    assert "Total 632 53,454 295 11 90 212 12 12" in lines


def test_shared_docx_tables_as_rows_under_headings() -> None:
    doc = load_shared("en_accessible_sample_ragflow.docx")
    simple = next(s for s in doc.sections if s.heading == "Sample Document > Tables > Simple Tables")
    assert simple.text.index("Simple tables have a uniform") < simple.text.index("Screen Reader | Responses | Share")
    assert "JAWS | 853 | 49%" in simple.text.split("\n")
    paper = load_shared("en_autogen_paper_markitdown.docx")
    assert "1 | 2 | 3 | 4 | 5 | 6" in full_text(paper).split("\n")
    assert any(s.heading == "Abstract" for s in paper.sections)
