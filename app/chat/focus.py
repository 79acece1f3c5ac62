"""The sentences of each source that bear on the question: a shorter 知识库问答 prompt with the same facts.

On a CPU the answer waits on the LLM reading its prompt (~110 tokens/s for the 1.5B model on two cores), and three
500-character chunks are ~1,000 tokens of it, most of which do not bear on the question. A source longer than the
budget keeps the sentences that share the rarest words with the question (Chinese characters and character pairs,
English words; rare = in few of the sentences of all the sources), best first while they fit, then shown in their
own order with "…" where sentences were left out. Lexical on purpose: an extractive answer sits beside the
question's names, dates and terms, and scoring costs microseconds, where embedding every sentence would cost more
than it saves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from app.kb.splitter import SENTENCE_END

_SENTENCE = re.compile(rf".+?(?:{SENTENCE_END}|\n+|$)", re.DOTALL)
_TERM = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the this to was "  # noqa: SIM905
    "were what when where which who whom whose why with".split()
)
GAP = "…"


@dataclass(frozen=True)
class _Sentence:
    start: int
    end: int
    terms: frozenset[str]


def focus_texts(question: str, texts: list[str], budget_chars: int, pooled: bool = False) -> list[str]:
    """Each text as it goes into the prompt: whole when it fits `budget_chars` (0: always whole), else its sentences
    that bear most on the question, at least one, in their order. `pooled`: the texts share `budget_chars` times
    their number, sentence by sentence in order of bearing wherever they are, each text keeping its best one."""
    if budget_chars <= 0 or all(len(text) <= budget_chars for text in texts):
        return list(texts)
    if pooled and sum(map(len, texts)) <= budget_chars * len(texts):
        return list(texts)
    split = [_sentences(text) for text in texts]
    weight = _rarity([s for sentences in split for s in sentences])
    wanted = _terms(question)
    if pooled:
        return _kept(texts, split, wanted, weight, budget_chars * len(texts))
    return [
        text if len(text) <= budget_chars else _kept([text], [sentences], wanted, weight, budget_chars)[0]
        for text, sentences in zip(texts, split, strict=True)
    ]


def _kept(
    texts: list[str], split: list[list[_Sentence]], wanted: frozenset[str], weight: dict[str, float], budget: int
) -> list[str]:
    """The texts sharing `budget`: sentences taken best-bearing first wherever they are (ties, and a text sharing
    nothing with the question, in reading order), each text keeping at least its best one."""
    scored = [
        (-sum(weight[t] for t in wanted & sentence.terms), n, i)
        for n, sentences in enumerate(split) for i, sentence in enumerate(sentences)
    ]
    best_first = [(n, i) for _score, n, i in sorted(scored)]
    each_best: dict[int, tuple[int, int]] = {}
    for n, i in best_first:
        each_best.setdefault(n, (n, i))
    kept: list[list[int]] = [[] for _ in texts]
    for n, i in [*each_best.values(), *best_first]:
        size = split[n][i].end - split[n][i].start
        if i in kept[n] or (kept[n] and size > budget):
            continue
        kept[n].append(i)
        budget -= size
    return [
        _joined(text, sentences, sorted(indices)) if indices else text
        for text, sentences, indices in zip(texts, split, kept, strict=True)
    ]


def _joined(text: str, sentences: list[_Sentence], kept: list[int]) -> str:
    """Runs of neighbouring sentences as the text has them, with a gap mark between runs and at cut ends."""
    parts = [GAP] if kept[0] > 0 else []
    run_start = kept[0]
    for previous, i in zip(kept, [*kept[1:], None], strict=True):
        if i == previous + 1:
            continue
        parts.append(text[sentences[run_start].start : sentences[previous].end].strip())
        if i is not None:
            parts.append(GAP)
            run_start = i
    if kept[-1] < len(sentences) - 1:
        parts.append(GAP)
    return "".join(parts)


def _sentences(text: str) -> list[_Sentence]:
    return [_Sentence(m.start(), m.end(), _terms(m.group())) for m in _SENTENCE.finditer(text) if m.group().strip()]


def _terms(text: str) -> frozenset[str]:
    """Chinese runs as their characters and character pairs, other words whole and lower-cased."""
    terms: set[str] = set()
    for run in _TERM.findall(text.lower()):
        if run.isascii():
            if run not in _STOP_WORDS:
                terms.add(run)
        else:
            terms.update(run)
            terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return frozenset(terms)


def _rarity(sentences: list[_Sentence]) -> dict[str, float]:
    """Inverse sentence frequency over all the sources' sentences: a word in every sentence says little."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for term in sentence.terms:
            counts[term] = counts.get(term, 0) + 1
    total = len(sentences)
    return {term: math.log((total + 1) / (count + 0.5)) for term, count in counts.items()}
