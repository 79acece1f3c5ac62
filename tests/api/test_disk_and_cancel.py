"""A full data disk, a document deleted while it is indexed, and the files a server writes outside its data folder.

The full disk is real: a small tmpfs is mounted as the data folder and filled with a file, then the file is removed.
Mounting needs root (CAP_SYS_ADMIN); where it is refused the disk tests are skipped, saying so.
"""

from __future__ import annotations

import logging
import math
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.retrieval.embeddings import PROGRESS_STEP
from tests.conftest import (
    api_env,
    create_kb,
    kbqa_serve,
    make_settings,
    upload,
    upload_ready,
    wait_documents,
    wait_until,
)
from tests.fixtures_docs import make_numbered_chinese_text

DISK_MB = 64
DISK_FULL_WORDS = ("磁盘已满", "is full")


# -- a full disk ------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A DISK_MB tmpfs mounted on a fresh folder, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here to fill it (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no room left; the file, to free the space again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for block in (1024 * 1024, 4096, 1):
            with suppress(OSError):  # ENOSPC
                while True:
                    out.write(bytes(block))
    assert shutil.disk_usage(disk).free == 0
    return filler


def disk_env(data_dir: Path, model_dir: Path) -> dict[str, str]:
    # Short leases: the heartbeat that records failures the catalog could not take runs every half second.
    return api_env(data_dir, model_dir, {"storage__min_free_disk_mb": 8, "ingest__lease_s": 2})


def assert_disk_full(response: httpx.Response, data_dir: Path) -> None:
    assert response.status_code == 507, response.text
    assert response.json()["code"] == "disk_full"
    detail = response.json()["detail"]
    assert str(data_dir) in detail and all(word in detail for word in DISK_FULL_WORDS), detail


def post_file(http: httpx.Client, kb: str, name: str, data: bytes) -> httpx.Response:
    return http.post(f"/api/kbs/{kb}/documents", files=[("files", (name, data))])


def uploaded(http: httpx.Client, kb: str, name: str, data: bytes) -> dict:
    response = post_file(http, kb, name, data)
    assert response.status_code == 202, response.text
    return response.json()[0]["document"]


def document(http: httpx.Client, kb: str, doc_id: str) -> dict:
    return http.get(f"/api/kbs/{kb}/documents/{doc_id}").json()


def wait_ready(http: httpx.Client, kb: str, doc_id: str) -> dict:
    wait_until(lambda: document(http, kb, doc_id)["status"] in {"ready", "failed"}, f"{doc_id} to be indexed")
    return document(http, kb, doc_id)


def indexed(http: httpx.Client, kb: str, name: str, text: str) -> dict:
    return wait_ready(http, kb, uploaded(http, kb, name, text.encode())["id"])


