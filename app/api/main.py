"""The FastAPI application: routers, error mapping and the services' lifetime."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from pymilvus.exceptions import MilvusException
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from app.api.auth import ApiKeyMiddleware, ApiKeys, bearer_scheme
from app.api.guards import GuardMiddleware, RequestGuard
from app.api.responses import error_body, error_response, openai_error
from app.api.routes import chat, documents, evaluation, knowledge_bases, openai_compat, previews, search, status
from app.api.routes.openai_compat import validation_message
from app.errors import InvalidInput, KBQAError
from app.services import Services
from app.settings import Settings, get_settings
from app.storage.catalog import Catalog, CatalogUnavailable
from app.storage.diskspace import DiskFull, is_disk_full
from app.storage.vector_store import VectorStoreUnavailable

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        app.state.services = services
        services.query_embedder()
        warmup = services.warm_passage_embedder()
        try:
            resumed = services.queue.resume_unfinished()
        except Exception as exc:  # started on a full disk: the heartbeat's sweep resumes them once there is room
            if not is_disk_full(exc):
                raise
            log.warning("the disk holding %s is full: unfinished documents wait for room", settings.storage.data_dir)
            resumed = 0
        if resumed:
            log.info("resumed indexing of %d unfinished documents", resumed)
        try:
            yield
        finally:
            warmup.join(120)  # a process leaving while a thread is inside OpenVINO's compiler may crash on exit
            services.close()

    app = FastAPI(
        title="kbqa",
        description="Local knowledge-base question answering: knowledge bases, documents, retrieval and chat.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(KBQAError)
    async def _kbqa_error(_request: Request, exc: KBQAError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path.startswith("/v1/"):  # OpenAI clients read OpenAI's error shape
            return openai_error(InvalidInput(validation_message(list(exc.errors()))))
        return error_body(422, renderable_errors(exc.errors()), "validation_error")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.__cause__ is not None and is_disk_full(exc.__cause__):
            return _disk_full()  # an upload being received could not be spooled to the temporary folder
        if exc.status_code == 400 and documents.part_header_too_long(exc):
            return error_body(422, documents.name_too_long(settings), "file_name_too_long")
        if not is_body_allowed_for_status_code(exc.status_code):
            return await http_exception_handler(request, exc)
        return error_body(exc.status_code, exc.detail, http_error_code(exc), exc.headers)

    @app.exception_handler(VectorStoreUnavailable)
    @app.exception_handler(MilvusException)
    @app.exception_handler(grpc.RpcError)  # pymilvus lets some time-outs through unwrapped (a busy or frozen server)
    async def _milvus_error(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("Milvus error: %s", exc)
        reason = getattr(exc, "message", None) or _rpc_reason(exc) or str(exc)
        detail = f"vector store unavailable at {settings.storage.resolved_milvus_uri}: {reason.splitlines()[0][:300]}"
        return error_body(503, detail, "vector_store_unavailable")

    @app.exception_handler(CatalogUnavailable)
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _catalog_error(request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):
            return _disk_full()
        log.warning("catalog error: %s", exc)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        catalog: Catalog | None = getattr(getattr(request.app.state, "services", None), "catalog", None)
        where = catalog.display_url if catalog else "the configured storage.catalog_url"
        return error_body(503, f"catalog database unavailable at {where}: {reason}", "catalog_unavailable")

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> JSONResponse:
        if is_disk_full(exc):
            return _disk_full()
        raise exc

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        return error_body(500, "Internal Server Error", KBQAError.code)  # uvicorn logs the traceback

    def _disk_full() -> JSONResponse:
        log.warning("the disk holding %s is full", settings.storage.data_dir)
        return error_response(DiskFull(settings.storage.data_dir))

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    keys = ApiKeys(settings.security.api_keys)
    documented = [Security(bearer_scheme)] if keys else []  # the key in the OpenAPI docs; checked below
    for routes in (knowledge_bases, documents, previews, search, chat, openai_compat, status, evaluation):
        app.include_router(routes.router, dependencies=documented)
    if keys:
        # Every route needs the key but /health and the API's own description (see app/api/auth.py).
        docs = [app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url]
        app.add_middleware(ApiKeyMiddleware, keys=keys, open_paths=["/health", *filter(None, docs)])
    # Before the key check: Host, Origin and the body's size and pace (app/api/guards.py).
    app.add_middleware(GuardMiddleware, guard=RequestGuard(settings))
    if settings.security.cors_origins:
        # Added last, so it runs first: preflight requests are answered before any key is asked for.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.security.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    return app


HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def _rpc_reason(exc: Exception) -> str | None:
    """"DEADLINE_EXCEEDED: Deadline Exceeded" for a gRPC error (its str() is a multi-line repr)."""
    if not isinstance(exc, grpc.Call):
        return None
    return f"{exc.code().name}: {exc.details()}"


def http_error_code(exc: HTTPException) -> str:
    """The code of an HTTP error raised outside the services (an unknown path, a malformed body): the body
    guard's own, else by status."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else HTTP_ERROR_CODES.get(exc.status_code, f"http_{exc.status_code}")


def renderable_errors(errors: Sequence[Any]) -> list[Any]:
    """Pydantic's errors in a form JSON can carry: a part holding NaN or a lone surrogate (often the very input that
    was refused) becomes its JSON text, since a JSON response may hold neither."""
    encoded = jsonable_encoder(errors)
    for error in encoded:
        for key, value in error.items():
            try:
                json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
            except ValueError:  # UnicodeEncodeError is one too
                error[key] = json.dumps(value)
    return encoded


def server_options(settings: Settings) -> dict[str, Any]:
    """What `kbqa serve` and `kbqa up` give uvicorn.run: the h11 parser (httptools sets no limit on headers), whose
    request line and headers together may hold max_header_kb."""
    return {"http": "h11", "h11_max_incomplete_event_size": settings.limits.max_header_kb * 1024}
