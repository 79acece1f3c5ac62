"""Rewrite uses of the flat settings (`settings.milvus_uri`, `Settings(data_dir=...)`, KBQA_MILVUS_URI) to the
sectioned ones (`settings.storage.milvus_uri`, `Settings(storage__data_dir=...)`, KBQA_STORAGE__MILVUS_URI).

Idempotent: run it again after a rebase brings in code written against the flat names. The mapping comes from
app/settings.py (LEGACY_NAMES, MOVED). It prints each change; review them with `git diff`.

    python scripts/dev/rename_settings.py            # rewrite in place
    python scripts/dev/rename_settings.py --check    # list what would change, exit 1 if anything would

What it rewrites, in Python files under app/, kbqa_client/, webui/, scripts/, tests/ and webui_st.py:
- attributes read on a settings object (a name or attribute ending in `settings`, `Settings()`, `get_settings()`,
  or a local name assigned from one, e.g. `s = self.settings`): `s.llm_model` -> `s.llm.model`;
- keywords of Settings(), make_settings(), llm_settings(), with_changes(): `data_dir=` -> `storage__data_dir=`;
- `<settings>.model_copy(update={"flat": v})` -> `<settings>.with_changes(section__name=v)`;
- dict literals whose keys are all flat setting names (not request bodies: json=, data=, params=), and string keys
  of `overrides[...]`, `storage[...]`, `backend_settings[...]`: "milvus_uri" -> "storage__milvus_uri";
- the string "load_max_xml_mb" (a loader limit a test expects named in a message) -> "limits.max_xml_mb";
- environment variable names in string constants: "KBQA_MILVUS_URI" -> "KBQA_STORAGE__MILVUS_URI", except those the
  web UI process reads itself (KBQA_API_URL, KBQA_CLIENT_API_KEY, KBQA_UI_LANGUAGE: the launcher's contract with
  webui/, which imports nothing of app) and `${KBQA_...}` (docker-compose's variables on the host).
The deployment files (docker-compose*.yml, Dockerfile, docs/deploy.md, scripts/*.sh) and tests/test_deploy.py,
which reads them, keep the flat names: they stay valid aliases, and compose's host variables are the deployer's.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.settings import LEGACY_NAMES, MOVED, env_name  # noqa: E402

PLACES = ["app", "kbqa_client", "webui", "scripts", "tests", "webui_st.py"]
SKIP = {"app/settings.py", "tests/test_settings.py", "scripts/dev/rename_settings.py"}
ENV_SKIP = {"tests/test_deploy.py"}
UI_CONTRACT = {"api_url", "client_api_key", "ui_language"}
BUILDERS = re.compile(r"(?:^|\.)(?:Settings|make_settings|llm_settings|with_changes)$")
SETTINGS_LIKE = re.compile(r"(?:^|\.)(?:_?settings|Settings|get_settings|make_settings|llm_settings|settings_from)$")
OVERRIDE_DICTS = {"overrides", "storage", "backend_settings"}
BODY_KEYWORDS = {"json", "data", "params", "files", "form"}
LINE_LENGTH = 120  # pyproject.toml's [tool.ruff]
ENV = re.compile(r"(?<!\$\{)\bKBQA_([A-Z0-9_]+)\b")


def new_key(flat: str) -> str:
    section, name = LEGACY_NAMES[flat]
    return f"{section}__{name}"


class Source:
    """A file's bytes, with AST positions (line, UTF-8 column) turned into byte offsets."""

    def __init__(self, text: str) -> None:
        self.data = text.encode()
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def at(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined, arg-type]

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.data[start:end].decode()


def call_name(source: Source, node: ast.AST) -> str:
    return source.text(node.func) if isinstance(node, ast.Call) else source.text(node)


def settings_aliases(tree: ast.AST, source: Source) -> set[str]:
    """Local names bound to a settings object: assigned from one, or annotated Settings."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and SETTINGS_LIKE.search(call_name(source, node.value)):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.arg) and node.annotation is not None and source.text(node.annotation) == "Settings":
            names.add(node.arg)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and source.text(node.annotation) == "Settings"
        ):
            names.add(node.target.id)
    return names


def is_settings(source: Source, node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Name) and node.id in aliases:
        return True
    return bool(SETTINGS_LIKE.search(call_name(source, node))) and (
        not isinstance(node, ast.Call) or (not node.args and not node.keywords)
    )


def body_dicts(tree: ast.AST) -> set[int]:
    """Dict literals that are request bodies or update= arguments: left alone by the dict-key rule."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and (node.arg in BODY_KEYWORDS or node.arg == "update"):
            skipped |= {id(n) for n in ast.walk(node.value) if isinstance(n, ast.Dict)}
    return skipped


