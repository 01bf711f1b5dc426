"""Inputs built once per test run and shared by the pytest-xdist workers: speech, tiny checkpoints,
trained centroids and the bundles that many modules only read.

An export costs 10-15 CPU-seconds whatever the model's size (tracing dominates), and several
modules need the same bundle of the same tiny checkpoint; each such bundle now lives in one folder
of the run's temporary base (``pytest-N/shared/``, beside the workers' ``popen-gwN``), built by
whichever worker asks first while the other waits on a lock, so each distinct bundle is exported
once per run. A folder's name holds a digest of what it is built from (its recipe), so different
recipes never meet. Only read-only inputs come from here: a test of export itself still exports.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable


def run_folder(tmp_path_factory) -> Path:
    """``shared/`` in this run's temporary base: one folder for both workers of a run, none across runs."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def recipe_name(name: str, recipe) -> str:
    """``NAME-DIGEST``: the digest of the recipe (JSON, paths as strings) keeps different recipes apart."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{name}-{digest}"


class _Locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)  # the other worker building the same thing: wait for it
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target`` (a file or folder under a :func:`run_folder`), built by ``build(target)`` the first time
    any worker asks; a build that failed part-way is removed and tried again by the next caller."""
    marks = target.parent / ".marks"
    marks.mkdir(parents=True, exist_ok=True)
    done = marks / f"{target.name}.done"
    if done.exists():
        return target
    with _Locked(marks / f"{target.name}.lock"):
        if not done.exists():
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            build(target)
            assert target.exists(), f"building {target} made nothing"
            done.touch()
    return target


def shared_folder(tmp_path_factory, name: str, recipe, build: Callable[[Path], None]) -> Path:
    """A folder named after ``name`` and ``recipe``, filled by ``build(folder)`` once per run."""

    def make(folder: Path) -> None:
        folder.mkdir()
        build(folder)

    return once(run_folder(tmp_path_factory) / recipe_name(name, recipe), make)
