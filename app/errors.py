"""Errors the services raise; the HTTP layer maps each to one status code, and puts its `code` (a stable
snake_case name of the kind of error, listed in README's "Error codes") beside the message in the error body."""

from __future__ import annotations


class KBQAError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(KBQAError):
    """404. The subclasses name the kind of resource missing, in their code; plain `not_found` is left for paths."""

    status_code = 404
    code = "not_found"


class KnowledgeBaseNotFound(NotFound):
    code = "kb_not_found"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class EvalJobNotFound(NotFound):
    code = "eval_job_not_found"


class ModelNotFound(NotFound):
    """A model name the server does not serve (the LLM's, a `kb:<name>`, the embedding model's)."""

    code = "model_not_found"


class Conflict(KBQAError):
    status_code = 409
    code = "conflict"


class InvalidInput(KBQAError):
    status_code = 422
    code = "invalid_input"


class UnsupportedMediaType(KBQAError):
    status_code = 415
    code = "unsupported_file_type"


class PayloadTooLarge(KBQAError):
    status_code = 413
    code = "too_large"


class ServiceUnavailable(KBQAError):
    status_code = 503
    code = "service_unavailable"


class InsufficientStorage(KBQAError):
    status_code = 507
    code = "disk_full"
