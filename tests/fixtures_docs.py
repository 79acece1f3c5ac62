"""Generate test documents (PDF, DOCX, Markdown, TXT, HTML) into a folder, plus long texts for the splitter.

Every generator is deterministic and writes real files with the real libraries (fpdf2, pypdf, python-docx), so
the loaders are tested on the same kind of bytes users upload. Chinese PDFs need fonts that fpdf2 can embed:
DejaVu Sans for Latin text (Debian `fonts-dejavu-core`) and Droid Sans Fallback for CJK (Debian
`fonts-droid-fallback`, 1.8 MB); `cjk_fonts()` finds them, and tests skip with the reason when they are absent.
The paths can be overridden with KBQA_TEST_LATIN_FONT / KBQA_TEST_CJK_FONT.
"""

from __future__ import annotations

import io
import os
import random
from datetime import UTC, datetime
from pathlib import Path

from docx import Document
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.oxml.text.paragraph import CT_P
from fpdf import FPDF
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter

LATIN_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
CJK_FONTS = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
)
_FIXED_DATE = datetime(2024, 1, 1, tzinfo=UTC)
FONT_HINT = "apt-get install fonts-dejavu-core fonts-droid-fallback"

# ------------------------------------------------------------------------------------------ known sentences

ZH_PAGE1_SENTENCE = (
    "知识库问答系统先把上传的文档切分成段落，再为每个段落计算向量并建立索引，检索时根据问题找到最相关的段落。"
)
ZH_PAGE1_PARA2 = "第二段从这里开始，它描述了一个独立的主题：本地部署可以保证数据不会离开用户自己的电脑。"
EN_PAGE2_SENTENCE = (
    "The retrieval component ranks every passage by its similarity to the question before the answer is written."
)
EN_HYPHEN_LINES = ("Before answering, the system checks each candidate passage with a simple compo-", "nent test.")
ZH_PAGE3_SENTENCE = "第三页的这句话用于检查页码是否正确，它只出现在第三页上。"
MIXED_PAGE3_SENTENCE = "本系统支持 PDF、Word 和 Markdown 文件，也支持 HTML 网页。"

LEFT_COLUMN = [
    "Alpha column opens the article. The left column explains why local search matters to small teams that "
    "keep their documents private.",
    "Alpha column continues with a second paragraph about indexing speed, batching and the cost of "
    "embedding every chunk on a laptop without a graphics card.",
    "Alpha column ends here with a closing remark about careful evaluation.",
]
RIGHT_COLUMN = [
    "Omega column starts the second half. The right column discusses answer quality, citations and how "
    "readers check each source page.",
    "Omega column adds a paragraph about follow-up questions, which need the earlier turns of the chat to "
    "be understood correctly.",
    "Omega column finishes the page with a short summary of the findings.",
]
ZH_LEFT_COLUMN = "左栏第一句介绍本地知识库的背景。左栏第二句说明为什么中文文档需要按句子切分，而不是按固定长度切分。"
ZH_RIGHT_COLUMN = "右栏第一句讨论检索质量的评估方法。右栏第二句说明引用来源能够帮助读者核对答案是否可靠。"

DOCX_BEFORE_TABLE = "表格之前的段落说明了预算的来源。"
DOCX_AFTER_TABLE = "表格之后的段落总结了支出情况。"
DOCX_TABLE = [["A", "B", "C"], ["收入", "支出", "结余"], ["100", "80", "20"]]

GBK_TEXT = (
    "第一章 总则\n\n"
    "本办法适用于镕基公司的文档管理。喆哲负责知识库的日常维护，并定期检查索引是否完整。\n"
    "所有上传的文件都应当使用简体中文或英文编写。\n"
)
BIG5_TEXT = "繁體中文文件：臺灣的使用者上傳了這份說明，系統應當正確解碼並建立索引。"

MARKDOWN_TEXT = """---
title: 用户手册
---
# 用户手册

本手册介绍知识库问答系统的安装和使用。

## 安装

运行下面的命令安装依赖：

```bash
# 这一行是代码注释，不是标题
pip install kbqa
```

### 配置

在 configs 目录中修改默认设置。

## 使用

上传文档后即可提问。

Setext Heading
--------------

Text under a setext heading.
"""

