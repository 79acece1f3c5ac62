"""The Python client of the kbqa REST API, shared by the `kbqa` command line and the web UI.

It imports nothing of the backend (`app`): the web UI runs without it, and any other program can use it the same
way. Every path segment is escaped, streamed answers are parsed once, and failures raise ApiError (status, the
API's `code`, a message).
"""

from kbqa_client.client import DEFAULT_API_URL, DocumentFile, KbqaClient, PageImage, api_path, sse_events
from kbqa_client.errors import ApiError, ApiUnreachable, LLMUnavailable, NotFound, Unauthorized

__all__ = [
    "DEFAULT_API_URL",
    "ApiError",
    "ApiUnreachable",
    "DocumentFile",
    "KbqaClient",
    "LLMUnavailable",
    "NotFound",
    "PageImage",
    "Unauthorized",
    "api_path",
    "sse_events",
]
