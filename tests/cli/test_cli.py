"""The `kbqa` command line against a real API server started in a subprocess."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import closing
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
from rich.console import Console

from app.cli import upload
from app.settings import PROJECT_ROOT
from kbqa_client import KbqaClient
from tests import fixtures_ocr as fo
from tests.conftest import KBQA, api_env, free_port, kbqa_serve


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-log") / "server.log"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    embedding_model_dir: Path,
    backend_settings: dict[str, str],
    server_log: Path,
) -> Iterator[dict[str, str]]:
    env = api_env(tmp_path_factory.mktemp("cli-data"), embedding_model_dir, backend_settings)
    with kbqa_serve(env, server_log):
        yield env


def kbqa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KBQA, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_full_round_trip(server: dict[str, str], tmp_path: Path) -> None:
    assert kbqa(server, "kb", "create", "命令行库", "--description", "CLI test").returncode == 0
    listed = json.loads(kbqa(server, "kb", "list", "--json").stdout)
    assert [kb["name"] for kb in listed] == ["命令行库"]

    note = tmp_path / "笔记.md"
    note.write_text("# 航海\n\n## 灯塔\n\n石屿灯塔建于一八九三年，灯光射程二十二海里。\n", encoding="utf-8")
    other = tmp_path / "notes.txt"
    other.write_text("The Varnholm ferry runs twice a day in winter.", encoding="utf-8")
    uploaded = kbqa(server, "doc", "upload", "命令行库", str(note), str(other))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "2 of 2 files uploaded (1 request); 2 ready, 0 failed" in uploaded.stdout

    docs = json.loads(kbqa(server, "doc", "list", "命令行库", "--json").stdout)
    assert {d["filename"]: d["status"] for d in docs} == {"笔记.md": "ready", "notes.txt": "ready"}
    md = next(d for d in docs if d["filename"] == "笔记.md")
    chunks = json.loads(kbqa(server, "doc", "chunks", "命令行库", md["id"], "--json").stdout)
    assert "石屿灯塔" in chunks[0]["text"] and "灯塔" in chunks[0]["heading"]

    found = json.loads(kbqa(server, "search", "命令行库", "石屿灯塔的射程", "--json", "-k", "1").stdout)
    assert found["hits"][0]["file_name"] == "笔记.md" and 0 <= found["hits"][0]["score"] <= 1
    readable = kbqa(server, "search", "命令行库", "ferry in winter", "--mode", "bm25")
    assert readable.returncode == 0 and "notes.txt" in readable.stdout

    assert kbqa(server, "doc", "delete", "命令行库", md["id"]).returncode == 0
    docs = json.loads(kbqa(server, "doc", "list", "命令行库", "--json").stdout)
    assert [d["filename"] for d in docs] == ["notes.txt"]
    assert kbqa(server, "kb", "delete", "命令行库", "--yes").returncode == 0
    assert json.loads(kbqa(server, "kb", "list", "--json").stdout) == []


def test_upload_a_folder_skips_unsupported_and_reports_bad_files(server: dict[str, str], tmp_path: Path) -> None:
    assert kbqa(server, "kb", "create", "文件夹").returncode == 0
    folder = tmp_path / "资料"
    (folder / "子目录").mkdir(parents=True)
    (folder / "a.txt").write_text("文件夹上传：第一份。", encoding="utf-8")
    (folder / "子目录" / "b.md").write_text("# 标题\n\n文件夹上传：第二份。", encoding="utf-8")
    (folder / "ignored.exe").write_bytes(b"MZ")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    result = kbqa(server, "doc", "upload", "文件夹", str(folder), str(empty))
    assert result.returncode == 1
    assert "2 of 3 files uploaded (1 request); 2 ready, 0 failed" in result.stdout
    assert "empty.txt: refused, empty (0 bytes)" in result.stdout
    assert "skipped 1 file(s) of unsupported type '.exe'" in result.stdout and "ignored.exe" not in result.stdout
    docs = json.loads(kbqa(server, "doc", "list", "文件夹", "--json").stdout)
    assert sorted(d["filename"] for d in docs) == ["a.txt", "b.md"]


def upload_requests(log: Path) -> int:
    """How many upload requests the server answered so far (uvicorn's access log)."""
    lines = log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if re.search(r'"POST /api/kbs/[^/ ]+/documents ', line))