HTML_TEXT = """<!DOCTYPE html>
<html lang="zh">
<head>
  <meta charset="utf-8">
  <title>知识库帮助页面</title>
  <style>body { color: red; } .SECRET_STYLE { display: none; }</style>
  <script>var SECRET_HEAD_SCRIPT = "should never appear";</script>
</head>
<body>
  <nav><a href="/">首页</a> | <a href="/docs">NAV_LINK_TEXT</a></nav>
  <p>Intro paragraph before any heading.</p>
  <h1>帮助中心</h1>
  <p>欢迎使用<b>本地知识库</b>。这里的文字应当被保留。</p>
  <script type="text/javascript">document.write("SECRET_BODY_SCRIPT");</script>
  <!-- HTML_COMMENT_TEXT -->
  <h2>常见问题</h2>
  <p>问：文件会上传到云端吗？<br>答：不会，所有数据都保存在本机。</p>
  <table>
    <tr><th>格式</th><th>支持</th></tr>
    <tr><td>PDF</td><td>是</td></tr>
  </table>
  <pre>line one
    indented line two</pre>
  <noscript>NOSCRIPT_TEXT</noscript>
</body>
</html>
"""

_ZH_SENTENCES = [
    "知识库问答系统把用户上传的文档切分成较小的片段。",
    "每个片段都会被编码成向量，并与原文一起保存在向量数据库中。",
    "当用户提出问题时，系统先检索最相关的片段，再把它们交给大语言模型生成答案。",
    "中文文本没有空格，因此不能依靠空格来判断词语和句子的边界。",
    "如果切分时在句子中间断开，检索到的片段就会缺少关键信息，答案的质量也会随之下降。",
    "为了避免这种情况，切分器优先在段落、换行和句末标点处断开。",
    "句号、问号、感叹号和分号都是很好的断点！",
    "你知道为什么重叠部分也很重要吗？",
    "重叠可以让相邻的片段共享上下文，使跨越边界的信息不至于完全丢失；但是重叠太多会浪费存储空间。",
    "在政府公开的决算报告中，经常出现很长的句子，其中包含大量的逗号、顿号和括号，例如“三公”经费、"
    "一般公共预算财政拨款支出以及政府性基金预算财政拨款收入支出等项目。",
    "本地部署意味着所有数据都保存在用户自己的机器上。",
    "评估检索效果时，我们统计正确片段出现在前五个结果中的比例。",
    "系统还会记录每个文档的页码和标题，方便用户核对答案的来源。",
    "这句话比较短。",
    "长句子的例子是这样的：在一个普通的笔记本电脑上，没有显卡的情况下，编码一千个片段大约需要一到两分钟，"
    "而检索一次只需要几毫秒，因此大部分时间都花在了导入文档的阶段，而不是回答问题的阶段。",
]


# ----------------------------------------------------------------------------------------------- fonts


def _first_existing(env_var: str, candidates: tuple[str, ...]) -> Path | None:
    override = os.environ.get(env_var)
    for candidate in (override, *candidates) if override else candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def cjk_fonts() -> tuple[Path, Path] | None:
    """(Latin TTF, CJK TTF) for fpdf2, or None when either is missing (see FONT_HINT)."""
    latin = _first_existing("KBQA_TEST_LATIN_FONT", LATIN_FONTS)
    cjk = _first_existing("KBQA_TEST_CJK_FONT", CJK_FONTS)
    return (latin, cjk) if latin and cjk else None


def _unicode_pdf() -> FPDF:
    fonts = cjk_fonts()
    if fonts is None:
        raise FileNotFoundError(f"No CJK-capable fonts for fpdf2; install them with: {FONT_HINT}")
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_font("latin", fname=str(fonts[0]))
    pdf.add_font("cjk", fname=str(fonts[1]))
    pdf.set_fallback_fonts(["cjk"])
    pdf.set_font("latin", size=12)
    return pdf


def _save(pdf: FPDF, path: Path) -> Path:
    pdf.set_creation_date(_FIXED_DATE)  # identical bytes on every run
    path.write_bytes(bytes(pdf.output()))
    return path


# ------------------------------------------------------------------------------------------------- PDFs


