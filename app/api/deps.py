from __future__ import annotations

from fastapi import Request

from app.chat.conversations import ConversationStore
from app.chat.service import ChatService
from app.eval.service import EvaluationService
from app.kb.preview.service import PreviewService
from app.kb.service import KnowledgeBaseService
from app.retrieval.service import SearchService
from app.retrieval.text_embeddings import EmbeddingService
from app.services import Services


def services(request: Request) -> Services:
    return request.app.state.services


def knowledge_bases(request: Request) -> KnowledgeBaseService:
    return services(request).knowledge_bases


def previews(request: Request) -> PreviewService:
    return services(request).previews


def search_service(request: Request) -> SearchService:
    return services(request).search


def chat_service(request: Request) -> ChatService:
    return services(request).chat


def conversations(request: Request) -> ConversationStore:
    return services(request).conversations


def evaluation(request: Request) -> EvaluationService:
    return services(request).evaluation


def embedding_service(request: Request) -> EmbeddingService:
    return services(request).embeddings
