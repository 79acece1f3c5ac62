"""What a client needs to know before it asks: is the LLM up, which files and limits the API accepts."""

from __future__ import annotations

from pydantic import BaseModel

from app.errors import KBQAError
from app.kb.loaders import SUPPORTED_EXTENSIONS
from app.llm.client import LLMClient
from app.settings import Settings


class LLMStatus(BaseModel):
    reachable: bool
    base_url: str
    model: str
    serves_model: bool = False
    models: list[str] = []
    detail: str | None = None


class Limits(BaseModel):
    max_upload_mb: float
    max_request_mb: float  # one upload request, all its files together
    max_question_chars: int
    default_top_k: int  # 知识库测试 and search
    kb_top_k: int = 5  # the chunks a 知识库问答 prompt gets (chat.kb_top_k)
    max_top_k: int
    default_score_threshold: float
    chat_max_kbs: int
    chat_history_turns: int
    llm_temperature: float


class SystemStatus(BaseModel):
    api: str = "ok"
    llm: LLMStatus
    file_types: list[str]
    limits: Limits


def llm_status(settings: Settings, llm: LLMClient) -> LLMStatus:
    status = LLMStatus(reachable=False, base_url=settings.resolved_llm_base_url, model=settings.llm.model)
    try:
        status.models = llm.list_models()
    except KBQAError as exc:
        status.detail = exc.message
        return status
    status.reachable = True
    status.serves_model = settings.llm.model in status.models
    if not status.serves_model:
        status.detail = f"the LLM server does not list {settings.llm.model!r} (it serves: {', '.join(status.models)})"
    return status


def system_status(settings: Settings, llm: LLMClient) -> SystemStatus:
    return SystemStatus(
        llm=llm_status(settings, llm),
        file_types=sorted(SUPPORTED_EXTENSIONS),
        limits=Limits(
            max_upload_mb=settings.ingest.max_upload_mb,
            max_request_mb=settings.limits.max_request_mb,
            max_question_chars=settings.chat.max_question_chars,
            default_top_k=settings.retrieval.default_top_k,
            kb_top_k=settings.chat.kb_top_k,
            max_top_k=settings.retrieval.max_top_k,
            default_score_threshold=settings.retrieval.default_score_threshold,
            chat_max_kbs=settings.chat.max_kbs,
            chat_history_turns=settings.chat.history_turns,
            llm_temperature=settings.llm.temperature,
        ),
    )
