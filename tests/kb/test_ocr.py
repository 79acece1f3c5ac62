"""Text in pictures read by OCR (Debian's Tesseract): image files, scanned and mixed PDFs, pictures in Word and
PowerPoint files, all generated here from Chinese and English text rendered with the project's fonts. Accuracy is
scored against the text drawn; each document says how its pages were read (`report`) and each Section whether OCR
read it. Bad pictures (a pixel bomb, a truncated PNG, a PDF of blank scans) and OCR switched off, past its time
limit or without its language pack end with a reason a person understands. Through the API, a sentence that
exists only inside a picture is found on its page or slide."""

from __future__ import annotations

import io
import shutil
import threading
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rapidfuzz import fuzz

from app.kb.documents import CorruptDocument, DocumentTooLarge, LoadedDocument, NothingReadable
from app.kb.loaders import SUPPORTED_EXTENSIONS, LoadLimits, load_document
from app.kb.loaders.ocr import PictureReader, Recognised
from tests import fixtures_ocr as fo
from tests.conftest import create_kb, upload, upload_ready, wait_documents
from tests.fixtures_docs import FONT_HINT, cjk_fonts
from tests.kb.test_hostile_files import MEMORY_BOUND, MIB, PeakRss

pytestmark = [
    pytest.mark.skipif(cjk_fonts() is None, reason=f"the pictures are drawn with CJK fonts: {FONT_HINT}"),
    pytest.mark.skipif(shutil.which("tesseract") is None, reason="OCR needs Tesseract: bash scripts/setup.sh"),
]
DEFAULTS = LoadLimits.from_settings()
OFF = replace(DEFAULTS, ocr=False)
# Measured on these renders with Tesseract 5.3 (chi_sim+eng): Chinese 0.994, English 1.000, mixed 0.998, the
# Chinese banner 0.96 (one character of 25); the floors leave room for a machine's rounding.
PAGE_FLOOR = 0.97
PICTURE_FLOOR = 0.9
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"]


def ocr_text(doc: LoadedDocument) -> str:
    return "\n".join(s.text for s in doc.sections if s.ocr)