def make_multipage_pdf(folder: Path) -> Path:
    """Three pages: Chinese paragraphs that wrap mid-sentence (page 1), English with a line-end hyphen (page 2),
    mixed Chinese/English (page 3). Needs the fonts from cjk_fonts()."""
    pdf = _unicode_pdf()
    pdf.add_page()
    pdf.multi_cell(0, 8, "第一页：系统简介", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.multi_cell(
        0,
        8,
        ZH_PAGE1_SENTENCE * 1 + "它适合在没有网络的环境中使用，也适合处理包含敏感信息的内部资料。",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(6)
    pdf.multi_cell(0, 8, ZH_PAGE1_PARA2, new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    pdf.multi_cell(0, 8, "Page two: retrieval", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.multi_cell(
        0,
        8,
        EN_PAGE2_SENTENCE + " It uses both dense vectors and keyword statistics, and it "
        "returns the best five passages with their scores.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(6)
    for line in EN_HYPHEN_LINES:
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    pdf.multi_cell(0, 8, MIXED_PAGE3_SENTENCE, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.multi_cell(0, 8, ZH_PAGE3_SENTENCE, new_x="LMARGIN", new_y="NEXT")
    return _save(pdf, folder / "multipage_zh_en.pdf")


def make_two_column_pdf(folder: Path, chinese: bool = False) -> Path:
    """One page of two-column prose written column by column, as typesetters do, under a full-width title."""
    if chinese:
        pdf = _unicode_pdf()
        left, right = [ZH_LEFT_COLUMN] * 3, [ZH_RIGHT_COLUMN] * 3
    else:
        pdf = FPDF(format="A4")
        pdf.set_font("helvetica", size=11)
        left, right = LEFT_COLUMN, RIGHT_COLUMN
    pdf.add_page()
    pdf.cell(0, 10, "Two Column Report" if not chinese else "双栏报告", align="C", new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 4
    for x, paragraphs in ((10.0, left), (110.0, right)):
        pdf.set_xy(x, top)
        for paragraph in paragraphs:
            pdf.set_x(x)
            pdf.multi_cell(90, 6, paragraph, new_x="LEFT", new_y="NEXT")
            pdf.ln(3)
    name = "two_column_zh.pdf" if chinese else "two_column.pdf"
    return _save(pdf, folder / name)


def make_pages_pdf(folder: Path, name: str, pages: list[str]) -> Path:
    """A Chinese-capable PDF with one page per text. Needs the fonts from cjk_fonts()."""
    pdf = _unicode_pdf()
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    return _save(pdf, folder / name)


def make_landscape_pdf(folder: Path, name: str, pages: list[str]) -> Path:
    """Landscape pages as a scanner or LaTeX's pdflscape writes them: portrait pages whose text is drawn turned a
    quarter counter-clockwise, with /Rotate 90 so that a viewer shows them upright."""
    pdf = _unicode_pdf()
    for text in pages:
        pdf.add_page()
        with pdf.rotation(90, x=105, y=148):
            pdf.set_xy(40, 140)
            pdf.multi_cell(190, 8, text, new_x="LMARGIN", new_y="NEXT")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(bytes(pdf.output()))))
    for page in writer.pages:
        page.rotate(90)
    path = folder / name
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def make_simple_pdf(folder: Path, name: str = "simple.pdf", pages: int = 2) -> Path:
    """An English-only PDF in a core font (no font files needed)."""
    pdf = FPDF(format="A4")
    pdf.set_font("helvetica", size=12)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Simple page {number}. This page exists to test opening, encryption and damage.")
    return _save(pdf, folder / name)


def make_encrypted_pdf(folder: Path, user_password: str = "secret") -> Path:
    """AES-256 encrypted copy of a simple PDF; with user_password="" it opens without a password (owner-only)."""
    source = make_simple_pdf(folder, "plain_for_encryption.pdf")
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password="owner-pass", algorithm="AES-256")
    path = folder / ("encrypted.pdf" if user_password else "owner_only_encrypted.pdf")
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def make_corrupt_pdf(folder: Path) -> Path:
    """A valid PDF cut to its first 40% of bytes (an interrupted download)."""
    data = make_simple_pdf(folder, "whole.pdf", pages=3).read_bytes()
    path = folder / "truncated.pdf"
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def make_image_only_pdf(folder: Path) -> Path:
    """A "scanned" page: text drawn into a picture, no text layer; plus a page with only vector shapes."""
    image = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(image).text((20, 80), "SCANNED PAGE WITHOUT TEXT LAYER", fill="black")
    image_path = folder / "scan.png"
    image.save(image_path)
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.image(str(image_path), x=10, y=10, w=180)
    pdf.add_page()
    pdf.rect(20, 20, 100, 50)
    return _save(pdf, folder / "image_only.pdf")


# ------------------------------------------------------------------------------------------------- DOCX


def make_docx(folder: Path) -> Path:
    """Headings (built-in "Heading N", a custom "标题 2" style, an outline level), paragraphs, and a table
    between two paragraphs, with a horizontally merged cell."""
    document = Document()
    document.core_properties.title = "测试文档"
    document.add_heading("第一章 总则", level=1)
    document.add_paragraph("本章说明知识库的基本概念。")
    document.add_heading("第一节 预算", level=2)
    document.add_paragraph(DOCX_BEFORE_TABLE)
    table = document.add_table(rows=len(DOCX_TABLE) + 1, cols=3)
    for r, row in enumerate(DOCX_TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    merged = table.cell(len(DOCX_TABLE), 0).merge(table.cell(len(DOCX_TABLE), 1))
    merged.text = "合并单元格"
    table.cell(len(DOCX_TABLE), 2).text = "备注"
    document.add_paragraph(DOCX_AFTER_TABLE)

    document.add_heading("第二章 检索", level=1)
    custom = document.styles.add_style("标题 2", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Normal"]
    document.add_paragraph("自定义样式的小节", style="标题 2")
    document.add_paragraph("这一段位于自定义样式的标题下面。")
    outlined = document.add_paragraph("大纲级别标题")
    _set_outline_level(outlined._p, 1)
    document.add_paragraph("这一段位于大纲级别标题下面。")
    path = folder / "headings_table.docx"
    document.save(str(path))
    return path


def make_paragraphs_docx(folder: Path, name: str, heading: str, paragraphs: list[str]) -> Path:
    """A DOCX with one heading and the paragraphs under it."""
    document = Document()
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    path = folder / name
    document.save(str(path))
    return path


def _set_outline_level(paragraph_element: CT_P, level: int) -> None:
    """Give a Normal paragraph an outline level (0 = level 1), as Word does for headings without a style."""
    ppr = paragraph_element.get_or_add_pPr()
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), str(level))
    ppr.append(outline)


def make_corrupt_docx(folder: Path) -> Path:
    """A .docx that is a zip missing its main document part."""
    import zipfile

    path = folder / "broken.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    return path


# -------------------------------------------------------------------------------------------- text files


def make_gbk_txt(folder: Path) -> Path:
    path = folder / "gbk.txt"
    path.write_bytes(GBK_TEXT.encode("gbk"))
    return path


def make_big5_txt(folder: Path) -> Path:
    path = folder / "big5.txt"
    path.write_bytes(BIG5_TEXT.encode("big5"))
    return path


def make_utf8_bom_txt(folder: Path) -> Path:
    path = folder / "bom.txt"
    path.write_bytes("\ufeff带 BOM 的 UTF-8 文本。\r\n第二行。\r\n".encode())
    return path


def make_markdown(folder: Path) -> Path:
    path = folder / "manual.md"
    path.write_text(MARKDOWN_TEXT, encoding="utf-8")
    return path


def make_html(folder: Path) -> Path:
    path = folder / "help.html"
    path.write_text(HTML_TEXT, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ splitter text


def make_large_chinese_text(paragraphs: int = 80, seed: int = 7) -> str:
    """Deterministic Chinese prose: paragraphs of 2-14 sentences drawn from a pool, many over 500 characters."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        count = rng.randint(2, 14)
        out.append("".join(rng.choice(_ZH_SENTENCES) for _ in range(count)))
    return "\n\n".join(out)


def make_numbered_chinese_text(paragraphs: int, topic: str = "后台索引") -> bytes:
    """A long UTF-8 text file whose every paragraph is numbered, so no two chunks are alike: what a large upload
    that takes a while to index looks like. `topic` names what the test uses it for (it is in every paragraph)."""
    return "\n\n".join(
        f"第{i}段：{topic}测试的段落，编号为{i}。港口城市的第{i}号码头停靠着渔船，清晨的集市上摆满了海鲜，"
        f"街道两旁种着梧桐树，每到秋天落叶满地。居民们在这里散步、聊天、喝茶，生活节奏缓慢而惬意。"
        for i in range(paragraphs)
    ).encode()


def make_unbroken_chinese_text(sentences: int = 300, seed: int = 11) -> str:
    """One huge paragraph with no line breaks: the case where default separators cut mid-sentence."""
    rng = random.Random(seed)
    return "".join(rng.choice(_ZH_SENTENCES) for _ in range(sentences))
