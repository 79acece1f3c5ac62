"""Question sets for the retrieval evaluation: JSONL, one question per line, each checked with its line number.

A line is a JSON object with `question` and at least one expectation:
- `doc_id`: the expected document, as its id in the knowledge base or its file name without the extension
  (so a corpus uploaded as `<doc_id>.txt` is judged by the ids of the corpus itself);
- `file_name`: the expected file name, e.g. `合同.pdf`;
- `answer` (a string) or `answers` (a list of strings): the expected answer text. Without `doc_id` and
  `file_name`, a retrieved chunk counts as gold when it contains one of the answers.
Optional: `id` (shown in reports) and `source` (a report per source, e.g. CMRC and DRCD separately). Other
fields are ignored, so data sets can be used as they come.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput, PayloadTooLarge


@dataclass(frozen=True)
class EvalQuestion:
    line: int  # the line in the JSONL file (or the 1-based position in a JSON list)
    question: str
    doc_id: str | None = None
    file_name: str | None = None
    answers: tuple[str, ...] = ()
    source: str | None = None
    id: str | None = None

    @property
    def judged_by(self) -> str:
        """`document` when the expected document is known, else `answer_text`."""
        return "document" if self.doc_id or self.file_name else "answer_text"

    def expected(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"doc_id": self.doc_id, "file_name": self.file_name, "answers": list(self.answers)}
        return {key: value for key, value in shown.items() if value}


def parse_jsonl(data: bytes, max_questions: int, max_bytes: int, max_question_chars: int) -> list[EvalQuestion]:
    """Every line checked, or InvalidInput (422) naming the first bad line; PayloadTooLarge (413) over the limits."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the question set is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"line {line}: not UTF-8 text (byte {exc.start})") from None
    rows: list[tuple[int, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(rows) >= max_questions:
            raise PayloadTooLarge(f"the question set has more than {max_questions} questions (the limit)")
        try:
            rows.append((number, json.loads(raw)))
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    return parse_rows(rows, max_questions, max_question_chars, kind="line")


def parse_rows(
    rows: list[tuple[int, Any]], max_questions: int, max_question_chars: int, kind: str = "question"
) -> list[EvalQuestion]:
    """(line number, decoded JSON) pairs -> questions; messages name the row as "<kind> <number>"."""
    if not rows:
        raise InvalidInput('the question set is empty: give one JSON object per line with at least "question"')
    if len(rows) > max_questions:
        raise PayloadTooLarge(f"the question set has {len(rows)} questions; the limit is {max_questions}")
    return [_question(number, f"{kind} {number}", row, max_question_chars) for number, row in rows]


def _question(number: int, line: str, row: Any, max_chars: int) -> EvalQuestion:
    if not isinstance(row, dict):
        raise InvalidInput(f"{line}: expected a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput(f'{line}: "question" is missing or empty')
    if len(question.strip()) > max_chars:
        raise InvalidInput(f"{line}: the question is {len(question.strip())} characters long; the limit is {max_chars}")
    doc_id, file_name, source, qid = (_text(line, row, key) for key in ("doc_id", "file_name", "source", "id"))
    answers = _answers(line, row)
    if not (doc_id or file_name or answers):
        raise InvalidInput(f'{line}: give at least one of "doc_id", "file_name", "answer" or "answers"')
    return EvalQuestion(number, question.strip(), doc_id, file_name, answers, source, qid)


def _text(line: str, row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key in {"id", "doc_id"}:
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(f'{line}: "{key}" must be a string, got {type(value).__name__}')
    return value.strip() or None


def _answers(line: str, row: dict[str, Any]) -> tuple[str, ...]:
    if "answer" in row and "answers" in row:
        raise InvalidInput(f'{line}: give "answer" or "answers", not both')
    value = row.get("answers", row.get("answer"))
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f'{line}: "answers" must be a list of strings (or "answer" one string)')
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
