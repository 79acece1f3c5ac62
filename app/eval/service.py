"""The retrieval evaluation: a question set against a knowledge base, per retrieval mode and chunk size.

Every question is searched (top 10, no threshold) in each mode through the same SearchService the 知识库测试
uses. A hit is *gold* when it comes from the expected document (its id, or its file name without the extension,
equals `doc_id`; or its file name equals `file_name`), or, for questions that only give answer text, when its
text contains an answer (see app/eval/answers.py for the normalisation). Other chunk sizes are evaluated on
temporary knowledge bases holding copies of the same files, indexed at that size and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Protocol

from app.chat.models import ChatMode, ChatRequest
from app.chat.service import ChatService
from app.errors import Conflict, InvalidInput, KBQAError, NotFound
from app.eval import answers, metrics
from app.eval.jobs import EvalJobs, Progress
from app.eval.models import (
    AnswerCheck,
    AnswerItem,
    EvalJobView,
    EvalReport,
    Metrics,
    Miss,
    ReturnedHit,
    RunResult,
    ThresholdSuggestion,
)
from app.eval.questions import EvalQuestion, parse_jsonl, parse_rows
from app.kb.names import TEMPORARY_PREFIX
from app.kb.service import KnowledgeBaseService
from app.kb.views import KnowledgeBaseInfo
from app.retrieval.models import SearchHit
from app.retrieval.retriever import RetrievalMode
from app.retrieval.service import SearchService
from app.settings import Settings

log = logging.getLogger(__name__)
TOP_K = 10
MISS_AT = 5  # a question is listed as missed when no gold hit is in its top 5
RETURNED_SHOWN = 3
SNIPPET_CHARS = 160
INDEX_POLL_S = 1.0


class _Chunk(Protocol):
    doc_id: str
    file_name: str
    text: str


@dataclass(frozen=True)
class EvalOptions:
    modes: tuple[RetrievalMode, ...] = tuple(RetrievalMode)
    chunk_sizes: tuple[int, ...] = ()  # besides the knowledge base's own
    chunk_overlap: int | None = None  # None: chunk_overlap scaled to each size
    answer_sample: int = 0


@dataclass
class _Target:
    """One knowledge base to search: the user's own, or a temporary copy at another chunk size."""

    kb_name: str
    chunk_size: int
    chunk_overlap: int
    temporary: bool
    aliases: dict[str, str] = field(default_factory=dict)  # copy's document id -> the original's
    index_seconds: float | None = None
    failed_documents: int = 0
    chunk_count: int = 0


class _Steps:
    """Progress over a known number of steps, each reported with a stage text."""

    def __init__(self, total: int, report: Progress) -> None:
        self.total, self.done, self.report = max(total, 1), 0, report

    def advance(self, stage: str, steps: int = 1) -> None:
        self.done += steps
        self.report(min(self.done / self.total, 1.0), stage)


def is_gold(question: EvalQuestion, chunk: _Chunk, aliases: dict[str, str] | None = None) -> bool:
    if question.doc_id or question.file_name:
        doc_id = (aliases or {}).get(chunk.doc_id, chunk.doc_id)
        if question.doc_id and question.doc_id in {doc_id, PurePosixPath(chunk.file_name).stem}:
            return True
        return bool(question.file_name) and question.file_name == chunk.file_name
    return answers.contains_answer(chunk.text, question.answers)


