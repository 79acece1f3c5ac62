"""Imports run one way: storage -> knowledge base -> retrieval -> chat -> evaluation -> API / CLI, on a base of
settings, errors and request validation. LLM serving and model preparation stand beside the layers: they import only
the base (and each other), and the layers reach LLM serving only through its OpenAI client; the top (the API, the
CLI and what wires them) may use all of them.

Every module under app/ is parsed with `ast`, and every import in it counts, those inside functions and under
TYPE_CHECKING included. The checker is run on small planted packages too, so a checker that saw nothing would fail.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

# Lowest first. A module belongs to the entry that is the longest prefix of its dotted name; the root package
# itself (its __init__) only to the entry naming it exactly.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("app", "app.settings", "app.errors", "app.validation"),  # the base: settings, error types, request bodies
    ("app.storage",),  # Milvus collections, the catalog's tables, the disk
    ("app.kb",),  # loaders, splitter, ingestion, the knowledge-base service
    ("app.retrieval",),  # embeddings, search, scores
    ("app.chat",),  # chat modes, prompts, conversations
    ("app.eval",),  # the retrieval evaluation
    # The top: what serves and wires everything (services builds every layer; status asks the LLM and the loaders;
    # process_files and webui_launcher start processes for the CLI).
    ("app.api", "app.cli", "app.services", "app.status", "app.process_files", "app.webui_launcher"),
)
BESIDE = ("app.llm", "app.modelprep")
# All the layers between the base and the top may import of what stands beside them.
BESIDE_ENTRIES = ("app.llm.client",)


@dataclass(frozen=True)
class Rules:
    layers: tuple[tuple[str, ...], ...]
    beside: tuple[str, ...]
    beside_entries: tuple[str, ...]

    @property
    def root(self) -> str:
        return self.layers[0][0]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (for `from X import name`: X.name when that is a module, else X)
    where: str  # file:line


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_name(path: Path, source_root: Path) -> str:
    parts = path.relative_to(source_root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(source_root: Path, package: str) -> dict[str, Path]:
    return {_module_name(p, source_root): p for p in sorted((source_root / package).rglob("*.py"))}


def _imports(name: str, path: Path, where: str, known: set[str], package: str) -> Iterator[Import]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if _within(target, package):
                yield Import(name, target, f"{where}:{node.lineno}")


def _place(name: str, rules: Rules) -> int | str | None:
    """The layer's index, "beside", or None for a module no rule places."""
    if name == rules.root:
        return 0
    best: tuple[int, int | str] | None = None
    candidates = [(entry, i) for i, layer in enumerate(rules.layers) for entry in layer if entry != rules.root]
    candidates += [(entry, "beside") for entry in rules.beside]
    for entry, place in candidates:
        if _within(name, entry) and (best is None or len(entry) > best[0]):
            best = (len(entry), place)
    return None if best is None else best[1]


def _problem(imp: Import, rules: Rules) -> str | None:
    source, target = _place(imp.module, rules), _place(imp.target, rules)
    top = len(rules.layers) - 1
    if target is None:
        return None  # reported once, as an unplaced module, when the target is one of ours
    if source == "beside":
        if target == "beside" or target == 0:
            return None
        return f"{imp.module} ({imp.where}) imports {imp.target}: beside the layers, only the base may be imported"
    assert isinstance(source, int)
    if target == "beside":
        if source == top or (source > 0 and any(_within(imp.target, e) for e in rules.beside_entries)):
            return None
        allowed = "nothing" if source == 0 else " or ".join(rules.beside_entries)
        return f"{imp.module} ({imp.where}) imports {imp.target}: of what stands beside, it may import {allowed}"
    if target > source:
        return (
            f"{imp.module} ({imp.where}) imports {imp.target}: upward, from layer {source} "
            f"({', '.join(rules.layers[source])}) to layer {target} ({', '.join(rules.layers[target])})"
        )
    return None


def layering_problems(source_root: Path, package: str, rules: Rules) -> tuple[list[str], int]:
    """Each import that breaks the rules, and each module no rule places; and how many imports were read."""
    modules = _modules(source_root, package)
    where = {name: path.relative_to(source_root).as_posix() for name, path in modules.items()}
    problems = [f"{name} ({where[name]}) is in no layer: add it to LAYERS or BESIDE" for name in modules
                if _place(name, rules) is None]
    read = 0
    for name, path in modules.items():
        for imp in _imports(name, path, where[name], set(modules), package):
            read += 1
            problem = _problem(imp, rules)
            if problem:
                problems.append(problem)
    return problems, read


