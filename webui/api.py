"""The UI's one door to the backend: the kbqa REST API over httpx.

Every failure becomes an ApiError that says whether the API was unreachable, refused the key, or answered with an
error status (and which), so a page can show a precise, friendly message instead of a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_API_URL = "http://127.0.0.1:7861"


class ApiError(Exception):
    """status is None when the API could not be reached at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" for item in detail)
    return str(detail)


class KbqaApi:
    """A thin client of the REST API, sending the API key as a Bearer token when there is one."""

    def __init__(self, base_url: str, api_key: str = "", timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=3.0))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError(_detail(response), response.status_code)
        return response.json() if response.content else None

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/api/status")

    def knowledge_bases(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/kbs")

    def create_knowledge_base(self, name: str, description: str = "") -> dict[str, Any]:
        return self.request("POST", "/api/kbs", json={"name": name, "description": description})

    def delete_knowledge_base(self, name: str) -> None:
        self.request("DELETE", f"/api/kbs/{_segment(name)}")

    def documents(self, kb: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/api/kbs/{_segment(kb)}/documents")

    def upload(self, kb: str, name: str, data: bytes) -> dict[str, Any]:
        """Upload one file; the outcome says whether it was queued or already there."""
        outcomes = self.request(
            "POST", f"/api/kbs/{_segment(kb)}/documents", files=[("files", (name, data))], timeout=300.0
        )
        return outcomes[0]

    def delete_document(self, kb: str, doc_id: str) -> None:
        self.request("DELETE", f"/api/kbs/{_segment(kb)}/documents/{_segment(doc_id)}")

    def chunks(self, kb: str, doc_id: str, offset: int = 0, limit: int = 20) -> list[dict[str, Any]]:
        path = f"/api/kbs/{_segment(kb)}/documents/{_segment(doc_id)}/chunks"
        return self.request("GET", path, params={"offset": offset, "limit": limit})

    def start_evaluation(
        self,
        kb: str,
        questions_jsonl: bytes,
        modes: list[str],
        chunk_sizes: list[int],
        answer_sample: int,
    ) -> dict[str, Any]:
        """Start a retrieval evaluation job on a JSONL question set; poll it with evaluation_job()."""
        form = {
            "modes": ",".join(modes),
            "chunk_sizes": ",".join(map(str, chunk_sizes)),
            "answer_sample": answer_sample,
        }
        files = [("file", ("questions.jsonl", questions_jsonl, "application/jsonl"))]
        return self.request("POST", f"/api/kbs/{_segment(kb)}/eval", data=form, files=files, timeout=120.0)

    def evaluation_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/eval/jobs/{_segment(job_id)}")

    def cancel_evaluation(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/api/eval/jobs/{_segment(job_id)}")

    def new_conversation(self, title: str = "") -> str:
        return self.request("POST", "/api/conversations", json={"title": title})["id"]

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/conversations/{_segment(conversation_id)}")

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer at once (used for 知识库测试, which has no LLM part)."""
        return self.request("POST", "/api/chat", json=body | {"stream": False}, timeout=120.0)

    def chat_events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The Server-Sent Events of a streamed answer: sources, delta..., then done or error.

        An error status (bad input, unknown knowledge base, LLM down) raises before any event."""
        try:
            with self.http.stream(
                "POST", "/api/chat", json=body | {"stream": True}, timeout=httpx.Timeout(300.0, connect=3.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(_detail(response), response.status_code)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line.removeprefix("data: "))
        except httpx.TransportError as exc:
            raise ApiError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc


def _segment(value: str) -> str:
    """A path segment with every reserved character escaped (knowledge-base names may hold '?', '#', spaces)."""
    return quote(value, safe="")
