"""Where the Streamlit web UI (webui_st.py) is launched: its own process, pointed at the API by environment.

The UI imports nothing from `app`; it learns the API's URL, the key to send and its starting language from
KBQA_API_URL, KBQA_CLIENT_API_KEY and KBQA_UI_LANGUAGE, which are set here from the one settings object.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

from app.llm.stack import answers_ok, die_with_parent, port_is_free, tail
from app.settings import PROJECT_ROOT, Settings, setting_ref

WEBUI_SCRIPT = PROJECT_ROOT / "webui_st.py"
LOG_NAME = "webui.log"


class UIError(RuntimeError):
    """The UI could not start: its port is taken or the process died."""


def ui_argv(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(WEBUI_SCRIPT),
        "--server.address",
        settings.ui.host,
        "--server.port",
        str(settings.ui.port),
        "--server.headless",
        "true",
        "--server.maxUploadSize",
        str(math.ceil(settings.ingest.max_upload_mb)),
        "--browser.gatherUsageStats",
        "false",
    ]


def ui_environment(settings: Settings) -> dict[str, str]:
    return os.environ | {
        "KBQA_API_URL": settings.api.url,
        "KBQA_CLIENT_API_KEY": settings.security.resolved_client_api_key,
        "KBQA_UI_LANGUAGE": settings.ui.language,
    }


def start_ui(settings: Settings, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """Start the UI in the background (it dies with this process) and wait until it answers."""
    if not port_is_free(settings.ui.host, settings.ui.port):
        raise UIError(f"port {settings.ui.port} on {settings.ui.host} is taken; set {setting_ref('ui.port')}")
    settings.storage.logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.storage.logs_dir / LOG_NAME
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            ui_argv(settings),
            cwd=PROJECT_ROOT,
            env=ui_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    deadline = time.monotonic() + timeout_s
    while not answers_ok(f"{settings.ui.url}/_stcore/health"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise UIError(f"the web UI did not start; the end of {log_file}:\n{tail(log_file)}")
        time.sleep(0.3)
    return process
