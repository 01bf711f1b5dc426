"""docs/architecture.md's module map cannot drift: its "Every module" section names every module
(every .py file) of runtime/, models/, train/ and export/, with one line each, and names no module
that does not exist. Adding, moving or removing a module without its line fails here."""

from __future__ import annotations

import re

from conftest import REPO

PACKAGES = ("runtime", "models", "train", "export")
SECTION = "## Every module"


def modules_on_disk() -> set[str]:
    return {path.relative_to(REPO).as_posix() for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def map_rows() -> dict[str, str]:
    """The map's rows: module path -> its line."""
    text = (REPO / "docs" / "architecture.md").read_text()
    assert SECTION in text, f"docs/architecture.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([\w/]+\.py)`\s*\|(.*)\|\s*$", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is named twice"
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_the_map_names_every_module():
    unnamed = sorted(modules_on_disk() - set(map_rows()))
    assert not unnamed, f"modules docs/architecture.md does not name: {unnamed}"


def test_the_map_names_no_module_that_does_not_exist():
    gone = sorted(set(map_rows()) - modules_on_disk())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_every_module_has_its_line():
    empty = sorted(module for module, line in map_rows().items() if not line)
    assert not empty, f"modules named without a line: {empty}"