def notes(folder: Path, count: int) -> dict[str, str]:
    """`count` small files of distinct text in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(count):
        written[f"笔记{i:02d}.txt"] = text = f"第{i}号笔记：编号{i * 7919}的仓库存放了{i + 3}箱灯泡。"
        (folder / f"笔记{i:02d}.txt").write_text(text, encoding="utf-8")
    return written


def test_a_folder_goes_up_in_a_few_requests_and_the_bad_files_are_listed(
    server: dict[str, str], server_log: Path, tmp_path: Path
) -> None:
    assert kbqa(server, "kb", "create", "批量").returncode == 0
    good = notes(tmp_path / "批量", 28)
    (tmp_path / "批量" / "空.txt").write_bytes(b"")
    (tmp_path / "批量" / "图纸.xyz").write_bytes(b"not a document")
    before = upload_requests(server_log)
    result = kbqa(server, "doc", "upload", "批量", str(tmp_path / "批量"), "--batch-files", "10")
    assert result.returncode == 1, result.stdout
    assert upload_requests(server_log) - before == 3  # 28 files, 10 per request
    assert "28 of 29 files uploaded (3 requests); 28 ready, 0 failed" in result.stdout
    assert "空.txt: refused, empty (0 bytes)" in result.stdout
    assert "skipped 1 file(s) of unsupported type '.xyz'" in result.stdout
    docs = json.loads(kbqa(server, "doc", "list", "批量", "--json").stdout)
    assert sorted(d["filename"] for d in docs) == sorted(good)
    assert {d["status"] for d in docs} == {"ready"}


def test_a_file_the_server_refuses_does_not_drop_its_neighbours(
    server: dict[str, str], server_log: Path, tmp_path: Path
) -> None:
    """'..txt' looks like a text file here, but the server strips leading dots from names and refuses what is left
    ('txt', no extension) with 415: the batch is refused, so its files are sent again one per request."""
    assert kbqa(server, "kb", "create", "邻居").returncode == 0
    good = notes(tmp_path / "邻居", 3)
    odd = tmp_path / "邻居" / "..txt"
    odd.write_text("名字只有点和扩展名。", encoding="utf-8")
    before = upload_requests(server_log)
    result = kbqa(server, "doc", "upload", "邻居", str(tmp_path / "邻居"))
    assert result.returncode == 1, result.stdout
    assert upload_requests(server_log) - before == 1 + 4
    assert "3 of 4 files uploaded (5 requests); 3 ready" in result.stdout
    assert re.search(r"\.\.txt: refused, 415: .*txt", result.stdout), result.stdout
    docs = json.loads(kbqa(server, "doc", "list", "邻居", "--json").stdout)
    assert sorted(d["filename"] for d in docs) == sorted(good)


def list_polls(log: Path, kb: str, after_line: int) -> list[dict[str, list[str]]]:
    """The query of each GET of the knowledge base's document list the server answered after `after_line` (uvicorn's
    access log), parsed."""
    path = f"/api/kbs/{quote(kb, safe='')}/documents"
    lines = log.read_text(errors="replace").splitlines()[after_line:]
    found = [re.search(rf'"GET {re.escape(path)}(\?[^ ]*)? HTTP', line) for line in lines]
    return [parse_qs((match.group(1) or "?")[1:]) for match in found if match]


def test_upload_follows_only_its_own_documents_still_indexing(
    server: dict[str, str], server_log: Path, tmp_path: Path
) -> None:
    """A knowledge base that already holds documents: the upload's polls ask for its new documents by id, each poll
    for no more than the one before (those finished drop out), never for the whole list."""
    kb = "跟踪 上传"
    assert kbqa(server, "kb", "create", kb).returncode == 0
    for i in range(3):
        (tmp_path / "旧" / f"旧{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "旧" / f"旧{i}.txt").write_text(f"早已存在的第{i}份文件。", encoding="utf-8")
    assert kbqa(server, "doc", "upload", kb, str(tmp_path / "旧")).returncode == 0
    old = {d["id"] for d in json.loads(kbqa(server, "doc", "list", kb, "--json").stdout)}
    notes(tmp_path / "新", 6)
    before = len(server_log.read_text(errors="replace").splitlines())
    result = kbqa(server, "doc", "upload", kb, str(tmp_path / "新"))
    polls = list_polls(server_log, kb, before)
    assert result.returncode == 0, result.stdout
    assert "6 of 6 files uploaded (1 request); 6 ready, 0 failed" in result.stdout
    new = {d["id"] for d in json.loads(kbqa(server, "doc", "list", kb, "--json").stdout)} - old
    assert len(new) == 6 and polls, polls
    assert all(set(poll) == {"ids"} for poll in polls), polls  # never the whole list, never by status
    asked = [set(poll["ids"]) for poll in polls]
    assert asked[0] == new and all(later <= earlier for earlier, later in pairwise(asked))
    # 1000 ids, the most a list may ask for, fit in the request line `kbqa serve` accepts
    with closing(KbqaClient(f"http://127.0.0.1:{server['KBQA_API__PORT']}")) as api:
        assert {d["id"] for d in api.documents(kb, ids=[*new, *(f"{i:032x}" for i in range(994))])} == new


def test_upload_follows_a_window_of_its_oldest_documents(
    server: dict[str, str], server_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More documents than a poll asks for: each poll asks for at most FOLLOW_WINDOW of them, the oldest not yet
    finished, and every document is asked for before the upload ends, all ready."""
    monkeypatch.setattr(upload, "FOLLOW_WINDOW", 2)
    kb = "窗口"
    assert kbqa(server, "kb", "create", kb).returncode == 0
    notes(tmp_path / kb, 7)
    before = len(server_log.read_text(errors="replace").splitlines())
    with closing(KbqaClient(f"http://127.0.0.1:{server['KBQA_API__PORT']}")) as api:
        planned = upload.plan([tmp_path / kb], upload.ServerRules.of(api.status()), batch_files=3)
        tally, finished = upload.FolderUpload(api, kb, Console(file=io.StringIO())).run(planned, wait=True)
    polls = [poll["ids"] for poll in list_polls(server_log, kb, before)]
    assert len(tally.doc_ids) == 7 and {d["status"] for d in finished} == {"ready"} and len(finished) == 7
    assert polls and all(len(ids) <= 2 for ids in polls), polls
    assert {i for ids in polls for i in ids} == set(tally.doc_ids)