RULES = Rules(LAYERS, BESIDE, BESIDE_ENTRIES)


def test_app_imports_only_run_downward() -> None:
    problems, read = layering_problems(PROJECT_ROOT, "app", RULES)
    assert read > 200, f"only {read} imports of app modules were read"
    assert problems == []


# -- the checker on planted packages ---------------------------------------------------------------------------------

PLANTED_RULES = Rules(
    layers=(("pkg", "pkg.base"), ("pkg.low",), ("pkg.high",), ("pkg.top",)),
    beside=("pkg.side",),
    beside_entries=("pkg.side.client",),
)
# A package that keeps the rules: each case below plants one more line in one of its modules.
CLEAN: dict[str, str] = {
    "__init__.py": "",
    "base.py": "",
    "low/__init__.py": "",
    "low/a.py": "import pkg.base\nfrom pkg.side.client import ask\n",
    "high/__init__.py": "",
    "high/b.py": "from pkg.low import a\nfrom ..low.a import ask\n\n\ndef f():\n    from pkg.base import x\n",
    "top/__init__.py": "",
    "top/c.py": "from pkg.high.b import f\nfrom pkg.side.stack import start\n",
    "side/__init__.py": "",
    "side/client.py": "from pkg.base import x\n",
    "side/stack.py": "from pkg.side.client import ask\n",
}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "pkg" / name).write_text(text, encoding="utf-8")
    return root


def test_the_clean_planted_package_has_no_problems(tmp_path: Path) -> None:
    problems, read = layering_problems(_write(tmp_path, CLEAN), "pkg", PLANTED_RULES)
    assert problems == [] and read == 9


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("low/a.py", "from pkg.high.b import f", "pkg.low.a (pkg/low/a.py:3) imports pkg.high.b: upward, from layer 1"),
        ("low/a.py", "import pkg.top.c", "pkg.low.a (pkg/low/a.py:3) imports pkg.top.c: upward"),
        ("low/a.py", "def g():\n    from pkg.high import b", "pkg.low.a (pkg/low/a.py:4) imports pkg.high.b: upward"),
        ("low/a.py", "if TYPE_CHECKING:\n    from pkg.top import c", "imports pkg.top.c: upward"),
        ("low/a.py", "from ..high.b import f", "pkg.low.a (pkg/low/a.py:3) imports pkg.high.b: upward"),
        ("low/__init__.py", "from .. import high", "pkg.low (pkg/low/__init__.py:1) imports pkg.high: upward"),
        ("base.py", "from pkg import low", "pkg.base (pkg/base.py:1) imports pkg.low: upward, from layer 0"),
        ("low/a.py", "from pkg.side.stack import start", "imports pkg.side.stack: of what stands beside, it may"),
        ("base.py", "from pkg.side.client import ask", "pkg.base (pkg/base.py:1) imports pkg.side.client: of what"),
        ("side/stack.py", "from pkg.low import a", "pkg.side.stack (pkg/side/stack.py:2) imports pkg.low.a: beside"),
        ("stray.py", "", "pkg.stray (pkg/stray.py) is in no layer"),
    ],
    ids=[
        "from-import",
        "plain-import",
        "inside-a-function",
        "type-checking",
        "relative",
        "relative-package",
        "base-imports-a-layer",
        "beside-not-through-its-client",
        "base-imports-beside",
        "beside-imports-a-layer",
        "module-in-no-layer",
    ],
)
def test_a_planted_bad_import_is_reported(tmp_path: Path, module: str, line: str, expected: str) -> None:
    files = dict(CLEAN)
    files[module] = files.get(module, "") + line + "\n"
    problems, _ = layering_problems(_write(tmp_path, files), "pkg", PLANTED_RULES)
    assert len(problems) == 1 and expected in problems[0], problems


def test_an_upward_import_planted_in_app_is_reported(tmp_path: Path) -> None:
    """The real rules on a copy of app/ with one upward import added to the storage layer."""
    shutil.copytree(PROJECT_ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    catalog = tmp_path / "app" / "storage" / "catalog.py"
    catalog.write_text(catalog.read_text(encoding="utf-8") + "\n\ndef _late():\n    from app.kb import names\n")
    problems, _ = layering_problems(tmp_path, "app", RULES)
    assert len(problems) == 1 and problems[0].startswith("app.storage.catalog (app/storage/catalog.py:"), problems
    assert "imports app.kb.names: upward, from layer 1 (app.storage) to layer 2 (app.kb)" in problems[0]
