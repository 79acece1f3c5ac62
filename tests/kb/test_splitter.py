"""The Chinese-aware splitter: sizes, sentence boundaries, overlap, and one page/heading per chunk."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.kb.documents import Chunk, LoadedDocument, Section
from app.kb.loaders import load_document
from app.kb.splitter import split_document
from tests.conftest import SHARED
from tests.fixtures_docs import make_docx, make_large_chinese_text, make_unbroken_chinese_text

SHARED_DOCS = SHARED / "docs"
ENDS_SENTENCE = re.compile(r"[。！？；][”’」』）)]*$")
ENGLISH = (
    "Local search keeps private files on the machine. Version 3.14 of the tool fixed a bug in the parser! "
    "Does the index survive a restart? It does; the data sits in one file. "
) * 40


def one_section(text: str, page: int | None = 1, heading: str | None = None) -> LoadedDocument:
    return LoadedDocument(sections=[Section(text=text, page=page, heading=heading)])


def numbered_sentences(count: int) -> str:
    """Unique sentences, so an overlap can only be a real copy of the previous chunk's end."""
    return "".join(f"第{i}号句子说明编号为{i}的事实，并补充一些细节。" for i in range(count))


def sentence_end_share(chunks: list[Chunk]) -> float:
    return sum(bool(ENDS_SENTENCE.search(c.text)) for c in chunks) / len(chunks)


@pytest.mark.parametrize(("size", "overlap"), [(500, 50), (200, 20), (120, 0), (60, 30), (1000, 100)])
@pytest.mark.parametrize("kind", ["paragraphs", "unbroken", "english"])
def test_chunks_never_exceed_chunk_size(size: int, overlap: int, kind: str) -> None:
    text = {
        "paragraphs": make_large_chinese_text(),
        "unbroken": make_unbroken_chinese_text(),
        "english": ENGLISH,
    }[kind]
    chunks = split_document(one_section(text), chunk_size=size, chunk_overlap=overlap)
    assert chunks
    assert max(len(c.text) for c in chunks) <= size
    assert all(c.text == c.text.strip() and c.text for c in chunks)


def test_unbroken_chinese_chunks_end_on_sentences() -> None:
    text = make_unbroken_chinese_text()
    chunks = split_document(one_section(text))
    assert sentence_end_share(chunks) >= 0.9
    # the point of the custom separators: LangChain's defaults cut the same text mid-sentence
    default = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50).split_text(text)
    assert sum(bool(ENDS_SENTENCE.search(c)) for c in default) / len(default) < 0.3


def test_paragraph_text_chunks_end_on_sentences_and_start_at_sentences() -> None:
    text = make_large_chinese_text()
    chunks = split_document(one_section(text))
    assert sentence_end_share(chunks) >= 0.9
    starts = 0
    for chunk in chunks:
        at = text.find(chunk.text)
        assert at >= 0, "a chunk must be a verbatim slice of one section"
        starts += at == 0 or text[at - 1] in "。！？；\n"
    assert starts / len(chunks) >= 0.9


def test_punctuation_stays_with_its_sentence() -> None:
    chunks = split_document(one_section(numbered_sentences(60)), chunk_size=100, chunk_overlap=0)
    assert all(c.text.endswith("。") for c in chunks)
    assert not any(c.text.startswith(("。", "，")) for c in chunks)


def test_english_splits_after_sentence_marks_but_not_inside_numbers() -> None:
    chunks = split_document(one_section(ENGLISH), chunk_size=150, chunk_overlap=0)
    assert all(re.search(r"[.!?;]$", c.text) for c in chunks)
    assert not any(c.text.endswith("Version 3.") or c.text.startswith("14 ") for c in chunks)


def shared_prefix_suffix(previous: str, current: str) -> str:
    """The longest start of `current` that is also the end of `previous`: the overlap."""
    for size in range(min(len(previous), len(current)), 0, -1):
        if previous.endswith(current[:size]):
            return current[:size]
    return ""


def test_overlap_repeats_whole_sentences() -> None:
    chunks = split_document(one_section(numbered_sentences(80)), chunk_size=200, chunk_overlap=50)
    overlaps = [shared_prefix_suffix(a.text, b.text) for a, b in itertools.pairwise(chunks)]
    assert all(overlaps), "every chunk should start with the last sentence(s) of the previous one"
    assert all(len(o) <= 50 and o.endswith("。") and o.startswith("第") for o in overlaps)


