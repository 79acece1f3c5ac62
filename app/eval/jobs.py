"""Evaluations as background jobs: one runs at a time on a thread of its own, so the API stays responsive.

Jobs live in memory (a restart forgets them); the last `eval_jobs_kept` finished ones stay readable.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from app.errors import EvalJobNotFound, KBQAError
from app.eval.models import EvalJobView, EvalReport, JobStatus

log = logging.getLogger(__name__)
FINISHED = {JobStatus.done, JobStatus.failed, JobStatus.cancelled}
Progress = Callable[[float, str], None]  # (0-1 done, what runs now); may raise Cancelled


class Cancelled(Exception):
    """Raised through a progress callback to stop a job."""


class _Job:
    def __init__(self, kb_name: str, questions: int) -> None:
        self.view = EvalJobView(
            id=uuid.uuid4().hex,
            kb_name=kb_name,
            status=JobStatus.queued,
            progress=0.0,
            stage="queued",
            questions=questions,
            created_at=datetime.now(UTC),
        )
        self.cancel = threading.Event()

    def progress(self, fraction: float, stage: str) -> None:
        if self.cancel.is_set():
            raise Cancelled
        self.view.progress, self.view.stage = round(fraction, 4), stage


class EvalJobs:
    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-eval")

    def submit(self, kb_name: str, questions: int, work: Callable[[Progress], EvalReport]) -> EvalJobView:
        job = _Job(kb_name, questions)
        with self._lock:
            self._jobs[job.view.id] = job
            self._forget_old()
        self._executor.submit(self._run, job, work)
        return job.view.model_copy()

    def get(self, job_id: str) -> EvalJobView:
        return self._job(job_id).view.model_copy()

    def list(self) -> list[EvalJobView]:
        """Newest first, without their reports."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.view.model_copy(update={"report": None}) for j in reversed(jobs)]

    def cancel(self, job_id: str) -> EvalJobView:
        """Ask a queued or running job to stop (it stops at its next question; temporary knowledge bases go)."""
        job = self._job(job_id)
        if job.view.status not in FINISHED:
            job.cancel.set()
        return job.view.model_copy()

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise EvalJobNotFound(f"evaluation job {job_id!r} does not exist (jobs are kept in memory until a restart)")
        return job

    def _forget_old(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.view.status in FINISHED]
        for jid in finished[: max(0, len(finished) - self.kept)]:
            del self._jobs[jid]

    def _run(self, job: _Job, work: Callable[[Progress], EvalReport]) -> None:
        view = job.view
        if job.cancel.is_set():
            view.status, view.finished_at, view.stage = JobStatus.cancelled, datetime.now(UTC), "cancelled"
            return
        view.status, view.started_at, view.stage = JobStatus.running, datetime.now(UTC), "starting"
        status, error, report = JobStatus.done, None, None
        try:
            report = work(job.progress)
        except Cancelled:
            status = JobStatus.cancelled
        except KBQAError as exc:
            status, error = JobStatus.failed, exc.message
        except Exception as exc:
            log.exception("evaluation %s failed", view.id)
            status, error = JobStatus.failed, f"{type(exc).__name__}: {exc}"[:2000]
        view.finished_at, view.error, view.report = datetime.now(UTC), error, report
        if report is not None:
            view.progress = 1.0
        view.stage, view.status = status.value, status
        with self._lock:
            self._forget_old()
