"""KbqaClient: one method per REST call the CLI and the web UI make.

Paths are built from segments, each escaped whole (`quote(..., safe="")`), so a knowledge-base name such as
'质量?#%报告 & <b>' reaches `/api/kbs/%E8%B4%A8%E9%87%8F%3F%23%25...` instead of ending the path at '?'. Streamed
answers are parsed by httpx-sse in one place, `sse_events`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import IO, Any, NamedTuple
from urllib.parse import quote, unquote

import httpx
from httpx_sse import EventSource, connect_sse

from kbqa_client.errors import ApiUnreachable, error_from_response

DEFAULT_API_URL = "http://127.0.0.1:7861"
IDS_PER_REQUEST = 200  # 7.4 KB of query string each; the server takes up to 1000 ids a request
LONG_CALL_S = 300.0  # uploads, evaluations being started, answers: work on the server before the reply
Content = bytes | IO[bytes]


def api_path(*segments: str) -> str:
    """'/api/kbs/<name>/documents' from ('kbs', name, 'documents'), every segment escaped."""
    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)


class DocumentFile(NamedTuple):
    filename: str
    media_type: str
    content: bytes


class PageImage(NamedTuple):
    png: bytes
    highlight: str | None  # where the chunk was found: text_layer, ocr or none (None: no chunk was asked for)


def _disposition_name(header: str) -> str:
    """The file name of a Content-Disposition header: its UTF-8 `filename*` when there is one."""
    encoded = re.search(r"filename\*=UTF-8''([^;]+)", header, re.IGNORECASE)
    if encoded:
        return unquote(encoded.group(1).strip())
    plain = re.search(r'filename="([^"]*)"', header)
    return plain.group(1) if plain else ""


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON events of a streamed (text/event-stream) response, in order."""
    for event in EventSource(response).iter_sse():
        yield event.json()


