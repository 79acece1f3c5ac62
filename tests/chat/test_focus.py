"""chat.focus_chars: each source cut to the sentences that bear on the question (app/chat/focus.py)."""

from __future__ import annotations

from app.chat.focus import GAP, focus_texts
from app.chat.models import Source
from app.chat.prompts import load_prompts
from app.settings import Settings

HAITANG = (
    "海棠计划于二〇一九年在宁波立项，最初只有五名成员。"
    "项目组的办公室设在东钱湖畔的一座旧仓库里。"
    "第一阶段的目标是完成港口调度系统的原型。"
    "海棠计划的验收负责人是周慕白，他来自市交通局。"
    "原型在二〇二一年通过了内部评审。"
    "第二阶段扩大到三个港区，并引入了新的合作单位。"
)
OTHER = "远航计划已完成第二阶段的测试，预计明年春季交付。远航计划的总部在杭州。"


def test_a_text_within_the_budget_or_a_zero_budget_stays_whole() -> None:
    assert focus_texts("海棠计划的验收负责人是谁？", [HAITANG, OTHER], 0) == [HAITANG, OTHER]
    assert focus_texts("海棠计划的验收负责人是谁？", [HAITANG, OTHER], len(HAITANG)) == [HAITANG, OTHER]


def test_a_long_source_keeps_the_sentence_that_answers_and_marks_what_was_left_out() -> None:
    focused, other = focus_texts("海棠计划的验收负责人是谁？", [HAITANG, OTHER], 40)
    assert "海棠计划的验收负责人是周慕白，他来自市交通局。" in focused
    assert focused.startswith(GAP) and focused.endswith(GAP)
    assert len(focused.replace(GAP, "")) <= 40
    assert other == OTHER  # short enough: whole


def test_kept_sentences_stay_in_their_own_order_with_a_gap_between_runs_apart() -> None:
    focused = focus_texts("海棠计划在哪里立项？原型何时通过评审？", [HAITANG], 60)[0]
    first, second = "海棠计划于二〇一九年在宁波立项", "原型在二〇二一年通过了内部评审"
    assert first in focused and second in focused
    assert focused.index(first) < focused.index(second)
    assert GAP in focused[focused.index(first) : focused.index(second)]


def test_a_sentence_longer_than_the_budget_is_still_kept_whole() -> None:
    focused = focus_texts("验收负责人是谁？", [HAITANG], 5)[0]
    assert focused == GAP + "海棠计划的验收负责人是周慕白，他来自市交通局。" + GAP


def test_a_source_sharing_no_word_with_the_question_keeps_its_opening() -> None:
    focused = focus_texts("Who won the 1998 final?", [HAITANG], 50)[0]
    assert focused.startswith("海棠计划于二〇一九年在宁波立项") and focused.endswith(GAP)


def test_pooled_sources_share_the_budget_the_one_that_bears_more_keeping_more() -> None:
    question = "海棠计划在哪里立项？验收负责人是谁？原型何时通过评审？"
    per_source = focus_texts(question, [HAITANG, OTHER * 3], 50)
    pooled = focus_texts(question, [HAITANG, OTHER * 3], 50, pooled=True)
    answers = ["海棠计划于二〇一九年在宁波立项", "海棠计划的验收负责人是周慕白", "原型在二〇二一年通过了内部评审"]
    assert sum(a in per_source[0] for a in answers) < 3 and all(a in pooled[0] for a in answers)
    kept_other = pooled[1].replace(GAP, "")
    assert kept_other in OTHER and kept_other.count("。") == 1, "every source keeps its best sentence"
    assert sum(len(t.replace(GAP, "")) for t in pooled) <= 2 * 50


def test_pooled_sources_that_fit_the_shared_budget_stay_whole() -> None:
    assert focus_texts("验收负责人是谁？", [HAITANG, OTHER], 100, pooled=True) == [HAITANG, OTHER]


def test_english_sources_are_scored_by_words_not_by_stop_words() -> None:
    text = (
        "The harbour office is on the east side of the lake. "
        "The project was started in 2019 with five people. "
        "Acceptance of the Haitang project is signed off by Zhou Mubai. "
        "The first prototype passed its review in 2021."
    )
    focused = focus_texts("Who signs off the acceptance of the Haitang project?", [text], 70)[0]
    assert "Acceptance of the Haitang project is signed off by Zhou Mubai." in focused
    assert "harbour" not in focused


def test_the_prompt_gets_focused_texts_while_the_sources_stay_whole() -> None:
    prompts = load_prompts(Settings().chat.prompts_file)
    source = Source(
        doc_id="d", chunk_index=0, text=HAITANG, file_name="海棠.md", page=None, number=1, kb_name="kb", score=0.9
    )
    prompt = prompts.kb_prompt("海棠计划的验收负责人是谁？", [source], "kb_default", focus_chars=40)
    assert "[1] (海棠.md) " + GAP + "海棠计划的验收负责人是周慕白" in prompt
    assert "东钱湖" not in prompt
    assert source.text == HAITANG
