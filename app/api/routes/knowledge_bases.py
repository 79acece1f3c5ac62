"""Knowledge bases: create, list, inspect, delete, rebuild."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import Field

from app.api.deps import knowledge_bases
from app.kb.service import KnowledgeBaseService
from app.kb.views import KnowledgeBaseInfo
from app.settings import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN
from app.validation import RequestModel

router = APIRouter(prefix="/api/kbs", tags=["knowledge bases"])
KBs = Annotated[KnowledgeBaseService, Depends(knowledge_bases)]


class CreateKnowledgeBase(RequestModel):
    name: str = Field(description="Display name; Chinese and punctuation are fine (no '/', '\\\\' or control chars)")
    description: str = Field("", max_length=2000)
    chunk_size: int | None = Field(
        None, description=f"Characters per chunk ({CHUNK_SIZE_MIN}-{CHUNK_SIZE_MAX}), set at creation (a rebuild may "
        "change it); default: the ingest.chunk_size setting"
    )
    chunk_overlap: int | None = Field(
        None, description="Characters shared by neighbouring chunks (< chunk_size); default: chunk_overlap scaled"
    )


class RebuildKnowledgeBase(RequestModel):
    chunk_size: int | None = Field(None, description="New characters per chunk; default: keep the current one")
    chunk_overlap: int | None = Field(None, description="New overlap; default: chunk_overlap scaled to the size")


@router.get("")
def list_knowledge_bases(kbs: KBs) -> list[KnowledgeBaseInfo]:
    """All knowledge bases with their document and chunk counts."""
    return kbs.list()


@router.post("", status_code=status.HTTP_201_CREATED)
def create_knowledge_base(body: CreateKnowledgeBase, kbs: KBs) -> KnowledgeBaseInfo:
    """Create an empty knowledge base (409 if the name is taken, 422 if the name or chunking is unusable)."""
    return kbs.create(body.name, body.description, body.chunk_size, body.chunk_overlap)


@router.get("/{kb_name}")
def get_knowledge_base(kb_name: str, kbs: KBs) -> KnowledgeBaseInfo:
    return kbs.get(kb_name)


@router.delete("/{kb_name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_knowledge_base(kb_name: str, kbs: KBs) -> None:
    """Delete the knowledge base, its Milvus collection and its stored files."""
    kbs.delete(kb_name)


@router.post("/{kb_name}/rebuild", status_code=status.HTTP_202_ACCEPTED)
def rebuild_knowledge_base(kb_name: str, kbs: KBs, body: RebuildKnowledgeBase | None = None) -> KnowledgeBaseInfo:
    """Re-index every stored file with the configured embedding model (in the background); the knowledge base
    keeps its chunking unless the body gives a new chunk_size / chunk_overlap."""
    body = body or RebuildKnowledgeBase()
    return kbs.rebuild(kb_name, body.chunk_size, body.chunk_overlap)