def test_no_overlap_when_disabled() -> None:
    chunks = split_document(one_section(numbered_sentences(80)), chunk_size=200, chunk_overlap=0)
    joined = "".join(c.text for c in chunks)
    assert joined == numbered_sentences(80)


def test_chunks_keep_their_section_page_and_heading() -> None:
    doc = LoadedDocument(
        sections=[
            Section(text=make_unbroken_chinese_text(40, seed=1), page=1, heading="第一章"),
            Section(text="ALPHA " + make_unbroken_chinese_text(30, seed=2), page=2, heading="第一章 > 第一节"),
            Section(text="OMEGA " + make_unbroken_chinese_text(30, seed=3), page=2, heading="第二章"),
        ],
        pages=2,
    )
    chunks = split_document(doc)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(c.page is not None and c.heading for c in chunks)
    for chunk in chunks:  # nothing from one section ends up in a chunk of another
        source = next(s for s in doc.sections if chunk.text in s.text)
        assert (chunk.page, chunk.heading) == (source.page, source.heading)
    assert {c.heading for c in chunks} == {"第一章", "第一章 > 第一节", "第二章"}


def test_tiny_section_merges_into_the_next_on_the_same_page() -> None:
    doc = LoadedDocument(
        sections=[
            Section(text="第二节 文档", page=None, heading="第一章 > 第二节"),
            Section(text="第三节 检索", page=None, heading="第一章 > 第三节"),
            Section(text="本节介绍检索的流程。" * 5, page=None, heading="第一章 > 第三节 > 流程"),
            Section(text="页脚 7", page=1, heading=None),
            Section(text="下一页的正文内容。" * 5, page=2, heading=None),
        ]
    )
    chunks = split_document(doc)
    assert chunks[0].text.startswith("第二节 文档\n第三节 检索\n本节介绍检索的流程。")
    assert chunks[0].heading == "第一章 > 第三节 > 流程"
    assert [c.text for c in chunks[1:]] == ["页脚 7", "下一页的正文内容。" * 5]  # pages never merge
    assert [c.page for c in chunks] == [None, 1, 2]


def test_heading_line_before_a_long_paragraph_is_not_a_chunk_alone() -> None:
    text = "Introduction\n\n" + " ".join(["Large language models are a building block of agents."] * 12)
    chunks = split_document(one_section(text, heading="Introduction"), chunk_size=500, chunk_overlap=50)
    assert chunks[0].text.startswith("Introduction\nLarge language models")
    assert all(len(c.text) > 40 for c in chunks)


def test_blank_sections_give_no_chunks() -> None:
    doc = LoadedDocument(sections=[Section(text="   \n\n  ", page=1), Section(text="  正文。  ", page=2)])
    chunks = split_document(doc)
    assert [(c.text, c.page, c.chunk_index) for c in chunks] == [("正文。", 2, 0)]


@pytest.mark.parametrize(("size", "overlap"), [(100, 100), (100, 150), (0, 0), (100, -1)])
def test_invalid_sizes_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        split_document(one_section("正文。"), chunk_size=size, chunk_overlap=overlap)


def test_docx_chunks_carry_heading_paths(tmp_path: Path) -> None:
    chunks = split_document(load_document(make_docx(tmp_path)), chunk_size=200, chunk_overlap=20)
    table_chunk = next(c for c in chunks if "A | B | C" in c.text)
    assert table_chunk.heading == "第一章 总则 > 第一节 预算"
    assert all(c.heading for c in chunks)


def test_shared_report_chunks() -> None:
    path = SHARED_DOCS / "zh_gov_shanghai_putuo_finance_bureau_2024_final_accounts.pdf"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared documents live in ../shared beside the project root")
    doc = load_document(path)
    chunks = split_document(doc)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(1 <= (c.page or 0) <= 25 and len(c.text) <= 500 for c in chunks)
    clean_ends = 0
    for chunk in chunks:  # a chunk should end at a sentence end or at the end of a line (table row, heading)
        source = next(s.text for s in doc.sections if s.page == chunk.page)
        end = source.find(chunk.text) + len(chunk.text)
        clean_ends += bool(ENDS_SENTENCE.search(chunk.text)) or end == len(source) or source[end] == "\n"
    assert clean_ends / len(chunks) >= 0.95