# ------------------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize(("language", "suffix"), [("zh", ".png"), ("en", ".jpg"), ("mixed", ".png")])
def test_a_full_page_picture_is_read_accurately(tmp_path: Path, language: str, suffix: str) -> None:
    rendered = fo.full_page(language)
    path = fo.save_image(rendered, tmp_path / f"page{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
    doc = load_document(path)
    assert fo.char_accuracy(rendered.text, ocr_text(doc)) >= PAGE_FLOOR
    assert [(s.page, s.ocr) for s in doc.sections] == [(None, True)]
    assert (doc.report.ocr_pages, doc.report.text_pages, doc.report.empty_pages) == (1, 0, [])
    assert doc.report.ocr_confidence is not None and doc.report.ocr_confidence > 0.8


@pytest.mark.parametrize("suffix", IMAGE_TYPES)
def test_every_image_type_is_registered_and_read(tmp_path: Path, suffix: str) -> None:
    assert suffix in SUPPORTED_EXTENSIONS
    rendered = fo.picture(fo.EN_PICTURE_SENTENCE)
    path = fo.save_image(rendered, tmp_path / f"banner{suffix}")
    assert fo.char_accuracy(rendered.text, ocr_text(load_document(path))) >= PICTURE_FLOOR


def test_chinese_in_a_small_picture_is_read(tmp_path: Path) -> None:
    rendered = fo.picture(fo.ZH_PICTURE_SENTENCE)
    doc = load_document(fo.save_image(rendered, tmp_path / "横幅.png"))
    assert fo.char_accuracy(rendered.text, ocr_text(doc)) >= PICTURE_FLOOR


def test_a_transparent_picture_is_read_on_white(tmp_path: Path) -> None:
    """Black text on a transparent background (a PNG cut from a slide): read as if on white paper."""
    rendered = fo.picture(fo.EN_PICTURE_SENTENCE)
    clear = Image.new("LA", rendered.image.size, (0, 0))
    clear.putalpha(rendered.image.point(lambda v: 255 - v))
    doc = load_document(fo.save_image(fo.Rendered(clear, rendered.text), tmp_path / "clear.png"))
    assert fo.char_accuracy(rendered.text, ocr_text(doc)) >= PICTURE_FLOOR


def test_each_page_of_a_multi_page_tiff_is_a_page(tmp_path: Path) -> None:
    first, second = fo.picture(fo.EN_PICTURE_SENTENCE), fo.picture(fo.ZH_PICTURE_SENTENCE)
    path = tmp_path / "fax.tiff"
    first.image.save(path, save_all=True, append_images=[Image.new("L", (600, 300), 255), second.image])
    done: list[tuple[int, int]] = []
    doc = load_document(path, on_page=lambda *step: done.append(step))
    assert [s.page for s in doc.sections] == [1, 3] and doc.pages == 3
    assert fo.char_accuracy(second.text, doc.sections[1].text) >= PICTURE_FLOOR
    assert doc.report.empty_pages == [2] and done == [(1, 3), (2, 3), (3, 3)]


# ------------------------------------------------------------------------------------------------ PDFs


def test_an_image_only_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    zh, en = fo.full_page("zh", dpi=300), fo.render_text(fo.EN_PARAGRAPHS, dpi=300)
    done: list[tuple[int, int]] = []
    path = fo.image_only_pdf([zh.image, en.image], tmp_path / "scan.pdf", dpi=300)
    doc = load_document(path, on_page=lambda *step: done.append(step))
    assert [(s.page, s.ocr) for s in doc.sections] == [(1, True), (2, True)]
    assert fo.char_accuracy(zh.text, doc.sections[0].text) >= PAGE_FLOOR
    assert fo.char_accuracy(en.text, doc.sections[1].text) >= PAGE_FLOOR
    assert (doc.report.text_pages, doc.report.ocr_pages, doc.report.empty_pages) == (0, 2, [])
    assert len(doc.report.ocr_confidences) == 2 and done == [(1, 2), (2, 2)]


def _paragraph_scans(folder: Path, pages: int, blank: int | None = None) -> Path:
    """An image-only PDF of `pages` pages, a different paragraph on each, page `blank` (1-based) left blank."""
    images = [fo.render_text([(fo.ZH_PARAGRAPHS + fo.EN_PARAGRAPHS)[n % 8]]).image for n in range(pages)]
    if blank is not None:
        images[blank - 1] = Image.new("L", images[0].size, 255)
    return fo.image_only_pdf(images, folder / f"{pages}-scans.pdf")


def test_pages_read_on_two_workers_are_those_read_on_one_in_page_order(tmp_path: Path) -> None:
    path = _paragraph_scans(tmp_path, 6, blank=4)
    (one, one_done), (two, two_done) = _read_with(path, 1), _read_with(path, 2)
    assert [(s.page, s.text, s.ocr) for s in two.sections] == [(s.page, s.text, s.ocr) for s in one.sections]
    assert [s.page for s in two.sections] == [1, 2, 3, 5, 6]
    assert two.report == one.report and two.report.empty_pages == [4]
    assert two_done == one_done == [(n, 6) for n in range(1, 7)]


def _read_with(path: Path, workers: int) -> tuple[LoadedDocument, list[tuple[int, int]]]:
    """The document read by `workers` OCR workers, and each (pages done, pages) reported while it was read."""
    done: list[tuple[int, int]] = []
    doc = load_document(path, limits=replace(DEFAULTS, ocr_workers=workers), on_page=lambda *step: done.append(step))
    return doc, done


def test_stopping_after_the_second_page_leaves_the_queued_pages_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller stops the reading (a document deleted) as the second page is done: the pages not begun are
    never read, and no OCR thread outlives the load."""
    pages, recognised = 12, []
    real = PictureReader.recognise

    def counted(reader: PictureReader, image: Image.Image) -> Recognised:
        recognised.append(image.size)
        return real(reader, image)

    def stop_after_two(done: int, _total: int) -> None:
        if done == 2:
            raise _Stopped

    path = _paragraph_scans(tmp_path, pages)
    monkeypatch.setattr(PictureReader, "recognise", counted)
    with pytest.raises(_Stopped):
        load_document(path, limits=replace(DEFAULTS, ocr_workers=2), on_page=stop_after_two)
    assert 2 <= len(recognised) <= 2 + 2 * 2 < pages  # the two pages given, and at most the four read ahead
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("ocr-page")]


class _Stopped(Exception):
    pass


class _Overlap:
    """Put in place of PictureReader.recognise, it calls it unchanged and records the most calls running at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.running = self.most = 0
        real = PictureReader.recognise

        def recognise(reader: PictureReader, image: Image.Image) -> Recognised:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                return real(reader, image)
            finally:
                with self.lock:
                    self.running -= 1

        monkeypatch.setattr(PictureReader, "recognise", recognise)


_PICTURE_TEXTS = (
    fo.ZH_PICTURE_SENTENCE,
    fo.EN_PICTURE_SENTENCE,
    fo.ZH_DOCX_SENTENCE,
    fo.ZH_PNG_SENTENCE,
    fo.ZH_SCAN_SENTENCE,
    fo.ZH_MIXED_SENTENCE,
)


def _pictures_docx(folder: Path) -> Path:
    """Text around three pictures, the first shown twice (read once), a bullet-sized one (skipped), a blank one."""
    first, second, third = (fo.picture(text).image for text in _PICTURE_TEXTS[:3])
    tiny, blank = Image.new("L", (8, 8), 0), Image.new("L", first.size, 255)
    body = ["图片前面的段落。", first, "第二段文字。", second, first, tiny, blank, third]
    return fo.docx_with_pictures(body, folder / "图片.docx")


def _pictures_pptx(folder: Path) -> Path:
    """Two pictures on the first slide, none on the second, one alone on an untitled third, the first again last."""
    first, second, third = (fo.picture(text).image for text in _PICTURE_TEXTS[3:])
    slides = [("概况", [first, second]), ("仓库", []), (None, [third]), ("结语", [first])]
    return fo.pptx_with_pictures(slides, folder / "图片.pptx")


def _pictures_tiff(folder: Path) -> Path:
    first, second, third = (fo.picture(text).image for text in _PICTURE_TEXTS[:3])
    first.save(folder / "fax.tiff", save_all=True, append_images=[second, third])
    return folder / "fax.tiff"


@pytest.mark.parametrize(
    ("make", "texts", "counts"),
    [
        pytest.param(_pictures_docx, _PICTURE_TEXTS[:3], (0, 0, 3, 1), id="docx"),
        pytest.param(_pictures_pptx, ("\n".join(_PICTURE_TEXTS[3:5]), _PICTURE_TEXTS[5]), (3, 0, 3, 0), id="pptx"),
        pytest.param(_pictures_tiff, _PICTURE_TEXTS[:3], (0, 3, 0, 0), id="tiff"),
    ],
)
def test_pictures_read_on_three_workers_are_those_read_on_one_in_order(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], Path],
    texts: tuple[str, ...],
    counts: tuple[int, int, int, int],
) -> None:
    """The pictures of a Word or PowerPoint file and the pages of a TIFF are recognised three at once, and the
    document comes out as read one at a time: the same sections in the same order, the same report and progress.
    `texts`: what each OCR Section holds (a slide's pictures share one); `counts`: text pages, OCR pages, pictures
    read and pictures skipped."""
    path = make(tmp_path)
    overlap = _Overlap(monkeypatch)
    one, one_done = _read_with(path, 1)
    assert overlap.most == 1
    three, three_done = _read_with(path, 3)
    assert overlap.most >= 2, "no two pictures were recognised at once"
    assert [(s.page, s.heading, s.text, s.ocr) for s in three.sections] == [
        (s.page, s.heading, s.text, s.ocr) for s in one.sections
    ]
    assert three.report == one.report and three_done == one_done
    report = one.report
    assert (report.text_pages, report.ocr_pages, report.ocr_pictures, report.skipped_pictures) == counts
    read = [s.text for s in one.sections if s.ocr]
    assert len(read) == len(texts)
    assert all(fo.char_accuracy(truth, got) >= PICTURE_FLOOR for truth, got in zip(texts, read, strict=True))


