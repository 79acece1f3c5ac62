"""The API served by a real uvicorn on a free port, for clients that need a socket (the web UI, disconnects)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from app.api.main import create_app
from app.settings import Settings
from tests.conftest import free_port


@contextmanager
def serving(settings: Settings, port: int | None = None, start_timeout_s: float = 120) -> Iterator[str]:
    """Serve create_app(settings) in a thread on `port` (a free one by default); yields its base URL and stops it
    afterwards."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
