"""Where a server process's own files go: under the data folder, not /tmp or the user's home."""

from __future__ import annotations

import logging
import os
import tempfile

from app.settings import Settings
from app.storage.vector_store import is_lite_uri

log = logging.getLogger(__name__)
_SOCKET_PATH_MAX = 107  # bytes in a Unix socket's address, less the closing NUL
# Milvus Lite names its socket <tempfile.mktemp()>_<db file name>.sock: the folder, "/tmp" and 8 random characters.
_LITE_SOCKET_EXTRA = len("/tmp12345678_.sock")


def keep_process_files_in_data_dir(settings: Settings) -> None:
    """Point this process's temporary files (uploads being received, Milvus Lite's socket, torch's caches) and
    those of the programs it starts at `resolved_tmp_dir`, and Milvus Lite's logs at <logs_dir>/milvus. For a
    whole server process (`kbqa serve`, `kbqa up`), before any library starts: they read these once."""
    tmp, uri = settings.storage.resolved_tmp_dir, settings.storage.resolved_milvus_uri
    socket_path = len(os.fsencode(tmp)) + _LITE_SOCKET_EXTRA + len(os.path.basename(uri))
    if is_lite_uri(uri) and socket_path > _SOCKET_PATH_MAX:
        log.warning(
            "%s is too long a path for Milvus Lite's socket: temporary files stay in %s (set storage.tmp_dir)",
            tmp,
            tempfile.gettempdir(),
        )
        return
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        (settings.storage.logs_dir / "milvus").mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a full disk: the server still starts, and answers what it can
        log.warning("cannot create %s (%s): temporary files stay in %s", tmp, exc, tempfile.gettempdir())
        return
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    os.environ["GOOGLE_LOG_DIR"] = str(settings.storage.logs_dir / "milvus")  # where glog, hence Milvus Lite, logs
