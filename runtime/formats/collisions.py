"""Inputs and outputs never collide: every file a command writes is checked against every file it reads.

``tokenize a.wav b.wav -o a.wav`` or ``export --centroids km.npy -o km.npy`` would replace an input
with the output made from it. Names cannot decide this (``./a.wav``, a symbolic or hard link, a
folder given twice), so files are compared by identity on disk: device and inode, following links.
Folders count too: an output folder that holds an input (npy units, train's feature cache), or an
output written into an input that is read whole (a checkpoint folder).

Staging names need no check: a staged file or folder is created with ``O_EXCL``/``mkdir`` under a
fresh random name (:mod:`.staging`), so it can never be an existing input.

Every command that writes calls :func:`check_apart` once, before any work; a collision is one
:class:`~.staging.OutputError` naming both paths, and nothing has been touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .staging import OutputError


@dataclass(frozen=True)
class Place:
    """One path a command reads or writes, and how the user named it (``"-o units.txt"``, ``"the bundle x.onnx"``).

    ``folder``: the path is a folder and everything inside it belongs to it (an output folder whose
    staging swap replaces it whole, an input folder read whole such as a checkpoint).
    """

    label: str
    path: Path
    folder: bool = False


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names, following links; None when nothing is there."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _real(path: Path) -> Path:
    """Where ``path`` lands on disk, links resolved (its last part may not exist yet)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return Path(os.path.abspath(path))


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_apart(outputs: Iterable[Place], inputs: Iterable[Place]) -> None:
    """Refuse (one OutputError naming both) when an output is, holds, or lies inside an input.

    * an output file that exists and is the same file on disk as an input (any spelling, any link);
    * an output folder that is an input, holds an input, or lies inside an input folder;
    * an output file inside an input folder (a checkpoint read whole would read it back).

    Inputs are only stat'ed when some output exists or is a folder, so a run to new files costs nothing.
    """
    outputs, inputs = list(outputs), list(inputs)
    present = [(out, _identity(out.path)) for out in outputs]
    if not any(ident is not None for _, ident in present) and not any(i.folder for i in inputs):
        return
    by_identity: dict[tuple[int, int], Place] = {}
    for place in inputs:
        ident = _identity(place.path)
        if ident is not None:
            by_identity.setdefault(ident, place)
    for out, ident in present:
        hit = by_identity.get(ident) if ident is not None else None
        if hit is not None:
            _refuse(out, hit, "is the same file on disk as")
    if not any(place.folder for place in (*outputs, *inputs)):
        return
    real_outputs = [(out, _real(out.path)) for out in outputs]
    for place in inputs:
        real_in = _real(place.path)
        for out, real_out in real_outputs:
            if place.folder and _inside(real_out, real_in):
                _refuse(out, place, "lies inside")
            if out.folder and _inside(real_in, real_out):
                _refuse(out, place, "holds")


def _refuse(out: Place, place: Place, relation: str) -> None:
    raise OutputError(f"{out.label} {relation} {place.label}: an output must not be one of the inputs; "
                      "nothing was changed: choose another output name")


def input_places(label: str, paths: Iterable[str | os.PathLike]) -> list[Place]:
    """``Place(f"{label} {path}", path)`` for each path (e.g. every listed audio file as "the input")."""
    return [Place(f"{label} {path}", Path(path)) for path in paths]


def list_arguments(arguments: Iterable[str], prefix: str = "@") -> list[Place]:
    """The file lists among DATA arguments (``@train.tsv``): read, so inputs as well."""
    places = []
    for raw in arguments:
        if raw.startswith(prefix) and not Path(raw).exists():
            places.append(Place(f"the file list {raw[len(prefix):]}", Path(raw[len(prefix):])))
    return places