def test_a_disk_that_fills_up_refuses_writes_with_507_and_fails_what_was_being_indexed(
    small_disk: Path, embedding_model_dir: Path, tmp_path: Path
) -> None:
    data_dir, log_path = small_disk / "data", tmp_path / "serve.log"
    with (
        kbqa_serve(disk_env(data_dir, embedding_model_dir), log_path) as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        assert http.post("/api/kbs", json={"name": "满盘"}).status_code == 201
        kept = indexed(http, "满盘", "kept.txt", "保留：信天翁一次飞行可达数千公里。")
        assert kept["status"] == "ready"
        big = uploaded(http, "满盘", "big.txt", make_numbered_chinese_text(6000))
        wait_until(lambda: document(http, "满盘", big["id"])["chunks_embedded"] > 0, "the big document's embedding")
        small = uploaded(http, "满盘", "small.txt", "排队中：北极燕鸥每年往返两极。".encode())
        assert document(http, "满盘", small["id"])["status"] == "queued"

        filler = fill(small_disk)
        assert_disk_full(post_file(http, "满盘", "new.txt", "新文件：企鹅不会飞。".encode()), data_dir)
        # Over a megabyte: Starlette spools it to the temporary folder (under the data folder) while it arrives.
        assert_disk_full(post_file(http, "满盘", "large.txt", make_numbered_chinese_text(5000)), data_dir)
        assert_disk_full(http.post("/api/kbs", json={"name": "新库"}), data_dir)
        assert http.get("/health").status_code == 200
        assert [kb["name"] for kb in http.get("/api/kbs").json()] == ["满盘"]
        hits = http.post("/api/kbs/满盘/search", json={"question": "信天翁能飞多远"}).json()["hits"]
        assert hits[0]["doc_id"] == kept["id"]

        def given_up(doc_id: str) -> bool:
            """Failed in the catalog, or, where the catalog could not take it, kept to be recorded."""
            waiting = any("recorded once there is room" in line and doc_id in line for line in log_lines(log_path))
            return waiting or document(http, "满盘", doc_id)["status"] == "failed"

        wait_until(lambda: given_up(big["id"]) and given_up(small["id"]), "indexing to give up on the full disk")
        filler.unlink()

        wait_until(
            lambda: all(document(http, "满盘", d["id"])["status"] == "failed" for d in (big, small)),
            "the failures to be recorded once there is room",
        )
        for doc in (big, small):
            failed = document(http, "满盘", doc["id"])
            assert any(word in failed["error"] for word in DISK_FULL_WORDS), failed
            assert http.get(f"/api/kbs/满盘/documents/{doc['id']}/chunks").json() == []
        assert not [d for d in http.get("/api/kbs/满盘/documents").json() if d["status"] in {"queued", "processing"}]
        assert list((data_dir / "files" / "_incoming").iterdir()) == []  # no half-written upload left behind

        again = indexed(http, "满盘", "small.txt", "排队中：北极燕鸥每年往返两极。")
        assert again["status"] == "ready"
        assert http.delete(f"/api/kbs/满盘/documents/{kept['id']}").status_code == 204
        assert http.post("/api/kbs", json={"name": "新库"}).status_code == 201
        hits = http.post("/api/kbs/满盘/search", json={"question": "北极燕鸥往返哪里"}).json()["hits"]
        assert [h["doc_id"] for h in hits] == [again["id"]]


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def test_a_server_started_on_a_full_disk_answers_reads_and_refuses_writes(
    small_disk: Path, embedding_model_dir: Path, tmp_path: Path
) -> None:
    data_dir = small_disk / "data"
    env = disk_env(data_dir, embedding_model_dir)
    with kbqa_serve(env, tmp_path / "first.log") as served, httpx.Client(base_url=served.url, timeout=60) as http:
        assert http.post("/api/kbs", json={"name": "重启库"}).status_code == 201
        doc = indexed(http, "重启库", "a.txt", "重启前：雪豹生活在高山。")
    filler = fill(small_disk)

    with kbqa_serve(env, tmp_path / "second.log") as served, httpx.Client(base_url=served.url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        assert [kb["name"] for kb in http.get("/api/kbs").json()] == ["重启库"]
        assert [d["status"] for d in http.get("/api/kbs/重启库/documents").json()] == ["ready"]
        hits = http.post("/api/kbs/重启库/search", json={"question": "雪豹生活在哪里"}).json()["hits"]
        assert hits[0]["doc_id"] == doc["id"]
        assert_disk_full(post_file(http, "重启库", "b.txt", "新内容：牦牛耐寒。".encode()), data_dir)
        assert_disk_full(http.post("/api/kbs", json={"name": "另一个库"}), data_dir)
        assert_disk_full(http.delete(f"/api/kbs/重启库/documents/{doc['id']}"), data_dir)

        filler.unlink()
        new = indexed(http, "重启库", "b.txt", "新内容：牦牛耐寒。")
        assert new["status"] == "ready"
        assert http.delete(f"/api/kbs/重启库/documents/{doc['id']}").status_code == 204
        assert [d["id"] for d in http.get("/api/kbs/重启库/documents").json()] == [new["id"]]


# -- deleting a document while it is indexed --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite_client(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("cancel-data"), embedding_model_dir))) as client:
        yield client


def test_deleting_a_document_being_indexed_drops_its_work_and_the_rest_of_its_group_goes_on(
    lite_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A blocker keeps the indexer busy while a small and a big document are uploaded together, so both wait in the
    queue and are taken as one group, embedded in one batch (the big one's chunks first: longest first). Deleting
    the blocker lets them start; the big one is deleted once its embedding is under way: its work stops at the next
    step, and the small one is indexed right after."""
    caplog.set_level(logging.INFO, logger="app.kb.ingestion")
    client = lite_client
    create_kb(client, "取消")

    def state(doc: dict) -> dict:
        return client.get(f"/api/kbs/取消/documents/{doc['id']}").json()

    blocker = upload(client, "取消", ("blocker.txt", make_numbered_chinese_text(4000)))[0]["document"]
    wait_until(lambda: state(blocker)["chunks_embedded"] > 0, "the blocker's embedding")
    small_file = ("small.txt", "同组的小文件：蜂鸟每秒振翅五十次。".encode())
    pair = upload(client, "取消", small_file, ("big.txt", make_numbered_chinese_text(5000)))
    small, big = (outcome["document"] for outcome in pair)
    assert [state(small)["status"], state(big)["status"]] == ["queued", "queued"]
    assert client.delete(f"/api/kbs/取消/documents/{blocker['id']}").status_code == 204

    wait_until(lambda: state(big)["chunks_embedded"] > 0, "the big document's embedding")
    big_then = state(big)
    assert big_then["status"] == "processing" and big_then["chunks_embedded"] < big_then["chunk_count"], big_then
    assert state(small)["status"] == "processing"  # the same group
    assert client.delete(f"/api/kbs/取消/documents/{big['id']}").status_code == 204

    assert wait_documents(client, "取消", [small["id"]])[0]["status"] == "ready"
    later = upload_ready(client, "取消", ("later.txt", "删除之后上传：树懒每周下树一次。".encode()))[0]
    assert later["status"] == "ready"

    cancels = [r for r in caplog.records if "cancelled" in r.getMessage() and big["id"] in r.getMessage()]
    assert len(cancels) == 1, [r.getMessage() for r in caplog.records]
    _, _, embedded, total = cancels[0].args  # type: ignore[misc]
    assert total == big_then["chunk_count"]
    steps = math.ceil(total / PROGRESS_STEP)
    assert 0 < embedded < total and math.ceil(embedded / PROGRESS_STEP) < steps
    store = client.app.state.services.store  # type: ignore[attr-defined]
    collection = client.get("/api/kbs/取消").json()["collection_name"]
    assert store.count_document_chunks(collection, big["id"]) == 0
    assert store.count_document_chunks(collection, blocker["id"]) == 0
    assert store.count_document_chunks(collection, small["id"]) == 1
    hits = client.post("/api/kbs/取消/search", json={"question": "蜂鸟每秒振翅几次"}).json()["hits"]
    assert hits[0]["doc_id"] == small["id"]


# -- files outside the data folder ------------------------------------------------------------------------------------


def files_in(folder: Path) -> list[str]:
    """Everything under `folder` but directories."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def test_a_server_keeps_its_files_in_the_data_folder(embedding_model_dir: Path, tmp_path: Path) -> None:
    """HOME and TMPDIR point at empty folders; after an upload and a search they hold none of the server's files
    (before: Milvus Lite's socket and logs in TMPDIR, ONNX Runtime's telemetry database under ~/.cache). Milvus
    Lite's server makes an empty ~/.cache/milvus while it runs (its binary reads HOME), and only that."""
    home, tmp, data_dir = tmp_path / "home", tmp_path / "tmp", tmp_path / "data"
    home.mkdir()
    tmp.mkdir()
    env = api_env(data_dir, embedding_model_dir)
    env.update({"HOME": str(home), "TMPDIR": str(tmp)})
    for inherited in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY", "GOOGLE_LOG_DIR"):  # the server sets its own
        env.pop(inherited, None)
    allowed_dirs = {".cache", ".cache/milvus"}

    def assert_nothing_outside() -> None:
        assert files_in(home) == [] and files_in(tmp) == []
        assert {str(p.relative_to(home)) for p in home.rglob("*")} <= allowed_dirs
        assert list(tmp.iterdir()) == []

    with kbqa_serve(env, tmp_path / "serve.log") as served, httpx.Client(base_url=served.url, timeout=60) as http:
        assert http.post("/api/kbs", json={"name": "本地"}).status_code == 201
        doc = indexed(http, "本地", "s.txt", "本地文件：海獭睡觉时手拉手。")
        assert doc["status"] == "ready"
        hits = http.post("/api/kbs/本地/search", json={"question": "海獭怎么睡觉"}).json()["hits"]
        assert hits[0]["doc_id"] == doc["id"]
        assert_nothing_outside()
        sockets = [p for p in (data_dir / "tmp").iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
        assert [p.name.endswith("_milvus.db.sock") for p in sockets] == [True]
    assert_nothing_outside()
    assert any(name.startswith("milvus.") for name in files_in(data_dir / "logs" / "milvus"))


def test_a_data_folder_too_long_for_milvus_lites_socket_keeps_the_system_temporary_folder(
    embedding_model_dir: Path, tmp_path: Path
) -> None:
    """A Unix socket's path holds at most 107 bytes: under a long data folder Milvus Lite could not listen, so the
    server keeps the system's temporary folder for its socket (and says so) rather than not starting."""
    data_dir = tmp_path / ("长" * 30)  # 90 bytes: <data_dir>/tmp/tmpXXXXXXXX_milvus.db.sock would not fit
    env = api_env(data_dir, embedding_model_dir)
    with kbqa_serve(env, tmp_path / "serve.log") as served, httpx.Client(base_url=served.url, timeout=60) as http:
        assert http.post("/api/kbs", json={"name": "长路径"}).status_code == 201
        assert indexed(http, "长路径", "a.txt", "长路径：鲸鲨是最大的鱼。")["status"] == "ready"
    assert "too long a path for Milvus Lite's socket" in (tmp_path / "serve.log").read_text()
