"""Generate "scanned" documents for the OCR tests and scripts/bench_ocr.py: Chinese and English text rendered into
pictures with the fonts the project installs (tests/fixtures_docs.py: DejaVu Sans for Latin, Droid Sans Fallback for
CJK), and those pictures wrapped as image-only PDFs, mixed PDFs (a text page and a scanned page), DOCX and PPTX
files. Every generator is deterministic; the text each picture holds is returned beside it, so OCR is scored against
the truth (`char_accuracy`).
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import docx
import pptx
from docx.shared import Cm
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from pptx.util import Emu
from rapidfuzz.distance import Levenshtein

from tests.fixtures_docs import FONT_HINT, cjk_fonts

ZH_PARAGRAPHS = (
    "知识库问答系统先把上传的文档切分成段落，再为每个段落计算向量并建立索引，检索时根据问题找到最相关的段落。",
    "扫描件没有文字层，系统把每一页渲染成图片，再用光学字符识别读出其中的文字，识别结果和普通文本一样被切分和编码。",
    "本地部署可以保证数据不会离开用户自己的电脑，适合处理合同、病历和财务报表等包含敏感信息的内部资料。",
    "每一页的识别置信度都会被记录下来，用户可以据此判断识别结果是否可靠，必要时重新扫描质量较差的页面。",
    "二零二四年第三季度，华东区的销售额比去年同期增长了百分之十二，其中线上渠道贡献了将近一半的增量。",
    "会议决定从下个月起，所有报销单据必须在费用发生后三十天内提交，逾期的单据需要部门负责人另行审批。",
)
EN_PARAGRAPHS = (
    "The retrieval component ranks every passage by its similarity to the question before the answer is written.",
    "Scanned pages carry no text layer, so each page is rendered to an image and read by optical character "
    "recognition; the confidence of every page is recorded so that a person can judge how far to trust it.",
    "In the third quarter, revenue in the eastern region grew by twelve percent over the same period last year, "
    "and online channels contributed nearly half of that growth.",
    "From next month on, every expense claim must be filed within thirty days of the expense; late claims need "
    "the approval of the head of the department.",
)
# Sentences that exist only inside a picture: a search for one must find the picture's page or slide.
ZH_PICTURE_SENTENCE = "图片里的这句话说明仓库的温度必须保持在十八度以下。"
EN_PICTURE_SENTENCE = "Only the picture says that the warehouse stays below eighteen degrees."
ZH_SCAN_SENTENCE = "扫描页上写着：图书馆每周二下午闭馆打扫卫生，请读者提前归还借阅的书籍。"
ZH_MIXED_SENTENCE = "第二页是扫描的：停车场的月卡价格从三百元调整为三百五十元。"
ZH_DOCX_SENTENCE = "这张截图说明食堂的早餐供应时间改为七点到九点。"
ZH_PNG_SENTENCE = "照片中的告示：电梯将于周六上午进行年度检修。"

A4_INCHES = (8.27, 11.69)


@dataclass(frozen=True)
class Rendered:
    image: Image.Image
    text: str  # the text drawn, line by line


def _fonts(size_px: int) -> tuple[ImageFont.FreeTypeFont, ImageFont.FreeTypeFont]:
    fonts = cjk_fonts()
    if fonts is None:
        raise FileNotFoundError(f"No CJK-capable fonts; install them with: {FONT_HINT}")
    return ImageFont.truetype(str(fonts[0]), size_px), ImageFont.truetype(str(fonts[1]), size_px)


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def _tokens(text: str) -> list[str]:
    """Each CJK character alone; a Latin word together with the space after it."""
    tokens: list[str] = []
    for ch in text:
        if _is_cjk(ch) or not tokens or _is_cjk(tokens[-1][-1]) or tokens[-1].endswith(" "):
            tokens.append(ch)
        else:
            tokens[-1] += ch
    return tokens


def _width(text: str, latin: ImageFont.FreeTypeFont, cjk: ImageFont.FreeTypeFont) -> float:
    return sum((cjk if _is_cjk(ch) else latin).getlength(ch) for ch in text)


def _wrap(text: str, width: float, latin: ImageFont.FreeTypeFont, cjk: ImageFont.FreeTypeFont) -> list[str]:
    lines, line = [], ""
    for token in _tokens(text):
        if line and _width((line + token).rstrip(), latin, cjk) > width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line += token
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _draw_line(draw: ImageDraw.ImageDraw, xy: tuple[float, float], line: str, fonts: tuple) -> None:
    """Each character in the font that has it: Droid Sans Fallback carries no Latin letters."""
    x, y = xy
    latin, cjk = fonts
    for ch in line:
        font = cjk if _is_cjk(ch) else latin
        draw.text((x, y), ch, font=font, fill=0)
        x += font.getlength(ch)


def render_text(
    paragraphs: tuple[str, ...] | list[str],
    size: tuple[float, float] = A4_INCHES,
    dpi: int = 200,
    points: float = 12,
    margin_inches: float = 1.0,
) -> Rendered:
    """Paragraphs typeset on a white page of `size` inches at `dpi`, in a `points` font; text that does not fit
    the page is left out (and out of the returned text)."""
    width, height = round(size[0] * dpi), round(size[1] * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    px = round(points / 72 * dpi)
    fonts = _fonts(px)
    margin = round(margin_inches * dpi)
    y, drawn = margin, []
    for paragraph in paragraphs:
        for line in _wrap(paragraph, width - 2 * margin, *fonts):
            if y + px > height - margin:
                return Rendered(image, "\n".join(drawn))
            _draw_line(draw, (margin, y), line, fonts)
            drawn.append(line)
            y += round(px * 1.5)
        y += px // 2
    return Rendered(image, "\n".join(drawn))


def full_page(language: str, dpi: int = 200, start: int = 0) -> Rendered:
    """An A4 page filled with body text in 12 pt: Chinese ("zh"), English ("en") or both, paragraph by paragraph,
    from paragraph `start` on (pages with different `start` begin differently)."""
    paragraphs = {"zh": ZH_PARAGRAPHS, "en": EN_PARAGRAPHS, "mixed": _interleave(ZH_PARAGRAPHS, EN_PARAGRAPHS)}
    chosen = list(paragraphs[language])
    shift = start % len(chosen)
    return render_text((chosen[shift:] + chosen[:shift]) * 8, dpi=dpi)


def _interleave(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    return [p for pair in zip(a, b, strict=False) for p in pair]


def picture(text: str, dpi: int = 200, points: float = 14) -> Rendered:
    """A banner-sized picture (6 x 1.5 inches) holding `text`, as a slide or a Word file would carry."""
    return render_text([text], size=(6.0, 1.5), dpi=dpi, points=points, margin_inches=0.3)


def normalized(text: str) -> str:
    """Text compared without whitespace (OCR places spaces between CJK characters as it likes) and with full-width
    forms folded (a "，" read as "," is the same character to a reader)."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def char_accuracy(truth: str, read: str) -> float:
    """1 - (edit distance / length of the truth), over `normalized` text."""
    want, got = normalized(truth), normalized(read)
    return 1 - Levenshtein.distance(want, got) / max(len(want), 1)