def test_the_same_folder_uploaded_twice_at_once_is_stored_once(server: dict[str, str], tmp_path: Path) -> None:
    assert kbqa(server, "kb", "create", "并发").returncode == 0
    good = notes(tmp_path / "并发", 12)
    command = [*KBQA, "doc", "upload", "并发", str(tmp_path / "并发"), "--batch-files", "3", "--parallel", "3"]
    runs = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=server, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    docs = json.loads(kbqa(server, "doc", "list", "并发", "--json").stdout)
    assert sorted(d["filename"] for d in docs) == sorted(good)
    assert {d["status"] for d in docs} == {"ready"}
    assert sum(int(re.search(r"\((\d+) already there\)", o)[1]) for o in outputs if "already" in o) == 12


def test_errors_are_one_line_with_exit_code_1(server: dict[str, str]) -> None:
    missing = kbqa(server, "kb", "show", "没有这个库")
    assert missing.returncode == 1
    assert "404" in missing.stdout and "没有这个库" in missing.stdout and "Traceback" not in missing.stderr
    bad = kbqa(server, "search", "nope", "")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_unreachable_api_says_how_to_start_it(server: dict[str, str]) -> None:
    env = {**server, "KBQA_API_URL": f"http://127.0.0.1:{free_port()}"}
    result = kbqa(env, "kb", "list")
    assert result.returncode == 1
    assert "cannot reach the kbqa API" in result.stdout and "kbqa serve" in result.stdout
    assert "Traceback" not in result.stderr