def test_a_mixed_pdf_reads_its_text_page_from_the_text_layer_and_its_scan_by_ocr(tmp_path: Path) -> None:
    scan = fo.render_text([fo.ZH_MIXED_SENTENCE, *fo.EN_PARAGRAPHS[:2]])
    text_page = "第一页有文字层：" + fo.ZH_PARAGRAPHS[0]
    doc = load_document(fo.mixed_pdf(text_page, scan.image, tmp_path / "mixed.pdf"))
    assert [(s.page, s.ocr) for s in doc.sections] == [(1, False), (2, True)]
    assert "".join(doc.sections[0].text.split()) == text_page
    assert fo.char_accuracy(scan.text, doc.sections[1].text) >= PAGE_FLOOR
    assert (doc.report.text_pages, doc.report.ocr_pages) == (1, 1)


def test_with_ocr_off_a_mixed_pdf_keeps_its_text_page_and_reports_the_scan_unread(tmp_path: Path) -> None:
    scan = fo.render_text([fo.ZH_MIXED_SENTENCE])
    doc = load_document(fo.mixed_pdf("第一页有文字层。" * 4, scan.image, tmp_path / "mixed.pdf"), limits=OFF)
    assert [(s.page, s.ocr) for s in doc.sections] == [(1, False)]
    assert (doc.report.text_pages, doc.report.ocr_pages, doc.report.empty_pages) == (1, 0, [2])