# ------------------------------------------------------------------------------------------------- files


def save_image(rendered: Rendered, path: Path, **options: object) -> Path:
    rendered.image.save(path, **options)
    return path


def image_only_pdf(pages: list[Image.Image], path: Path, dpi: int = 200) -> Path:
    """Pictures as the pages of a PDF with no text layer, as a scanner writes them (JPEG in the PDF)."""
    first, *rest = [page.convert("RGB") for page in pages]
    first.save(path, format="PDF", save_all=True, append_images=rest, resolution=dpi, quality=90)
    return path


def mixed_pdf(text_page: str, scanned: Image.Image, path: Path) -> Path:
    """Page 1 has a text layer holding `text_page`; page 2 is the picture `scanned`, full page, and nothing else."""
    return pages_pdf([text_page, scanned], path)


def pages_pdf(pages: list[str | Image.Image], path: Path) -> Path:
    """An A4 PDF with a page per entry: a text (typeset, with a text layer) or a picture (full page, no text)."""
    fonts = cjk_fonts()
    if fonts is None:
        raise FileNotFoundError(f"No CJK-capable fonts for fpdf2; install them with: {FONT_HINT}")
    pdf = FPDF(format="A4")
    pdf.add_font("latin", fname=str(fonts[0]))
    pdf.add_font("cjk", fname=str(fonts[1]))
    pdf.set_fallback_fonts(["cjk"])
    pdf.set_font("latin", size=12)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.multi_cell(0, 8, page, new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.image(page.convert("RGB"), x=0, y=0, w=210, h=297)
    path.write_bytes(bytes(pdf.output()))
    return path


def _png(image: Image.Image) -> io.BytesIO:
    stream = io.BytesIO()
    image.save(stream, format="PNG")
    stream.seek(0)
    return stream


def docx_with_picture(intro: str, image: Image.Image, path: Path) -> Path:
    """A Word file: a paragraph of text, then a picture whose text exists nowhere else."""
    return docx_with_pictures([intro, image], path)


def docx_with_pictures(body: list[str | Image.Image], path: Path) -> Path:
    """A Word file of a paragraph per text and a picture per image of `body`, in that order (python-docx stores a
    picture shown twice once)."""
    document = docx.Document()
    for part in body:
        if isinstance(part, str):
            document.add_paragraph(part)
        else:
            document.add_picture(_png(part), width=Cm(15))
    document.save(str(path))
    return path


def pptx_with_picture(titles: list[str], image: Image.Image, picture_slide: int, path: Path) -> Path:
    """One titled slide per entry of `titles`; slide `picture_slide` (1-based) also carries the picture."""
    slides = [(title, [image] if number == picture_slide else []) for number, title in enumerate(titles, start=1)]
    return pptx_with_pictures(slides, path)


def pptx_with_pictures(slides: list[tuple[str | None, list[Image.Image]]], path: Path) -> Path:
    """A slide per (title, pictures): titled (title-only layout) or not (blank layout), its banner-sized pictures
    (at most two) one below the other."""
    presentation = pptx.Presentation()
    for title, pictures in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[5 if title is not None else 6])
        if title is not None:
            slide.shapes.title.text = title
        for row, image in enumerate(pictures):
            slide.shapes.add_picture(_png(image), Emu(457200), Emu(2286000 * (row + 1)), width=Emu(8229600))
    presentation.save(str(path))
    return path


def blank_scanned_pdf(folder: Path, pages: int = 3) -> Path:
    """A scanner's output for `pages` empty sheets: full-page pictures of white paper with a scanner's light noise."""
    sheet = Image.effect_noise((850, 1100), 6).point(lambda v: 255 - abs(v - 128) // 8)
    return image_only_pdf([sheet] * pages, folder / "blank_scans.pdf", dpi=100)


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid grayscale PNG of side x side white pixels (400 MB decoded at 20000) in a few hundred kilobytes,
    written row by row so that making it allocates nothing like that."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" + b"\xff" * side  # filter type 0, then the row's pixels
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