class KbqaClient:
    """The kbqa REST API at `base_url`, sending `api_key` as a Bearer token when there is one. Every failure raises
    an ApiError (ApiUnreachable when there is no answer at all)."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        api_key: str = "",
        timeout_s: float = 30.0,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s)
        )
        self.long_timeout = httpx.Timeout(max(timeout_s, LONG_CALL_S), connect=connect_timeout_s)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed JSON body of a call (None when empty); an error status raises its ApiError."""
        response = self.response(method, path, **kwargs)
        return response.json() if response.content else None

    def response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The whole response of a call (for bodies that are not JSON); an error status raises its ApiError."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    # -- status, knowledge bases ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.request("GET", api_path("status"))

    def knowledge_bases(self) -> list[dict[str, Any]]:
        return self.request("GET", api_path("kbs"))

    def knowledge_base(self, name: str) -> dict[str, Any]:
        return self.request("GET", api_path("kbs", name))

    def create_knowledge_base(
        self, name: str, description: str = "", chunk_size: int | None = None, chunk_overlap: int | None = None
    ) -> dict[str, Any]:
        """chunk_size and chunk_overlap left out take the server's defaults."""
        body = {"name": name, "description": description, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
        return self.request("POST", api_path("kbs"), json=body)

    def delete_knowledge_base(self, name: str) -> None:
        self.request("DELETE", api_path("kbs", name))

    def rebuild_knowledge_base(self, name: str) -> None:
        self.request("POST", api_path("kbs", name, "rebuild"))

    def search(self, kb: str, question: str, top_k: int = 5, score_threshold: float = 0.0, mode: str = "hybrid") -> Any:
        body = {"question": question, "top_k": top_k, "score_threshold": score_threshold, "mode": mode}
        return self.request("POST", api_path("kbs", kb, "search"), json=body)

    # -- documents -----------------------------------------------------------------------------------------------

    def documents(
        self, kb: str, ids: Iterable[str] | None = None, status: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """The knowledge base's documents, oldest first; only those among `ids` (at most 1000) and in `status`
        (queued, processing, ready, failed) when given. An unknown id is simply absent. An empty `ids` or `status`
        matches nothing (sent, it would be no filter at all)."""
        params = {name: list(values) for name, values in (("ids", ids), ("status", status)) if values is not None}
        if not all(params.values()):
            return []
        return self.request("GET", api_path("kbs", kb, "documents"), params=params)

    def documents_by_id(self, kb: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The documents of `ids` that exist, by id, asked for IDS_PER_REQUEST at a time: what a client following
        its uploads polls, at a cost bounded by what it follows rather than the knowledge base's size."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            found.update((d["id"], d) for d in self.documents(kb, ids=wanted[start : start + IDS_PER_REQUEST]))
        return found

    def document(self, kb: str, doc_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("kbs", kb, "documents", doc_id))

    def upload(self, kb: str, filename: str, content: Content) -> dict[str, Any]:
        """Upload one file; the outcome says whether it was queued or already there."""
        return self.upload_many(kb, [(filename, content)])[0]

    def upload_many(self, kb: str, files: list[tuple[str, Content]]) -> list[dict[str, Any]]:
        """Upload files in one request: one outcome each, in order. The server refuses the whole request (413, 415,
        422) if one file is refused."""
        parts = [("files", (filename, content)) for filename, content in files]
        return self.request("POST", api_path("kbs", kb, "documents"), files=parts, timeout=self.long_timeout)

    def delete_document(self, kb: str, doc_id: str) -> None:
        self.request("DELETE", api_path("kbs", kb, "documents", doc_id))

    def chunks(self, kb: str, doc_id: str, offset: int = 0, limit: int = 20) -> list[dict[str, Any]]:
        path = api_path("kbs", kb, "documents", doc_id, "chunks")
        return self.request("GET", path, params={"offset": offset, "limit": limit})

    # -- previews of a source (a chat source's or a search hit's `preview_url` is the chunk context's path) ------

    def document_file(self, kb: str, doc_id: str) -> DocumentFile:
        """The exact bytes uploaded, with the original file name and media type."""
        path = api_path("kbs", kb, "documents", doc_id, "file")
        response = self.response("GET", path, params={"download": "true"}, timeout=self.long_timeout)
        media_type = response.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
        name = _disposition_name(response.headers.get("content-disposition", ""))
        return DocumentFile(name, media_type, response.content)

    def chunk_context(self, kb: str, doc_id: str, index: int, before: int = 2, after: int = 2) -> dict[str, Any]:
        """The chunk with its neighbours, `kind` (pdf_page, text, rows, slide, picture) and preview links."""
        path = api_path("kbs", kb, "documents", doc_id, "chunks", str(index))
        return self.request("GET", path, params={"before": before, "after": after})

    def preview(self, preview_url: str, before: int = 2, after: int = 2) -> dict[str, Any]:
        """The chunk context a source's `preview_url` links to."""
        return self.request("GET", preview_url, params={"before": before, "after": after})

    def page_image(self, kb: str, doc_id: str, page: int, chunk: int | None = None) -> PageImage:
        """A PDF page or a picture (page `page` of a multi-page TIFF) as PNG bytes, the chunk's lines highlighted
        when `chunk` is given."""
        path = api_path("kbs", kb, "documents", doc_id, "pages", f"{page}.png")
        params = {} if chunk is None else {"chunk": chunk}
        response = self.response("GET", path, params=params, timeout=self.long_timeout)
        return PageImage(response.content, response.headers.get("x-highlight"))

    # -- evaluation ----------------------------------------------------------------------------------------------

    def start_evaluation(
        self,
        kb: str,
        questions_jsonl: Content,
        modes: list[str],
        chunk_sizes: list[int],
        answer_sample: int = 0,
        chunk_overlap: int | None = None,
        filename: str = "questions.jsonl",
    ) -> dict[str, Any]:
        """Start a retrieval evaluation job on a JSONL question set; poll it with evaluation_job()."""
        form = {"modes": ",".join(modes), "chunk_sizes": ",".join(map(str, chunk_sizes))}
        form |= {"answer_sample": str(answer_sample)}
        if chunk_overlap is not None:
            form["chunk_overlap"] = str(chunk_overlap)
        files = [("file", (filename, questions_jsonl, "application/jsonl"))]
        return self.request("POST", api_path("kbs", kb, "eval"), data=form, files=files, timeout=self.long_timeout)

    def evaluation_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("eval", "jobs", job_id))

    def cancel_evaluation(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", api_path("eval", "jobs", job_id))

    # -- chat ----------------------------------------------------------------------------------------------------

    def new_conversation(self, title: str = "") -> str:
        return self.request("POST", api_path("conversations"), json={"title": title})["id"]

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("conversations", conversation_id))

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer at once (知识库测试 has no LLM part to stream)."""
        return self.request("POST", api_path("chat"), json=body | {"stream": False}, timeout=self.long_timeout)

    def chat_events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The events of a streamed answer: sources, delta..., then done or error (the LLM failed mid-answer).

        Bad input, an unknown knowledge base or a down LLM raise their ApiError before any event."""
        body = body | {"stream": True}
        try:
            with connect_sse(self.http, "POST", api_path("chat"), json=body, timeout=self.long_timeout) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise error_from_response(source.response)
                yield from sse_events(source.response)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, exc) from exc
