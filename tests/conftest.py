"""Shared fixtures: the real embedding model (prepared once), and per-module API instances over their own
storage, once per backend: a Milvus Lite file with a SQLite catalog ("lite-sqlite"), and a Milvus server reached
over TCP with a PostgreSQL catalog ("server-postgresql"). The servers are real and start once per session (a
Milvus Lite server binary on a TCP port; a private PostgreSQL cluster in a temporary folder); each test module gets
its own PostgreSQL database and drops the Milvus collections it created."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.settings import DEFAULT_EMBEDDING_DIRNAME, PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from app.llm.stack import LLMStack
    from app.storage.catalog import Catalog

SHARED = PROJECT_ROOT.parent / "shared"
# Starlette's TestClient sends `Host: testserver`, a name the API refuses unless told it is served as it
# (allowed_hosts, see app/api/guards.py); tests of that check set their own.
os.environ.setdefault("KBQA_SECURITY__ALLOWED_HOSTS", "testserver")


def shared_path(*parts: str) -> Path:
    """A file from ../shared, or a skip saying why it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared documents and eval sets live beside the project root")
    return path


LLM_FIXTURES = {"llm_stack", "llm_model_file"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs the real LLM (`llm`) or a real browser (`browser`): minutes each, so a developer can run
    the rest alone with `-m "not llm and not browser"`; scripts/test.sh runs everything."""
    for item in items:
        if LLM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.llm)
        if item.path.name == "test_webui_browser.py":
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    from app.modelprep.prepare import prepare_embedding_model

    return prepare_embedding_model(Settings().storage.models_dir / DEFAULT_EMBEDDING_DIRNAME)


@pytest.fixture(scope="session")
def llm_model_file() -> Path:
    from app.modelprep.llm_gguf import prepare_llm_model

    return prepare_llm_model(Settings().storage.models_dir)


def llm_settings(data_dir: Path, model_file: Path, workers: int = 1, **overrides: object) -> Settings:
    """Settings for a FastChat stack of its own (free ports, logs under data_dir) serving the real model."""
    from app.settings import WorkerSettings

    # prefill_weights bf16: what auto ships on CPUs that multiply bf16 in hardware, tested on every CPU.
    worker_options = {"model_path": str(model_file), "context_length": 2048, "threads": 2 if workers == 1 else 1,
                      "prefill_weights": "bf16"}
    options: dict[str, object] = {
        "storage__data_dir": data_dir,
        "fastchat__controller_port": free_port(),
        "fastchat__api_port": free_port(),
        "fastchat__heart_beat_s": 5,
        "fastchat__workers": [WorkerSettings(port=free_port(), **worker_options) for _ in range(workers)],
        "llm__temperature": 0.0,
        "llm__max_tokens": 128,
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
    return Settings(storage__data_dir=data_dir, embedding__model=str(model_dir), **overrides)  # type: ignore[arg-type]


def answering_settings(
    data_dir: Path, model_dir: Path, stack: LLMStack, max_tokens: int, **overrides: object
) -> Settings:
    """Settings whose answers come from `stack`'s FastChat door, greedy (temperature 0) so a test sees the same
    answer each run, and at most `max_tokens` long."""
    return make_settings(
        data_dir,
        model_dir,
        llm__base_url=stack.settings.fastchat.api_url,
        llm__temperature=0.0,
        llm__max_tokens=max_tokens,
        **overrides,
    )


class MilvusOverTcp:
    """Milvus Lite's own server binary on a TCP port: the same gRPC protocol as Milvus standalone, so the code path
    is the one a Milvus server or cluster gets."""

    def __init__(self, folder: Path) -> None:
        from milvus_lite.server import Server

        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server = Server(str(folder / "server.db"), address=f"127.0.0.1:{self.port}")

    def start(self) -> None:
        assert self.server.init() and self.server.start(), "milvus-lite server did not start"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.collections()
                return
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"Milvus at {self.uri} did not answer")

    def collections(self) -> set[str]:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=5)
        try:
            return set(client.list_collections())
        finally:
            client.close()

    def drop_collections_except(self, keep: set[str]) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=30)
        try:
            for name in set(client.list_collections()) - keep:
                client.drop_collection(name)
        finally:
            client.close()

    def stop(self) -> None:
        if self.server._p is not None:
            self.server._p.terminate()
        self.server.stop()


def postgres_bin_dir() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest version installed), or None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


class PostgresServer:
    """A private PostgreSQL cluster in a temporary folder, on 127.0.0.1 and a free port; trust authentication and
    no fsync (throw-away test data). initdb refuses to run as root, so as root it runs as the `postgres` user that
    Debian's package creates. The server's time zone is not UTC, so time-zone slips show up in the tests."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="kbqa-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.folder.chmod(0o755)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c timezone=Asia/Shanghai "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"kbqa_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(POSTGRES_ABSENT)
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


POSTGRES_ABSENT = "PostgreSQL's server binaries are absent (/usr/lib/postgresql/*/bin); scripts/setup.sh installs them"


@dataclass(frozen=True)
class Backend:
    """Where an API instance keeps its data: Milvus Lite file or Milvus server over TCP; SQLite or PostgreSQL."""

    milvus: str  # "lite" | "server"
    catalog: str  # "sqlite" | "postgresql"

    def __str__(self) -> str:
        return f"{self.milvus}-{self.catalog}"


# The two ways the product is deployed: one machine (embedded files), and servers over the network.
BACKENDS = [Backend("lite", "sqlite"), Backend("server", "postgresql")]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusOverTcp]:
    """One Milvus server over TCP for the whole session; each module drops the collections it created."""
    server = MilvusOverTcp(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the whole session; each module gets a database of its own."""
    with running_postgres() as server:
        yield server


@contextmanager
def backend_overrides(request: pytest.FixtureRequest, backend: Backend) -> Iterator[dict[str, str]]:
    """The settings that point an API instance at `backend`: empty for the embedded files; for the servers, a fresh
    PostgreSQL database (dropped afterwards) and the shared Milvus server (this block's collections dropped after)."""
    overrides: dict[str, str] = {}
    milvus: MilvusOverTcp | None = None
    postgres: PostgresServer | None = None
    if backend.milvus == "server":
        milvus = request.getfixturevalue("milvus_server")
        overrides["storage__milvus_uri"] = milvus.uri
        existing = milvus.collections()
    if backend.catalog == "postgresql":
        postgres = request.getfixturevalue("postgres_server")
        database = postgres.create_database()
        overrides["storage__catalog_url"] = postgres.url(database)
    try:
        yield overrides
    finally:
        if milvus is not None:
            milvus.drop_collections_except(existing)
        if postgres is not None:
            postgres.drop_database(database)


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture(scope="module")
def backend_settings(request: pytest.FixtureRequest, backend: Backend) -> Iterator[dict[str, str]]:
    """This module's storage settings on the current backend (see `backend_overrides`)."""
    with backend_overrides(request, backend) as overrides:
        yield overrides


@pytest.fixture(scope="module")
def module_settings(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, backend_settings: dict[str, str]
) -> Settings:
    return make_settings(tmp_path_factory.mktemp("kbqa-data"), embedding_model_dir, **backend_settings)


@pytest.fixture(scope="module")
def client(module_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings)) as test_client:
        yield test_client


def wait_documents(client: TestClient, kb: str, doc_ids: list[str] | None = None, timeout: float = 600) -> list[dict]:
    """Poll until the documents (all of the knowledge base by default) are ready or failed; given ids, only those
    are listed (the API's `ids` filter, at most 1000)."""
    if doc_ids == []:
        return []
    deadline = time.monotonic() + timeout
    params = {"ids": doc_ids} if doc_ids is not None else None
    while True:
        response = client.get(f"/api/kbs/{kb}/documents", params=params)
        assert response.status_code == 200, response.text
        watched = response.json()
        if all(d["status"] in {"ready", "failed"} for d in watched):
            return watched
        if time.monotonic() > deadline:
            raise TimeoutError(f"documents still indexing after {timeout} s: {watched}")
        time.sleep(0.2)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 300, poll_s: float = 0.2) -> None:
    """Poll a state until it holds; `timeout` only bounds a hang (fails naming `what`), it is no time window. The
    one poll loop of the tests, for states another process owns (catalog rows, HTTP resources, worker status)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(poll_s)


class DocState(NamedTuple):
    """A document's indexing state as the catalog holds it."""

    status: str
    claimed_by: str | None
    index_attempts: int
    chunks_embedded: int

    def held_by(self, pid: int) -> bool:
        """Claimed by that process (a claim reads `host:pid:token`)."""
        return bool(self.claimed_by) and self.claimed_by.split(":")[-2] == str(pid)  # type: ignore[union-attr]


