"""Retrieval evaluation: start one on a knowledge base (a background job), follow it, read its report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from pydantic import Field

from app.api.deps import evaluation
from app.errors import InvalidInput
from app.eval.models import EvalJobView
from app.eval.service import EvaluationService
from app.validation import RequestModel

router = APIRouter(tags=["evaluation"])
Evaluations = Annotated[EvaluationService, Depends(evaluation)]
MODES_HELP = "Retrieval modes to compare: dense, bm25, hybrid (default: all three)"
SIZES_HELP = "Chunk sizes to try besides the knowledge base's own; each indexes a temporary copy of its files"
OVERLAP_HELP = "Overlap for those sizes (default: chunk_overlap scaled to each size)"
SAMPLE_HELP = "Questions with answer text to send to the LLM in kb mode (0: no answer check)"


class EvalRequest(RequestModel):
    questions: list[Any] = Field(
        description='Objects as the JSONL lines: {"question", "doc_id" | "file_name" | "answer(s)", "source", "id"}'
    )
    modes: list[str] | None = Field(None, description=MODES_HELP)
    chunk_sizes: list[int] = Field(default_factory=list, description=SIZES_HELP)
    chunk_overlap: int | None = Field(None, description=OVERLAP_HELP)
    answer_sample: int = Field(0, description=SAMPLE_HELP)


def _accepted(job: EvalJobView, response: Response) -> EvalJobView:
    response.headers["Location"] = f"/api/eval/jobs/{job.id}"
    return job


def _csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _ints(parts: list[str], name: str) -> list[int]:
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise InvalidInput(f"{name} must be whole numbers separated by commas, got {','.join(parts)!r}") from None


@router.post("/api/kbs/{kb_name}/eval", status_code=status.HTTP_202_ACCEPTED)
def start_evaluation_upload(
    kb_name: str,
    response: Response,
    service: Evaluations,
    file: Annotated[UploadFile, File(description="The question set: JSONL, one question per line")],
    modes: Annotated[str | None, Form(description=MODES_HELP + ", comma-separated")] = None,
    chunk_sizes: Annotated[str | None, Form(description=SIZES_HELP + ", comma-separated")] = None,
    chunk_overlap: Annotated[int | None, Form(description=OVERLAP_HELP)] = None,
    answer_sample: Annotated[int, Form(description=SAMPLE_HELP)] = 0,
) -> EvalJobView:
    """Evaluate retrieval with an uploaded JSONL question set: 202 with the job; poll GET /api/eval/jobs/{id}.

    Each line: `{"question": "…", "doc_id": "…"}` and/or `"file_name"`, `"answer"`/`"answers"`; optional
    `"source"` (per-source figures) and `"id"`. 422 names the first bad line; 413 over eval_max_questions or
    eval_max_file_mb; 404 for an unknown knowledge base; 409 when it has no ready documents.
    """
    service.knowledge_bases.require(kb_name)
    data = file.file.read(int(service.settings.eval.max_file_mb * 1024 * 1024) + 1)
    questions = service.parse_jsonl(data)
    sizes = _ints(_csv(chunk_sizes), "chunk_sizes")
    options = service.options(_csv(modes) or None, sizes, chunk_overlap, answer_sample)
    return _accepted(service.start(kb_name, questions, options), response)


@router.post("/api/kbs/{kb_name}/eval/json", status_code=status.HTTP_202_ACCEPTED)
def start_evaluation_json(kb_name: str, body: EvalRequest, response: Response, service: Evaluations) -> EvalJobView:
    """The same as POST /api/kbs/{kb_name}/eval with the questions in a JSON body (errors name "question N")."""
    service.knowledge_bases.require(kb_name)
    questions = service.parse_rows(body.questions)
    options = service.options(body.modes, body.chunk_sizes, body.chunk_overlap, body.answer_sample)
    return _accepted(service.start(kb_name, questions, options), response)


@router.get("/api/eval/jobs")
def list_evaluation_jobs(service: Evaluations) -> list[EvalJobView]:
    """Evaluation jobs, newest first, without their reports (kept in memory until a restart)."""
    return service.jobs.list()


@router.get("/api/eval/jobs/{job_id}")
def get_evaluation_job(job_id: str, service: Evaluations) -> EvalJobView:
    """Status (queued, running, done, failed, cancelled), progress 0-1 and stage; the report once done, the
    reason once failed."""
    return service.jobs.get(job_id)


@router.delete("/api/eval/jobs/{job_id}", status_code=status.HTTP_202_ACCEPTED)
def cancel_evaluation_job(job_id: str, service: Evaluations) -> EvalJobView:
    """Ask a queued or running evaluation to stop; it ends as `cancelled` (a finished job is left as it is)."""
    return service.jobs.cancel(job_id)
