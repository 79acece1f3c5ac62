"""`kbqa eval` against a real API server started in a subprocess (the CLI talks to the REST API)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT
from tests.conftest import KBQA, api_env, kbqa_serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path) -> Iterator[dict[str, str]]:
    env = api_env(tmp_path_factory.mktemp("cli-eval-data"), embedding_model_dir)
    with kbqa_serve(env, tmp_path_factory.mktemp("cli-eval-log") / "server.log"):
        yield env


def kbqa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KBQA, *args], cwd=PROJECT_ROOT, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300
    )


def test_eval_prints_tables_and_writes_the_json_report(server: dict[str, str], tmp_path: Path) -> None:
    created = kbqa(server, "kb", "create", "灯塔库", "--chunk-size", "300", "--json")
    assert created.returncode == 0 and json.loads(created.stdout)["chunk_size"] == 300
    files = {
        "石屿灯塔.md": "石屿灯塔建于一八九三年，塔高三十六米，灯光射程二十二海里。",
        "ferry.txt": "The Varnholm ferry runs twice a day in winter and every hour in summer.",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    uploaded = kbqa(server, "doc", "upload", "灯塔库", *(str(tmp_path / name) for name in files))
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    questions = tmp_path / "q.jsonl"
    rows = [
        {"question": "石屿灯塔建于哪一年？", "doc_id": "石屿灯塔"},
        {"question": "How often does the ferry run in winter?", "file_name": "ferry.txt"},
        {"question": "火星基地在哪里？", "doc_id": "火星基地"},
    ]
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    report_path = tmp_path / "report.json"
    result = kbqa(
        server, "eval", "灯塔库", str(questions), "-m", "hybrid", "-m", "bm25", "-c", "100", "--json", str(report_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recall@5" in result.stdout and "300/30" in result.stdout and "100/10 (copy)" in result.stdout
    assert "火星基地在哪里" in result.stdout  # the miss, with what came back instead
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert [(r["chunk_size"], r["mode"]) for r in report["runs"]] == [
        (300, "hybrid"),
        (300, "bm25"),
        (100, "hybrid"),
        (100, "bm25"),
    ]
    assert report["runs"][0]["overall"]["recall_at_1"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["runs"][0]["misses"][0]["line"] == 3


def test_eval_errors_are_one_line(server: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "doc_id": "x"}\nnot json\n', encoding="utf-8")
    unknown = kbqa(server, "eval", "没有这个库", str(bad))
    assert unknown.returncode == 1 and "404" in unknown.stdout and "没有这个库" in unknown.stdout
    assert kbqa(server, "kb", "create", "坏行库").returncode == 0
    (tmp_path / "a.txt").write_text("内容", encoding="utf-8")
    assert kbqa(server, "doc", "upload", "坏行库", str(tmp_path / "a.txt")).returncode == 0
    result = kbqa(server, "eval", "坏行库", str(bad))
    assert result.returncode == 1 and "422: line 2: not valid JSON" in result.stdout
    assert "Traceback" not in result.stderr