def flat_dict(node: ast.Dict) -> bool:
    keys = [k for k in node.keys if k is not None]
    return bool(keys) and all(isinstance(k, ast.Constant) and k.value in LEGACY_NAMES for k in keys)


def edits(text: str) -> Iterator[tuple[int, int, str, int]]:
    """(start, end, replacement, line) for each change in one Python file."""
    source = Source(text)
    tree = ast.parse(text)
    aliases = settings_aliases(tree, source)
    skipped = body_dicts(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in MOVED and is_settings(source, node.value, aliases):
            _, end = source.span(node)
            yield end - len(node.attr), end, MOVED[node.attr], node.lineno
        elif isinstance(node, ast.Call) and BUILDERS.search(source.text(node.func)):
            for kw in node.keywords:
                if kw.arg in LEGACY_NAMES:
                    start = source.at(kw.lineno, kw.col_offset)
                    yield start, start + len(kw.arg), new_key(kw.arg), kw.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "model_copy":
            update = next((kw.value for kw in node.keywords if kw.arg == "update"), None)
            if isinstance(update, ast.Dict) and flat_dict(update) and is_settings(source, node.func.value, aliases):
                pairs = ", ".join(
                    f"{new_key(k.value)}={source.text(v)}" for k, v in zip(update.keys, update.values, strict=True)  # type: ignore[union-attr]
                )
                start, end = source.span(node)
                yield start, end, f"{source.text(node.func.value)}.with_changes({pairs})", node.lineno
        elif isinstance(node, ast.Dict) and id(node) not in skipped and flat_dict(node):
            for key in node.keys:
                if key is not None:
                    start, end = source.span(key)
                    yield start, end, f'"{new_key(key.value)}"', key.lineno  # type: ignore[attr-defined]
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in OVERRIDE_DICTS
            and isinstance(node.slice, ast.Constant)
            and node.slice.value in LEGACY_NAMES
        ):
            start, end = source.span(node.slice)
            yield start, end, f'"{new_key(node.slice.value)}"', node.lineno
        elif isinstance(node, ast.Constant) and node.value in LEGACY_NAMES and node.value.startswith("load_"):
            start, end = source.span(node)
            yield start, end, f'"{MOVED[node.value]}"', node.lineno


def env_edits(text: str) -> Iterator[tuple[int, int, str, int]]:
    """Environment variable names inside the string constants (f-strings' parts included) of one Python file."""
    source = Source(text)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "KBQA_" in node.value:
            start, end = source.span(node)
            original = source.data[start:end].decode()
            renamed = ENV.sub(_renamed_env, original)
            if renamed != original:
                yield start, end, renamed, node.lineno


def _renamed_env(match: re.Match[str]) -> str:
    flat = match.group(1).lower()
    if flat not in LEGACY_NAMES or flat in UI_CONTRACT:
        return match.group(0)
    return env_name(MOVED[flat])


def rewrite_python(text: str, where: str, report: list[str], env: bool) -> str:
    text = _apply(text, edits(text), where, report)
    return _apply(text, env_edits(text), where, report) if env else text


def _apply(text: str, changes: Iterator[tuple[int, int, str, int]], where: str, report: list[str]) -> str:
    data = text.encode()
    taken: list[tuple[int, int]] = []
    for start, end, replacement, line in sorted(set(changes), reverse=True):
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue  # inside a change already made (a model_copy call rewritten whole)
        taken.append((start, end))
        report.append(f"{where}:{line}: {data[start:end].decode()} -> {replacement}")
        data = data[:start] + replacement.encode() + data[end:]
    return data.decode()


def files() -> Iterator[Path]:
    for place in PLACES:
        path = ROOT / place
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.relative_to(ROOT).as_posix() not in SKIP:
                yield file


def shorten_long_lines(file: Path, before: str) -> None:
    """Lines the renaming pushed past the line length, each statement reformatted alone (`ruff format --range`)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    old = set(before.splitlines())
    lines = file.read_text(encoding="utf-8").splitlines()
    long = [n for n, line in enumerate(lines, 1) if len(line) > LINE_LENGTH and line not in old]
    for number in reversed(long):
        subprocess.run([ruff, "format", "--quiet", "--range", f"{number}:1-{number}:{len(lines[number - 1]) + 1}",
                        str(file)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only list the changes; exit 1 if there are any")
    args = parser.parse_args()
    report: list[str] = []
    for file in files():
        where = file.relative_to(ROOT).as_posix()
        before = file.read_text(encoding="utf-8")
        after = rewrite_python(before, where, report, env=where not in ENV_SKIP)
        if after != before and not args.check:
            file.write_text(after, encoding="utf-8")
            shorten_long_lines(file, before)
    print("\n".join(report) or "nothing to rename")
    return 1 if args.check and report else 0


if __name__ == "__main__":
    sys.exit(main())