def test_blank_scanned_pages_fail_saying_ocr_found_nothing(tmp_path: Path) -> None:
    with pytest.raises(NothingReadable) as caught:
        load_document(fo.blank_scanned_pdf(tmp_path, pages=40))
    message = str(caught.value)
    assert message.startswith("没有找到文字") and "every page of the PDF is an image and OCR found nothing" in message


def test_each_page_is_bounded_by_the_ocr_time_limit(tmp_path: Path) -> None:
    """Tesseract cannot even start in a millisecond: every page is stopped at the limit and counted unreadable."""
    pages = [fo.render_text([fo.ZH_PARAGRAPHS[n]]).image for n in range(3)]
    limits = replace(DEFAULTS, ocr_page_timeout_s=0.001)
    with pytest.raises(NothingReadable) as caught:
        load_document(fo.image_only_pdf(pages, tmp_path / "slow.pdf"), limits=limits)
    limit = "OCR ran past its 0.001 s limit on 3 page(s) (setting ocr.page_timeout_s (KBQA_OCR__PAGE_TIMEOUT_S))"
    assert limit in str(caught.value)


# ------------------------------------------------------------------------------------------------ Word, PowerPoint


def test_a_picture_in_a_docx_is_read_where_it_stands(tmp_path: Path) -> None:
    picture = fo.picture(fo.ZH_DOCX_SENTENCE)
    doc = load_document(fo.docx_with_picture("图片前面的段落。", picture.image, tmp_path / "通知.docx"))
    assert [s.ocr for s in doc.sections] == [False, True] and doc.sections[0].text == "图片前面的段落。"
    assert fo.char_accuracy(picture.text, doc.sections[1].text) >= PICTURE_FLOOR
    assert (doc.report.ocr_pictures, doc.report.skipped_pictures) == (1, 0)


def test_a_picture_on_a_slide_is_read_into_that_slide(tmp_path: Path) -> None:
    picture = fo.picture(fo.EN_PICTURE_SENTENCE)
    path = fo.pptx_with_picture(["第一页", "仓库", "第三页"], picture.image, 2, tmp_path / "deck.pptx")
    doc = load_document(path)
    assert [(s.page, s.ocr) for s in doc.sections] == [(1, False), (2, False), (2, True), (3, False)]
    assert doc.sections[2].heading == "仓库"
    assert fo.char_accuracy(picture.text, doc.sections[2].text) >= PICTURE_FLOOR
    assert (doc.report.text_pages, doc.report.ocr_pictures) == (3, 1)


def test_with_ocr_off_pictures_in_office_files_are_counted_as_skipped(tmp_path: Path) -> None:
    picture = fo.picture(fo.ZH_DOCX_SENTENCE).image
    doc = load_document(fo.docx_with_picture("只有这一段。", picture, tmp_path / "a.docx"), limits=OFF)
    assert [s.text for s in doc.sections] == ["只有这一段。"] and doc.report.skipped_pictures == 1