class EvaluationService:
    def __init__(
        self,
        settings: Settings,
        knowledge_bases: KnowledgeBaseService,
        search: SearchService,
        chat_factory: Callable[[], ChatService],
        jobs: EvalJobs,
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self.knowledge_bases = knowledge_bases
        self.search = search
        self.chat_factory = chat_factory

    # -- input ------------------------------------------------------------------------------------------------

    def parse_jsonl(self, data: bytes) -> list[EvalQuestion]:
        s = self.settings
        return parse_jsonl(data, s.eval.max_questions, int(s.eval.max_file_mb * 1024 * 1024), s.chat.max_question_chars)

    def parse_rows(self, rows: list[object]) -> list[EvalQuestion]:
        s = self.settings
        return parse_rows(list(enumerate(rows, start=1)), s.eval.max_questions, s.chat.max_question_chars)

    def options(
        self,
        modes: list[str] | None = None,
        chunk_sizes: list[int] | None = None,
        chunk_overlap: int | None = None,
        answer_sample: int = 0,
    ) -> EvalOptions:
        """Checked options, or InvalidInput naming what is wrong."""
        chosen = []
        for mode in modes or [m.value for m in RetrievalMode]:
            try:
                chosen.append(RetrievalMode(mode.strip()))
            except ValueError:
                known = ", ".join(m.value for m in RetrievalMode)
                raise InvalidInput(f"unknown retrieval mode {mode!r}; modes: {known}") from None
        sizes = list(dict.fromkeys(chunk_sizes or []))
        limit = self.settings.eval.max_chunk_sizes
        if len(sizes) > limit:
            raise InvalidInput(f"at most {limit} chunk sizes per evaluation, got {len(sizes)}")
        for size in sizes:
            self.knowledge_bases.chunking(size, chunk_overlap)  # InvalidInput for an unusable size or overlap
        most = self.settings.eval.max_answer_sample
        if not 0 <= answer_sample <= most:
            raise InvalidInput(f"answer_sample must be between 0 and {most}, got {answer_sample}")
        return EvalOptions(tuple(dict.fromkeys(chosen)), tuple(sizes), chunk_overlap, answer_sample)

    def check(self, kb_name: str, questions: list[EvalQuestion], options: EvalOptions) -> KnowledgeBaseInfo:
        """What can be refused before a job starts: an unknown or empty knowledge base, an impossible sample.
        Returns the knowledge base."""
        info = self.knowledge_bases.get(kb_name)
        if info.ready_count == 0:
            raise Conflict(f"knowledge base {kb_name!r} has no ready documents to evaluate")
        if options.answer_sample and not any(q.answers for q in questions):
            raise InvalidInput('answer_sample needs questions with "answer" or "answers"; none has any')
        return info

    def start(self, kb_name: str, questions: list[EvalQuestion], options: EvalOptions) -> EvalJobView:
        """Check what can be checked now (404 / 409 / 422), then run in the background; poll the returned job."""
        self.check(kb_name, questions, options)
        return self.jobs.submit(
            kb_name, len(questions), lambda progress: self.run(kb_name, questions, options, progress)
        )

    # -- the run ----------------------------------------------------------------------------------------------

    def run(
        self, kb_name: str, questions: list[EvalQuestion], options: EvalOptions, progress: Progress | None = None
    ) -> EvalReport:
        started, clock = datetime.now(UTC), time.perf_counter()
        info = self.check(kb_name, questions, options)
        own = _Target(kb_name, info.chunk_size, info.chunk_overlap, temporary=False, chunk_count=info.chunk_count)
        others = [s for s in options.chunk_sizes if s != info.chunk_size]
        sample = self._sample(questions, options.answer_sample)
        steps = _Steps(
            (1 + len(others)) * len(options.modes) * len(questions) + len(others) * info.ready_count + len(sample),
            progress or (lambda _fraction, _stage: None),
        )
        runs = self._evaluate_target(own, questions, options.modes, steps)
        for size in others:
            target = self._copy(kb_name, size, options.chunk_overlap, info.ready_count, steps)
            try:
                runs += self._evaluate_target(target, questions, options.modes, steps)
            finally:
                self._drop(target.kb_name)
        answer_check = self._check_answers(kb_name, sample, steps) if sample else None
        return EvalReport(
            kb_name=kb_name,
            questions=len(questions),
            judged_by=dict(Counter(q.judged_by for q in questions)),
            sources=sorted({q.source for q in questions if q.source}),
            modes=list(options.modes),
            chunk_sizes=[info.chunk_size, *others],
            top_k=TOP_K,
            runs=runs,
            suggested_threshold=_suggested(runs, info.chunk_size),
            answers=answer_check,
            started_at=started,
            seconds=round(time.perf_counter() - clock, 2),
        )

    def _evaluate_target(
        self, target: _Target, questions: list[EvalQuestion], modes: tuple[RetrievalMode, ...], steps: _Steps
    ) -> list[RunResult]:
        return [self._evaluate_mode(target, questions, mode, steps) for mode in modes]

    def _evaluate_mode(
        self, target: _Target, questions: list[EvalQuestion], mode: RetrievalMode, steps: _Steps
    ) -> RunResult:
        ranks: list[int | None] = []
        millis: list[float] = []
        gold_scores: list[float] = []
        other_scores: list[float] = []
        misses: list[Miss] = []
        for n, question in enumerate(questions, start=1):
            t0 = time.perf_counter()
            hits = self.search.search(target.kb_name, question.question, TOP_K, 0.0, mode).hits
            millis.append((time.perf_counter() - t0) * 1000)
            flags = [is_gold(question, hit, target.aliases) for hit in hits]
            for hit, gold in zip(hits, flags, strict=True):
                (gold_scores if gold else other_scores).append(hit.score)
            rank = metrics.first_gold_rank(flags)
            ranks.append(rank)
            if rank is None or rank > MISS_AT:
                misses.append(_miss(question, rank, hits, flags))
            steps.advance(f"{mode.value} @{target.chunk_size}: {n}/{len(questions)} questions")
        by_source: dict[str, list[int]] = defaultdict(list)
        for i, question in enumerate(questions):
            if question.source:
                by_source[question.source].append(i)
        return RunResult(
            chunk_size=target.chunk_size,
            chunk_overlap=target.chunk_overlap,
            temporary_kb=target.temporary,
            chunk_count=target.chunk_count,
            index_seconds=target.index_seconds,
            failed_documents=target.failed_documents,
            mode=mode,
            overall=_metrics(ranks, millis),
            by_source={
                source: _metrics([ranks[i] for i in idx], [millis[i] for i in idx])
                for source, idx in sorted(by_source.items())
            },
            threshold=metrics.suggest_threshold(gold_scores, other_scores),
            misses_total=len(misses),
            misses=misses[: self.settings.eval.misses_listed],
        )

    # -- other chunk sizes --------------------------------------------------------------------------------------

    def _copy(self, kb_name: str, size: int, overlap: int | None, documents: int, steps: _Steps) -> _Target:
        """A temporary knowledge base with the same files indexed at `size`; waits until they are indexed."""
        size, overlap = self.knowledge_bases.chunking(size, overlap)
        name = f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:8]}-{size}"
        t0 = time.perf_counter()
        self.knowledge_bases.create(
            name, f"temporary copy of {kb_name!r} for an evaluation", size, overlap, temporary=True
        )
        target = _Target(name, size, overlap, temporary=True)
        try:
            target.aliases = self.knowledge_bases.copy_ready_documents(kb_name, name)
            finished = 0
            while finished < len(target.aliases):
                time.sleep(INDEX_POLL_S)
                docs = self.knowledge_bases.list_documents(name)
                now = sum(d.status in {"ready", "failed"} for d in docs)
                steps.advance(f"indexing at chunk size {size}: {now}/{len(docs)} documents", now - finished)
                finished = now
            steps.advance(f"indexed at chunk size {size}", documents - finished)
        except BaseException:
            self._drop(name)
            raise
        docs = self.knowledge_bases.list_documents(name)
        target.failed_documents = sum(d.status == "failed" for d in docs)
        target.chunk_count = sum(d.chunk_count for d in docs if d.status == "ready")
        target.index_seconds = round(time.perf_counter() - t0, 1)
        return target

    def _drop(self, name: str) -> None:
        try:
            self.knowledge_bases.delete(name)
        except NotFound:
            pass
        except Exception:
            log.exception("could not drop the temporary knowledge base %s", name)

    # -- end-to-end answers ---------------------------------------------------------------------------------------

    @staticmethod
    def _sample(questions: list[EvalQuestion], size: int) -> list[EvalQuestion]:
        """`size` questions with answer text, spread evenly over the set (so every source is represented)."""
        with_answers = [q for q in questions if q.answers]
        if size >= len(with_answers):
            return with_answers
        return [with_answers[i * len(with_answers) // size] for i in range(size)]

    def _check_answers(self, kb_name: str, sample: list[EvalQuestion], steps: _Steps) -> AnswerCheck:
        # A chat service of its own: its LLM client's connections belong to this thread's one event loop.
        chat = self.chat_factory()
        phrases = answers.refusal_phrases(chat.prompts)
        check = AnswerCheck(sample=len(sample), refusal_detection=answers.describe(phrases))
        asyncio.run(self._answer_all(chat, kb_name, sample, phrases, check, steps))
        items = check.items
        check.checked = len(items)
        check.contains_answer = sum(i.contains_answer for i in items)
        check.refused = sum(i.refused for i in items)
        check.gold_retrieved = sum(i.gold_retrieved for i in items)
        check.refused_with_gold_retrieved = sum(i.refused and i.gold_retrieved for i in items)
        check.contains_answer_rate = _share(check.contains_answer, check.checked)
        check.refusal_rate = _share(check.refused, check.checked)
        check.refused_with_gold_rate = _share(check.refused_with_gold_retrieved, check.gold_retrieved)
        return check

    @staticmethod
    async def _answer_all(
        chat: ChatService,
        kb_name: str,
        sample: list[EvalQuestion],
        phrases: list[str],
        check: AnswerCheck,
        steps: _Steps,
    ) -> None:
        """Ask each question in kb mode; an LLM failure ends the check with its reason (the retrieval figures
        stay)."""
        for n, question in enumerate(sample, start=1):
            request = ChatRequest(
                question=question.question, mode=ChatMode.kb, kb_names=[kb_name], rewrite=False, stream=False
            )
            t0 = time.perf_counter()
            try:
                result = await (await chat.start(request)).collect()
            except KBQAError as exc:
                check.error = f"question on line {question.line}: {exc.message}"
                return
            check.items.append(
                AnswerItem(
                    line=question.line,
                    question=question.question,
                    expected_answers=list(question.answers),
                    answer=result.answer,
                    contains_answer=answers.contains_answer(result.answer, question.answers),
                    refused=answers.is_refusal(result.answer, phrases),
                    gold_retrieved=any(is_gold(question, source) for source in result.sources),
                    seconds=round(time.perf_counter() - t0, 2),
                )
            )
            steps.advance(f"answers: {n}/{len(sample)}")


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _metrics(ranks: list[int | None], millis: list[float]) -> Metrics:
    return Metrics(
        questions=len(ranks),
        recall_at_1=round(metrics.recall_at(ranks, 1), 4),
        recall_at_5=round(metrics.recall_at(ranks, 5), 4),
        recall_at_10=round(metrics.recall_at(ranks, 10), 4),
        mrr=round(metrics.mean_reciprocal_rank(ranks), 4),
        latency=metrics.latency(millis),
    )


def _miss(question: EvalQuestion, rank: int | None, hits: list[SearchHit], flags: list[bool]) -> Miss:
    return Miss(
        line=question.line,
        id=question.id,
        question=question.question,
        source=question.source,
        expected=question.expected(),
        gold_rank=rank,
        returned=[
            hit.to(ReturnedHit, rank=r, gold=gold, snippet=hit.text[:SNIPPET_CHARS])
            for r, (hit, gold) in enumerate(zip(hits, flags, strict=True), start=1)
            if r <= RETURNED_SHOWN
        ],
    )


def _suggested(runs: list[RunResult], own_size: int) -> ThresholdSuggestion | None:
    own = [r for r in runs if r.chunk_size == own_size and not r.temporary_kb]
    hybrid = [r for r in own if r.mode is RetrievalMode.hybrid]
    chosen = (hybrid or own)[:1]
    return chosen[0].threshold if chosen else None
