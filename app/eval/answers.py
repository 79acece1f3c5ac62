"""Judging generated answers: does one contain the expected text, and is it a refusal?

Both compare normalised text: Unicode NFKC (full-width letters, digits and punctuation become their plain
forms), case folded, whitespace removed. An answer *contains* the expected text when any expected answer,
normalised, is a substring of it (so 1,250万 and 一千二百五十万 do not match: a known limit of string checks).

An answer is a *refusal* when it contains one of: the no-hit refusal text of configs/prompts.yaml, every phrase
the knowledge-base templates there tell the model to use when it cannot answer (the quoted phrases, e.g.
"根据已知信息无法回答该问题"), or one of COMMON_REFUSALS below (what the model says in its own words).
"""

from __future__ import annotations

import re
import unicodedata

from app.chat.prompts import PromptBook

COMMON_REFUSALS = (
    "无法回答",
    "无法从已知信息",
    "无法根据已知信息",
    "没有提供足够",
    "没有足够的信息",
    "没有相关信息",
    "没有提到",
    "没有提及",
    "未提及",
    "未提到",
    "并未提供",
    "cannot answer",
    "can't answer",
    "unable to answer",
    "does not answer",
    "not mentioned",
    "does not mention",
    "no information",
    "does not provide",
    "not provided",
)
_QUOTED = re.compile(r"[\"“]([^\"”\n]{4,80})[\"”]")


def normalise(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def contains_answer(answer: str, expected: tuple[str, ...] | list[str]) -> bool:
    text = normalise(answer)
    return any(wanted and wanted in text for wanted in map(normalise, expected))


def refusal_phrases(prompts: PromptBook) -> list[str]:
    phrases = [prompts.no_hit_refusal.split("：")[0]]
    for template in prompts.kb_templates.values():
        phrases += _QUOTED.findall(template.system + template.user)
    phrases += COMMON_REFUSALS
    return list(dict.fromkeys(p for p in (normalise(p) for p in phrases) if p))


def is_refusal(answer: str, phrases: list[str]) -> bool:
    text = normalise(answer)
    return any(p in text for p in phrases)


def describe(phrases: list[str]) -> str:
    return (
        "an answer is a refusal when, normalised (NFKC, case folded, no whitespace), it contains one of: "
        + "; ".join(phrases)
    )
