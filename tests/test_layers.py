"""The import rule of docs/architecture.md: a module imports only from its own layer or the layers below it.

Every ``import`` and ``from ... import`` of ``vrrl_gpu`` in every module is parsed (function-level imports
too), so a lazy import that climbs the stack fails here as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vrrl_gpu

PKG = Path(vrrl_gpu.__file__).resolve().parent

#: Each layer and the layers it may import (besides itself). The order of docs/architecture.md, bottom up.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_version": set(),
    "_native": set(),
    "format": {"errors"},
    "evidence": {"errors", "format"},
    "capture": {"errors", "format"},
    "backends": {"errors", "format", "evidence", "capture"},
    "recorder": {"errors", "_native", "format", "evidence", "capture", "backends"},
    "reproduce": {"errors", "_native", "format", "evidence", "capture", "backends", "recorder"},
    "torch": {"errors", "_native", "format", "evidence", "capture", "backends", "recorder", "reproduce"},
    "analysis": {"errors", "_version", "_native", "format", "evidence"},
    "_cli": {
        "errors",
        "_version",
        "_native",
        "format",
        "evidence",
        "capture",
        "backends",
        "recorder",
        "reproduce",
        "analysis",
    },
    "_pytest_plugin": {"errors", "format", "backends", "recorder"},
    "__main__": {"_cli"},
}
#: The package root re-exports the layers; nothing inside the package imports it.
ROOT_LAYER = "__init__"


def _layer_of_module(dotted: str) -> str:
    parts = dotted.split(".")
    assert parts[0] == "vrrl_gpu", dotted
    if len(parts) == 1:
        return ROOT_LAYER
    return parts[1]


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) == 1 else rel.parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "vrrl_gpu":
                # ``from vrrl_gpu import errors`` names a layer; anything else is the root.
                out += [
                    (node.lineno, f"vrrl_gpu.{a.name}" if a.name in ALLOWED else "vrrl_gpu")
                    for a in node.names
                ]
            elif node.module.startswith("vrrl_gpu."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "vrrl_gpu"]
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = sorted({_layer_of_file(p) for p in MODULES} - set(ALLOWED))
    assert unknown == [], f"add these layers to ALLOWED and to docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_down_the_stack(path: Path) -> None:
    layer = _layer_of_file(path)
    bad = []
    for line, target in _imports(path):
        to = _layer_of_module(target)
        if to != layer and to not in ALLOWED[layer]:
            bad.append(f"{path.relative_to(PKG)}:{line} imports {target} ({layer} -> {to})")
    assert bad == []


def test_the_rule_can_fail(tmp_path: Path) -> None:
    # The parser sees a lazy upward import inside a function.
    f = tmp_path / "x.py"
    f.write_text(
        "def f():\n    from vrrl_gpu.recorder import Recorder\n    import vrrl_gpu.analysis._stats\n"
    )
    assert [t for _, t in _imports(f)] == ["vrrl_gpu.recorder", "vrrl_gpu.analysis._stats"]


def test_the_architecture_page_lists_every_layer() -> None:
    page = (PKG.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for layer in ALLOWED:
        if layer.startswith("__"):
            continue
        assert f"`{layer}" in page, layer


def test_the_architecture_table_is_this_rule() -> None:
    # The "may import" column of docs/architecture.md, parsed, must be ALLOWED: one rule, two views of it.
    page = (PKG.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## The import rule", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        allowed = set() if cells[1] == "nothing" else {n.strip() for n in cells[1].split(",")}
        for layer in cells[0].replace("`", "").split(","):
            table[layer.strip()] = allowed
    assert table == {k: v for k, v in ALLOWED.items() if not k.startswith("__")}
