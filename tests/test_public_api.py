"""The public API is stated: ``audiotok.runtime.__all__`` lists what users may import, every name in it
imports and has its own docstring, docs/python.md describes each, and README's Python section uses
nothing else from audiotok."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest

from conftest import REPO

runtime = importlib.import_module("audiotok.runtime")
PUBLIC = list(runtime.__all__)
# What a user of the runtime needs: the tokenizer, its stream and what it yields, and the errors to catch.
REQUIRED = {"Tokenizer", "Stream", "StreamSettings", "StreamState", "UnitChunk", "Manifest",
            "AudiotokError", "AudioError", "BundleError", "SettingsError"}


def test_all_lists_what_users_need_once():
    assert len(PUBLIC) == len(set(PUBLIC))
    assert REQUIRED <= set(PUBLIC), sorted(REQUIRED - set(PUBLIC))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_imports_and_has_its_own_docstring(name):
    namespace: dict = {}
    exec(f"from audiotok.runtime import {name}", namespace)
    obj = namespace[name]
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert doc and doc.strip(), f"{name} has no docstring"
    assert not doc.startswith(f"{name}("), f"{name}'s docstring is the dataclass signature, not a description"


def test_error_classes_are_exceptions_under_one_base():
    for name in ("AudioError", "BundleError", "SettingsError"):
        assert issubclass(getattr(runtime, name), runtime.AudiotokError)


@pytest.mark.parametrize("name", PUBLIC)
def test_docs_python_describes_every_public_name(name):
    assert re.search(rf"^\| `{name}` \|", (REPO / "docs" / "python.md").read_text(), re.M), name


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def audiotok_imports(source: str) -> list[tuple[str, str]]:
    """(module, name) for every ``from audiotok... import name`` and ``import audiotok...`` in the source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audiotok"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("audiotok")]
    return found


def test_readme_python_uses_only_the_public_api():
    blocks = python_blocks((REPO / "README.md").read_text())
    assert blocks, "README has no Python example"
    imports = [item for block in blocks for item in audiotok_imports(block)]
    assert imports, "README's Python example imports nothing from audiotok"
    wrong = [f"{module}.{name}" for module, name in imports if module != "audiotok.runtime" or name not in PUBLIC]
    assert not wrong, f"README imports beyond audiotok.runtime.__all__: {wrong}"
    assert not re.search(r"audiotok\.runtime\.\w", "\n".join(blocks)), "README reaches into runtime's modules"