HOSTILE = "质量?#%报告 & <b>"  # '?', '#', '%', '&' and spaces end or change a URL path unless escaped


def test_every_command_reaches_a_knowledge_base_named_with_url_characters(
    server: dict[str, str], tmp_path: Path
) -> None:
    created = kbqa(server, "kb", "create", HOSTILE, "--json")
    assert created.returncode == 0, created.stdout
    assert json.loads(kbqa(server, "kb", "show", HOSTILE).stdout)["name"] == HOSTILE
    note = tmp_path / f"{HOSTILE}.md"
    note.write_text("# 质检\n\n第三季度质量报告：合格率百分之九十八。\n", encoding="utf-8")
    uploaded = kbqa(server, "doc", "upload", HOSTILE, str(note))
    assert uploaded.returncode == 0, uploaded.stdout
    assert "1 of 1 files uploaded (1 request); 1 ready" in uploaded.stdout

    docs = json.loads(kbqa(server, "doc", "list", HOSTILE, "--json").stdout)
    assert [(d["filename"], d["status"]) for d in docs] == [(f"{HOSTILE}.md", "ready")]
    doc_id = docs[0]["id"]
    assert json.loads(kbqa(server, "doc", "show", HOSTILE, doc_id).stdout)["filename"] == f"{HOSTILE}.md"
    chunks = json.loads(kbqa(server, "doc", "chunks", HOSTILE, doc_id, "--json").stdout)
    assert "合格率" in chunks[0]["text"]
    found = json.loads(kbqa(server, "search", HOSTILE, "第三季度合格率", "--json").stdout)
    assert found["hits"][0]["file_name"] == f"{HOSTILE}.md"
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "第三季度合格率是多少？", "file_name": f"{HOSTILE}.md"}), "utf-8")
    evaluated = kbqa(server, "eval", HOSTILE, str(questions), "-m", "bm25")
    assert evaluated.returncode == 0, evaluated.stdout
    assert f"{HOSTILE}: 1 questions" in evaluated.stdout and "0 questions without a gold hit" in evaluated.stdout
    rebuilt = kbqa(server, "kb", "rebuild", HOSTILE)
    assert rebuilt.returncode == 0 and f"rebuilding {HOSTILE!r}" in rebuilt.stdout, rebuilt.stdout

    assert kbqa(server, "doc", "delete", HOSTILE, doc_id).returncode == 0
    assert json.loads(kbqa(server, "doc", "list", HOSTILE, "--json").stdout) == []
    assert kbqa(server, "kb", "delete", HOSTILE, "--yes").returncode == 0
    assert HOSTILE not in [kb["name"] for kb in json.loads(kbqa(server, "kb", "list", "--json").stdout)]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="OCR needs Tesseract: bash scripts/setup.sh")
def test_doc_list_says_how_each_document_was_read(server: dict[str, str], tmp_path: Path) -> None:
    assert kbqa(server, "kb", "create", "扫描件").returncode == 0
    notice = fo.save_image(fo.picture(fo.ZH_PNG_SENTENCE), tmp_path / "告示.png")
    note = tmp_path / "说明.txt"
    note.write_text("纯文字的说明：图书馆周一闭馆。", encoding="utf-8")
    uploaded = kbqa(server, "doc", "upload", "扫描件", str(notice), str(note))
    assert uploaded.returncode == 0 and "2 ready, 0 failed" in uploaded.stdout, uploaded.stdout
    listed = kbqa({**server, "COLUMNS": "300"}, "doc", "list", "扫描件")
    assert listed.returncode == 0, listed.stdout
    rows = {name: line for line in listed.stdout.splitlines() for name in ("告示.png", "说明.txt") if name in line}
    assert re.search(r"│ OCR 1/1 pages \(conf [01]\.\d\d\) +│", rows["告示.png"]), rows
    assert re.search(r"│ text +│", rows["说明.txt"]), rows
    docs = json.loads(kbqa(server, "doc", "list", "扫描件", "--json").stdout)
    assert {d["filename"]: d["reading"]["ocr_pages"] for d in docs} == {"告示.png": 1, "说明.txt": 0}