def test_a_pixel_bomb_inside_a_docx_is_skipped_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    fo.docx_with_picture("炸弹图片前的段落。", Image.new("L", (40, 40), 255), path)
    _swap_media(path, fo.png_bomb(tmp_path / "bomb.png").read_bytes())
    with PeakRss() as rss:
        doc = load_document(path)
    assert [s.text for s in doc.sections] == ["炸弹图片前的段落。"] and doc.report.skipped_pictures == 1
    assert rss.growth < MEMORY_BOUND // 4, f"grew by {rss.growth / MIB:.0f} MiB"


def _swap_media(docx_path: Path, picture: bytes) -> None:
    """Replace the one picture of a .docx with `picture` (a part name and a relationship stay as they were)."""
    with zipfile.ZipFile(docx_path) as source:
        parts = {info.filename: source.read(info) for info in source.infolist()}
    media = [name for name in parts if name.startswith("word/media/")]
    assert len(media) == 1
    parts[media[0]] = picture
    with zipfile.ZipFile(docx_path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)


# ------------------------------------------------------------------------------------------------ bad pictures


def test_a_20000_pixel_square_png_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    path = fo.png_bomb(tmp_path / "bomb.png")
    with PeakRss() as rss, pytest.raises(DocumentTooLarge) as caught:
        load_document(path)
    assert "ocr.max_image_pixels" in str(caught.value) and str(caught.value).startswith("图片有")
    assert rss.growth < MEMORY_BOUND // 4, f"grew by {rss.growth / MIB:.0f} MiB"


def test_a_picture_past_our_own_pixel_limit_is_refused_naming_its_size(tmp_path: Path) -> None:
    path = fo.png_bomb(tmp_path / "big.png", side=9000)  # 81 MP: under Pillow's own bound, over ours
    with pytest.raises(DocumentTooLarge, match="9,000 x 9,000"):
        load_document(path)
    with pytest.raises(NothingReadable, match="OCR found nothing"):  # within a raised limit it is decoded: blank
        load_document(path, limits=replace(DEFAULTS, ocr_max_image_pixels=10**8))


def test_a_truncated_png_is_corrupt_with_a_clear_reason(tmp_path: Path) -> None:
    data = io.BytesIO()
    fo.picture(fo.ZH_PICTURE_SENTENCE).image.save(data, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) * 6 // 10])
    with pytest.raises(CorruptDocument) as caught:
        load_document(path)
    message = str(caught.value)
    assert message.startswith("图片已损坏") and "The picture is damaged" in message and "truncated" in message


def test_bytes_that_are_no_picture_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("<html>not a picture</html>")
    with pytest.raises(CorruptDocument, match="not a picture that can be read"):
        load_document(path)


# ------------------------------------------------------------------------------------------------ OCR unavailable


def test_ocr_switched_off_fails_a_picture_saying_so(tmp_path: Path) -> None:
    path = fo.save_image(fo.picture(fo.ZH_PNG_SENTENCE), tmp_path / "notice.png")
    with pytest.raises(NothingReadable) as caught:
        load_document(path, limits=OFF)
    message = str(caught.value)
    assert message.startswith("没有找到文字：这是一张图片，OCR 已关闭（设置 ocr.enabled (KBQA_OCR__ENABLED)）")
    switched_off = "OCR is switched off (setting ocr.enabled (KBQA_OCR__ENABLED))"
    assert f"(No text found: this is a picture and {switched_off}.)" in message


def test_ocr_switched_off_fails_a_scanned_pdf_saying_so(tmp_path: Path) -> None:
    path = fo.image_only_pdf([fo.picture(fo.ZH_PNG_SENTENCE).image], tmp_path / "scan.pdf")
    with pytest.raises(NothingReadable, match="every page of the PDF is an image and OCR is switched off"):
        load_document(path, limits=OFF)


def test_a_missing_language_pack_is_named_with_its_debian_package(tmp_path: Path) -> None:
    path = fo.save_image(fo.picture(fo.EN_PICTURE_SENTENCE), tmp_path / "sign.png")
    with pytest.raises(NothingReadable) as caught:
        load_document(path, limits=replace(DEFAULTS, ocr_languages="eng+klingon"))
    assert "OCR cannot run" in str(caught.value) and "apt-get install tesseract-ocr-klingon" in str(caught.value)


