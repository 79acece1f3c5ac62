"""The evaluation's arithmetic and judgements on hand-made inputs, with the expected values worked out by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from app.chat.prompts import load_prompts
from app.errors import InvalidInput, PayloadTooLarge
from app.eval import answers, metrics
from app.eval.questions import EvalQuestion, parse_jsonl
from app.eval.service import EvaluationService, is_gold
from app.settings import Settings


def test_rank_recall_and_mrr_on_a_hand_made_ranking() -> None:
    rankings = [
        [True, False, False],  # gold first
        [False, False, True],  # third
        [False] * 10,  # not retrieved
        [False] * 6 + [True] + [False] * 3,  # seventh
        [False, True, True],  # second (the first gold hit counts)
    ]
    ranks = [metrics.first_gold_rank(r) for r in rankings]
    assert ranks == [1, 3, None, 7, 2]
    assert metrics.recall_at(ranks, 1) == pytest.approx(1 / 5)
    assert metrics.recall_at(ranks, 5) == pytest.approx(3 / 5)
    assert metrics.recall_at(ranks, 10) == pytest.approx(4 / 5)
    # (1 + 1/3 + 0 + 1/7 + 1/2) / 5
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx(0.3952381, abs=1e-6)
    assert metrics.recall_at([], 5) == 0.0 and metrics.mean_reciprocal_rank([]) == 0.0


def test_latency_percentiles_interpolate_between_ranks() -> None:
    result = metrics.latency([50.0, 10.0, 30.0, 20.0, 40.0])
    # sorted 10..50: the 50th percentile is the middle value; the 95th lies 0.8 of the way from 40 to 50
    assert (result.p50_ms, result.p95_ms, result.max_ms) == (30.0, 48.0, 50.0)


def test_suggested_threshold_maximises_gold_kept_minus_others_kept() -> None:
    gold = [0.9, 0.8, 0.6]
    others = [0.7, 0.5, 0.3, 0.2]
    # gold kept - others kept by range of t: (0.3, 0.5] 1 - 2/4; (0.5, 0.6] 1 - 1/4 (the best); (0.6, 0.7] 2/3 - 1/4;
    # (0.7, 0.8] 2/3 - 0. The lowest grid point of the best range is 0.51.
    suggestion = metrics.suggest_threshold(gold, others)
    assert suggestion.threshold == 0.51
    assert (suggestion.gold_kept, suggestion.others_dropped) == (1.0, 0.75)
    assert (suggestion.gold_hits, suggestion.other_hits) == (3, 4)
    around = {p.threshold: (p.gold_kept, p.others_dropped) for p in suggestion.neighbours}
    assert around == {0.41: (1.0, 0.5), 0.46: (1.0, 0.5), 0.56: (1.0, 0.75), 0.61: (0.6667, 0.75)}


def test_no_threshold_without_both_kinds_of_hits() -> None:
    suggestion = metrics.suggest_threshold([], [0.4, 0.2])
    assert suggestion.threshold is None and suggestion.note == "no gold hits to learn a threshold from"


@dataclass
class _Chunk:
    doc_id: str
    file_name: str
    text: str


def test_gold_by_document_id_file_stem_alias_file_name_or_answer_text() -> None:
    by_doc = EvalQuestion(1, "q", doc_id="cmrc-7")
    assert is_gold(by_doc, _Chunk("uuid1", "cmrc-7.txt", "…"))
    assert is_gold(by_doc, _Chunk("copy-id", "other.txt", "…"), aliases={"copy-id": "cmrc-7"})
    assert not is_gold(by_doc, _Chunk("uuid2", "cmrc-70.txt", "…"))
    by_file = EvalQuestion(2, "q", file_name="合同.pdf")
    assert is_gold(by_file, _Chunk("x", "合同.pdf", "…")) and not is_gold(by_file, _Chunk("x", "合同2.pdf", "…"))
    by_answer = EvalQuestion(3, "q", answers=("一千二百五十万元",))
    assert is_gold(by_answer, _Chunk("x", "a.txt", "总预算为一千二百五十万元。"))
    assert not is_gold(by_answer, _Chunk("x", "a.txt", "总预算为三千万元。"))
    # With an expected document, answer text elsewhere does not count.
    both = EvalQuestion(4, "q", doc_id="a", answers=("预算",))
    assert not is_gold(both, _Chunk("x", "b.txt", "预算"))


def _parse(text: str, max_questions: int = 10, max_bytes: int = 10_000) -> list[EvalQuestion]:
    return parse_jsonl(text.encode(), max_questions, max_bytes, max_question_chars=50)


def test_jsonl_lines_are_read_with_their_expectations() -> None:
    rows = [
        {"question": " 星河计划的预算？ ", "doc_id": "p1", "source": "A", "id": 7},
        {"question": "谁负责？", "file_name": "负责人.md", "answers": ["林晓澜", " "], "lang": "zh"},
        {"question": "When?", "answer": "1893"},
    ]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n"
    questions = _parse("\ufeff" + text)
    assert [q.line for q in questions] == [1, 2, 4]  # the blank line counts as a line, not as a question
    assert questions[0].question == "星河计划的预算？" and questions[0].id == "7" and questions[0].source == "A"
    assert questions[1].answers == ("林晓澜",) and questions[1].judged_by == "document"
    assert questions[2].answers == ("1893",) and questions[2].judged_by == "answer_text"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the question set is empty"),
        ("\n  \n", "the question set is empty"),
        ('{"question": "a", "doc_id": "x"}\n{"question": "b", "doc_id": \n', "line 2: not valid JSON"),
        ('{"doc_id": "x"}', 'line 1: "question" is missing or empty'),
        ('{"question": "  ", "doc_id": "x"}', 'line 1: "question" is missing or empty'),
        ('{"question": "a"}', 'line 1: give at least one of "doc_id", "file_name", "answer" or "answers"'),
        ('["question"]', "line 1: expected a JSON object, got list"),
        ('{"question": "a", "answers": [1]}', 'line 1: "answers" must be a list of strings'),
        ('{"question": "a", "answer": "x", "answers": ["y"]}', 'line 1: give "answer" or "answers", not both'),
        ('{"question": "a", "file_name": 3}', 'line 1: "file_name" must be a string, got int'),
        ('{"question": "' + "长" * 51 + '", "doc_id": "x"}', "line 1: the question is 51 characters long"),
    ],
)
def test_each_bad_line_is_named(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        _parse(text)
    assert message in error.value.message


def test_not_utf8_names_its_line() -> None:
    with pytest.raises(InvalidInput, match="line 2: not UTF-8"):
        parse_jsonl(b'{"question": "a", "doc_id": "x"}\n\xff\xfe', 10, 10_000, 50)


def test_size_limits_are_413() -> None:
    line = '{"question": "a", "doc_id": "x"}\n'
    with pytest.raises(PayloadTooLarge, match="more than 3 questions"):
        _parse(line * 4, max_questions=3)
    assert len(_parse(line * 3, max_questions=3)) == 3
    with pytest.raises(PayloadTooLarge, match="the limit is 40 bytes"):
        _parse(line * 2, max_bytes=40)


def test_answer_sample_is_spread_over_the_questions_with_answers() -> None:
    questions = [EvalQuestion(i, f"q{i}", doc_id="d", answers=("a",) if i % 2 else ()) for i in range(1, 21)]
    sample = EvaluationService._sample(questions, 4)
    assert [q.line for q in sample] == [1, 5, 11, 15]  # 10 with answers (odd lines), every second and a half one
    assert len(EvaluationService._sample(questions, 50)) == 10


def test_refusal_detection_uses_the_prompt_templates_and_common_wordings() -> None:
    prompts = load_prompts(Settings().chat.prompts_file)
    phrases = answers.refusal_phrases(prompts)
    assert answers.is_refusal(prompts.no_hit_refusal, phrases)
    assert answers.is_refusal("根据已知信息无法回答该问题。", phrases)  # quoted in kb_default
    assert answers.is_refusal("抱歉，已知信息中没有提供足够的相关信息。", phrases)
    assert answers.is_refusal("The known information does not answer this question.", phrases)  # a common wording
    assert answers.is_refusal("文中未提及他的出生年份。", phrases)
    assert not answers.is_refusal("星河计划由林晓澜负责[1]。", phrases)
    assert "根据已知信息无法回答该问题" in answers.describe(phrases)


def test_contains_answer_normalises_width_case_and_spaces() -> None:
    assert answers.contains_answer("总预算为３８７０万元。", ["3870万"])
    assert answers.contains_answer("It was built by Mickey  Smith.", ["mickey smith"])
    assert not answers.contains_answer("总预算为三千八百七十万元。", ["3870万"])  # a known limit of string checks
    assert not answers.contains_answer("anything", [" "])