def doc_state(catalog: Catalog, doc_id: str) -> DocState:
    from app.storage.catalog import Document

    with catalog.session() as session:
        doc = session.get(Document, doc_id)
        assert doc is not None, f"document {doc_id} is not in the catalog"
        return DocState(doc.status.value, doc.claimed_by, doc.index_attempts or 0, doc.chunks_embedded or 0)


def wait_doc_state(
    catalog: Catalog, doc_id: str, reached: Callable[[DocState], bool], passing: set[str], timeout: float = 300
) -> DocState:
    """Poll the catalog until the document's state is `reached`; on the way its status may only be in `passing`.
    Another process writes that state, so there is no event to wait on: `wait_until` polls."""
    seen: list[DocState] = []

    def reached_now() -> bool:
        seen.append(state := doc_state(catalog, doc_id))
        if reached(state):
            return True
        assert state.status in passing, state
        return False

    wait_until(reached_now, f"document {doc_id} to reach its state", timeout, poll_s=0.02)
    return seen[-1]


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


KBQA = [sys.executable, "-m", "app.cli"]


def api_env(data_dir: Path, model_dir: Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `kbqa` process: its data folder, the model, a free API port and any setting overrides
    (as KBQA_<NAME> variables)."""
    env = {
        **os.environ,
        "KBQA_STORAGE__DATA_DIR": str(data_dir),
        "KBQA_EMBEDDING__MODEL": str(model_dir),
        "KBQA_API__PORT": str(free_port()),
    }
    env.update({f"KBQA_{name.upper()}": str(value) for name, value in (overrides or {}).items()})
    env.pop("KBQA_API_URL", None)
    return env


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def kbqa_serve(env: dict[str, str], log_path: Path, timeout: float = 120) -> Iterator[Served]:
    """`kbqa serve` in a subprocess (a real uvicorn) with `env`, once /health answers; stopped afterwards."""
    import httpx

    url = f"http://127.0.0.1:{env['KBQA_API__PORT']}"
    with log_path.open("w") as log:
        process = subprocess.Popen([*KBQA, "serve"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"kbqa serve did not come up: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield Served(url, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def settings_from_env() -> Iterator[None]:
    """For CLI tests that set KBQA_* variables: the cached settings are rebuilt before and after."""
    from app.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
