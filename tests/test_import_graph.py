"""The packages import each other in the allowed directions only, and no two modules import each other.

The graph is read from the sources (every ``import``, including the ones inside functions), so a
new module is covered the day it is added. The allowed directions: runtime imports nothing of
models, train or export (it ships alone); models may use runtime; train and export may use models
and runtime but never each other (piper's runtime never imports its trainer, and here export must
not need scikit-learn or the training code to write a bundle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib
from conftest import REPO

ALLOWED = {
    "runtime": {"runtime"},
    "models": {"models", "runtime"},
    "train": {"train", "models", "runtime"},
    "export": {"export", "models", "runtime"},
}


def _package_dirs() -> dict[str, Path]:
    """``audiotok.runtime`` -> the folder holding it, as pyproject maps them."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {name: REPO / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every module of every audiotok package: dotted name -> file."""
    modules = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            modules[".".join((package, *parts[:-1]) if parts[-1] == "__init__" else (package, *parts))] = path
    return modules


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The audiotok modules ``module`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module -> the module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_graph_sees_every_package_and_resolves_relative_imports():
    graph = _graph()
    assert {_layer(m) for m in graph} >= set(ALLOWED)
    # runtime/tokenizer.py imports the windowing code relatively: the resolver must see that edge.
    assert "audiotok.runtime.windowing" in graph["audiotok.runtime.tokenizer"]
    assert "audiotok.models.vocabulary_sidecar" in graph["audiotok.export.bundle"]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_packages_import_only_in_the_allowed_directions(layer):
    wrong = sorted(f"{module} imports {target}" for module, targets in _graph().items() if _layer(module) == layer
                   for target in targets if _layer(target) is not None and _layer(target) not in ALLOWED[layer])
    assert wrong == []


# The runtime's rooms (docs/architecture.md), by stage. At the bottom, three leaf modules at the top
# level ("base": constants, errors, log) that every room may use; then process-level helpers, audio in,
# the bundle, and the top level (tokenizer, stream, windowing, cost, ...) that uses them all. Audio and
# bundle never import the top level, so decoding or opening a bundle never drags in the tokenizer or a
# stream. The work rooms use that core ("core" below) and never it them; commands may use everything.
BASE = {"constants", "errors", "log"}
CORE = {"base", "process", "audio", "bundle", "top"}
ROOMS = {
    "base": {"base"},
    "process": {"base", "process"},
    "audio": {"base", "process", "audio"},
    "bundle": {"base", "process", "audio", "bundle"},
    "top": CORE,
    "corpus": CORE | {"corpus"},
    "formats": CORE | {"formats"},
    "evaluation": CORE | {"corpus", "evaluation"},
    "plotting": CORE | {"formats", "plotting"},
    "commands": CORE | {"corpus", "formats", "evaluation", "plotting", "commands"},
}
FOLDERS = set(ROOMS) - {"base", "top"}


def _room(module: str) -> str | None:
    """``audiotok.runtime.formats.lines`` -> ``formats``; ``audiotok.runtime.errors`` -> ``base``; another
    module directly in runtime/ (or the package itself) -> ``top``; outside the runtime -> None."""
    parts = module.split(".")
    if parts[:2] != ["audiotok", "runtime"]:
        return None
    if len(parts) > 3 or (len(parts) == 3 and parts[2] in FOLDERS):
        return parts[2]
    return "base" if len(parts) == 3 and parts[2] in BASE else "top"


def test_every_runtime_folder_is_a_known_room():
    folders = {p.name for p in (REPO / "runtime").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == FOLDERS


def test_runtime_rooms_import_only_in_the_allowed_directions():
    wrong = sorted(f"{module} imports {target}" for module, targets in _graph().items() if _room(module)
                   for target in targets if _room(target) and _room(target) not in ROOMS[_room(module)])
    assert wrong == []


def test_the_room_check_sees_a_wrong_direction():
    assert _room("audiotok.runtime.tokenizer") == "top" and _room("audiotok.runtime.formats.lines") == "formats"
    assert _room("audiotok.runtime.audio.decode") == "audio" and _room("audiotok.runtime.bundle.session") == "bundle"
    assert _room("audiotok.runtime.errors") == "base" and _room("audiotok.runtime") == "top"
    assert "top" not in ROOMS["audio"] | ROOMS["bundle"] and "bundle" not in ROOMS["audio"]
    assert "commands" not in ROOMS["top"] and _room("audiotok.export.bundle") is None


# A flat runtime/ is what the rooms replaced: at most this many modules sit directly in it.
MAX_TOP_LEVEL_MODULES = 12


def test_runtime_keeps_few_modules_at_the_top():
    top = sorted(p.name for p in (REPO / "runtime").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules directly in runtime/: {top}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle a reader trips over.
    graph = {m: {t for t in targets if not (t == m.rpartition(".")[0] and _layer(t) == _layer(m))}
             for m, targets in graph.items()}
    assert _cycles(graph) == []