# ------------------------------------------------------------------------------------------------ through the API

KB = "扫描件"


@pytest.fixture(scope="module")
def scanned_docs(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("scans")
    create_kb(client, KB)
    first = fo.render_text(fo.ZH_PARAGRAPHS[:3]).image
    second = fo.render_text([fo.ZH_SCAN_SENTENCE, *fo.EN_PARAGRAPHS[:2]]).image
    mixed, deck = folder / "混合.pdf", folder / "汇报.pptx"
    files = [
        fo.image_only_pdf([first, second], folder / "扫描件.pdf"),
        fo.mixed_pdf("第一页有文字层：" + fo.ZH_PARAGRAPHS[4], fo.render_text([fo.ZH_MIXED_SENTENCE]).image, mixed),
        fo.pptx_with_picture(["概况", "仓库", "结语"], fo.picture(fo.EN_PICTURE_SENTENCE).image, 2, deck),
        fo.docx_with_picture("食堂通知如下。", fo.picture(fo.ZH_DOCX_SENTENCE).image, folder / "通知.docx"),
        fo.save_image(fo.picture(fo.ZH_PNG_SENTENCE), folder / "告示.png"),
    ]
    docs = upload_ready(client, KB, *((p.name, p.read_bytes()) for p in files))
    return {d["filename"]: d for d in docs}


def _top(client: TestClient, question: str) -> dict:
    response = client.post(f"/api/kbs/{KB}/search", json={"question": question, "top_k": 3, "mode": "hybrid"})
    assert response.status_code == 200, response.text
    return response.json()["hits"][0]


def test_scanned_files_are_ready(scanned_docs: dict[str, dict]) -> None:
    assert {name: d["status"] for name, d in scanned_docs.items()} == dict.fromkeys(scanned_docs, "ready")
    assert scanned_docs["扫描件.pdf"]["pages"] == 2 and scanned_docs["汇报.pptx"]["pages"] == 3


@pytest.mark.parametrize(
    ("sentence", "file_name", "page"),
    [
        pytest.param(fo.ZH_SCAN_SENTENCE, "扫描件.pdf", 2, id="scanned-pdf"),
        pytest.param(fo.ZH_MIXED_SENTENCE, "混合.pdf", 2, id="mixed-pdf"),
        pytest.param(fo.EN_PICTURE_SENTENCE, "汇报.pptx", 2, id="pptx"),
        pytest.param(fo.ZH_DOCX_SENTENCE, "通知.docx", None, id="docx"),
        pytest.param(fo.ZH_PNG_SENTENCE, "告示.png", None, id="png"),
    ],
)
def test_a_sentence_only_in_a_picture_is_found_on_its_page(
    client: TestClient, scanned_docs: dict[str, dict], sentence: str, file_name: str, page: int | None
) -> None:
    top = _top(client, sentence)
    assert (top["file_name"], top["page"], top["ocr"]) == (file_name, page, True)
    assert fuzz.partial_ratio(fo.normalized(sentence), fo.normalized(top["text"])) >= 90, top["text"]


def test_image_types_are_accepted_by_the_api(client: TestClient, scanned_docs: dict[str, dict]) -> None:
    accepted = client.get("/api/status").json()["file_types"]
    assert set(IMAGE_TYPES) <= set(accepted)


def test_a_pdf_of_blank_scans_fails_with_the_reason_and_touches_nothing(
    client: TestClient, scanned_docs: dict[str, dict], tmp_path: Path
) -> None:
    store = client.app.state.services.store  # type: ignore[attr-defined]
    collection = client.get(f"/api/kbs/{KB}").json()["collection_name"]
    before = store.count(collection)
    path = fo.blank_scanned_pdf(tmp_path, pages=60)
    doc = upload(client, KB, (path.name, path.read_bytes()))[0]["document"]
    doc = wait_documents(client, KB, [doc["id"]])[0]
    assert doc["status"] == "failed" and "OCR found nothing" in doc["error"] and "没有找到文字" in doc["error"]
    assert store.count(collection) == before
