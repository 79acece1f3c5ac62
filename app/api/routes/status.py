"""The backend's state for clients: LLM reachability, accepted file types, limits and defaults."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.api.deps import services
from app.services import Services
from app.status.service import SystemStatus, system_status

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/status")
def status(svc: Annotated[Services, Depends(services)]) -> SystemStatus:
    """Whether the LLM answers (and serves the configured model), the file types uploads accept, and the
    limits and defaults of questions and searches. Answers 200 even when the LLM is down."""
    return system_status(svc.settings, svc.llm)
