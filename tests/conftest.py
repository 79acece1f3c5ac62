"""Shared fixtures: the real embedding model (prepared once), and per-module API instances over their own
Milvus Lite file and SQLite catalog in a temporary folder."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.settings import DEFAULT_EMBEDDING_DIRNAME, PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from app.llm.stack import LLMStack

SHARED = PROJECT_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A file from ../shared, or a skip saying why it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared documents and eval sets live beside the project root")
    return path


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    from app.modelprep.prepare import prepare_embedding_model

    data_dir = Path(os.environ.get("KBQA_DATA_DIR", PROJECT_ROOT / "data"))
    return prepare_embedding_model(data_dir / "models" / DEFAULT_EMBEDDING_DIRNAME)


@pytest.fixture(scope="session")
def llm_model_file() -> Path:
    from app.modelprep.llm_gguf import prepare_llm_model

    data_dir = Path(os.environ.get("KBQA_DATA_DIR", PROJECT_ROOT / "data"))
    return prepare_llm_model(data_dir / "models")


def llm_settings(data_dir: Path, model_file: Path, workers: int = 1, **overrides: object) -> Settings:
    """Settings for a FastChat stack of its own (free ports, logs under data_dir) serving the real model."""
    from app.settings import WorkerSettings

    worker_options = {"model_path": str(model_file), "context_length": 2048, "threads": 2 if workers == 1 else 1}
    options: dict[str, object] = {
        "data_dir": data_dir,
        "fastchat_controller_port": free_port(),
        "fastchat_api_port": free_port(),
        "fastchat_heart_beat_s": 5,
        "llm_workers": [WorkerSettings(port=free_port(), **worker_options) for _ in range(workers)],
        "llm_temperature": 0.0,
        "llm_max_tokens": 128,
    }
    return Settings(**(options | overrides))  # type: ignore[arg-type]


@contextmanager
def running_llm_stack(settings: Settings) -> Iterator[LLMStack]:
    from app.llm.stack import LLMStack

    stack = LLMStack(settings, report=lambda _line: None)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def llm_stack(tmp_path_factory: pytest.TempPathFactory, llm_model_file: Path) -> Iterator[LLMStack]:
    """The real FastChat stack (controller, openai_api_server, llama.cpp worker), once per test session."""
    with running_llm_stack(llm_settings(tmp_path_factory.mktemp("llm-stack"), llm_model_file)) as stack:
        yield stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_settings(data_dir: Path, model_dir: Path, **overrides: object) -> Settings:
    return Settings(data_dir=data_dir, embedding_model=str(model_dir), **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Settings:
    return make_settings(tmp_path_factory.mktemp("kbqa-data"), embedding_model_dir)


@pytest.fixture(scope="module")
def client(module_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings)) as test_client:
        yield test_client


def wait_documents(client: TestClient, kb: str, doc_ids: list[str] | None = None, timeout: float = 600) -> list[dict]:
    """Poll until the documents (all of the knowledge base by default) are ready or failed."""
    deadline = time.monotonic() + timeout
    while True:
        docs = client.get(f"/api/kbs/{kb}/documents").json()
        watched = [d for d in docs if doc_ids is None or d["id"] in doc_ids]
        if all(d["status"] in {"ready", "failed"} for d in watched):
            return watched
        if time.monotonic() > deadline:
            raise TimeoutError(f"documents still indexing after {timeout} s: {watched}")
        time.sleep(0.2)


def upload(client: TestClient, kb: str, *files: tuple[str, bytes]) -> list[dict]:
    response = client.post(f"/api/kbs/{kb}/documents", files=[("files", (name, data)) for name, data in files])
    assert response.status_code == 202, response.text
    return response.json()


def upload_ready(client: TestClient, kb: str, *files: tuple[str, bytes]) -> list[dict]:
    outcomes = upload(client, kb, *files)
    return wait_documents(client, kb, [o["document"]["id"] for o in outcomes])


def create_kb(client: TestClient, name: str) -> dict:
    response = client.post("/api/kbs", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def settings_from_env() -> Iterator[None]:
    """For CLI tests that set KBQA_* variables: the cached settings are rebuilt before and after."""
    from app.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
