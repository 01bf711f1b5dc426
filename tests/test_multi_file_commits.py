"""An output of several files becomes visible as one set or not at all, a pair that does not match is refused by
export, and what a killed run left behind is recognised and removed by the next run (and nothing else is)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hostile_bundles import run_in_process

import audiotok.runtime.formats.file_set as file_set
import audiotok.runtime.formats.units_folder as units_folder
from audiotok.runtime.formats.file_set import FileSet
from audiotok.runtime.formats.locks import try_lock

ERROR = "audiotok: error: "


def contents(folder: Path) -> dict[str, bytes]:
    """Every file directly in ``folder`` (hidden ones too), and its bytes; folders as their sorted entries."""
    return {p.name: p.read_bytes() if p.is_file() else repr(sorted(os.listdir(p))).encode()
            for p in sorted(folder.iterdir())}


def interrupt_on(module, name: str, when):
    """``module.name`` (a rename) raising KeyboardInterrupt on a call whose target ``when(target)`` accepts."""
    real = getattr(module, name)

    def rename(staged, target):
        if when(Path(target)):
            raise KeyboardInterrupt
        return real(staged, target)

    return rename


# --- FileSet ---------------------------------------------------------------------------------------------------


def test_a_set_interrupted_between_renames_is_the_previous_set(tmp_path, monkeypatch):
    targets = [tmp_path / name for name in ("units.usage.png", "units.npy", "units.json")]
    for target in targets:
        target.write_bytes(b"previous " + target.name.encode())
    before = contents(tmp_path)
    monkeypatch.setattr(file_set, "replace_into", interrupt_on(file_set, "replace_into", lambda t: t.suffix == ".json"))
    with pytest.raises(KeyboardInterrupt):
        with FileSet() as files:
            for target in targets:
                files.stage(target).write_bytes(b"new " + target.name.encode())
    assert contents(tmp_path) == before  # the two already renamed are back; no temp or kept link left


def test_a_new_set_interrupted_between_renames_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(file_set, "replace_into", interrupt_on(file_set, "replace_into", lambda t: t.name == "b"))
    with pytest.raises(KeyboardInterrupt):
        with FileSet() as files:
            for name in "ab":
                files.stage(tmp_path / name).write_bytes(name.encode())
    assert contents(tmp_path) == {}


def test_a_set_commits_in_order_and_keeps_nothing_else(tmp_path):
    (tmp_path / "a").write_bytes(b"old")
    with FileSet() as files:
        for name in "ab":
            files.stage(tmp_path / name).write_bytes(name.encode() * 2)
    assert contents(tmp_path) == {"a": b"aa", "b": b"bb"}


# --- train + export ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(speech_dir, tmp_path_factory) -> Path:
    """A folder holding two clips and a finished train run's km.npy, km.json, km.usage.png (and its cache)."""
    folder = tmp_path_factory.mktemp("trained")
    for i, clip in enumerate(sorted(speech_dir.glob("*.wav"))[:2]):
        shutil.copy(clip, folder / f"{i}.wav")
    from audiotok.runtime.commands.dispatcher import main

    assert main(["train", "--model", "logmel", "--k", "4", "--n-init", "1", "--max-iter", "5",
                 "-o", str(folder / "km.npy"), str(folder / "0.wav"), str(folder / "1.wav")]) == 0
    return folder


@pytest.fixture
def run_folder(trained, tmp_path) -> Path:
    """A copy of the trained folder, to change."""
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    return folder


def train_again(capsys, folder: Path, trained: Path) -> tuple[int, str, str]:
    """Another k into ``folder``, on the trained clips: the copied feature cache serves it, no extraction."""
    return run_in_process(capsys, "train", "--model", "logmel", "--k", "5", "--seed", "3", "--n-init", "1",
                          "--max-iter", "5", "-o", folder / "km.npy", trained / "0.wav", trained / "1.wav")


def test_train_interrupted_before_its_sidecar_keeps_the_previous_set(run_folder, trained, capsys, monkeypatch):
    before = contents(run_folder)
    monkeypatch.setattr(file_set, "replace_into", interrupt_on(file_set, "replace_into", lambda t: t.name == "km.json"))
    code, _, err = train_again(capsys, run_folder, trained)
    assert code == 130 and err.splitlines()[-1] == "audiotok: interrupted", err
    assert contents(run_folder) == before


def test_train_records_the_centroids_hash_in_its_sidecar(trained):
    from audiotok.runtime.bundle.centroids import centroids_sha256

    sidecar = json.loads((trained / "km.json").read_text())
    assert sidecar["centroids_sha256"] == centroids_sha256(np.load(trained / "km.npy"))


def test_export_refuses_centroids_their_sidecar_does_not_name(run_folder, capsys):
    centroids = np.load(run_folder / "km.npy")
    np.save(run_folder / "km.npy", centroids[::-1].copy())  # what a train killed between its renames leaves
    code, _, err = run_in_process(capsys, "export", "--centroids", run_folder / "km.npy", "-o", run_folder / "u.onnx")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len([line for line in lines if line.startswith(ERROR)]) == 1, err
    assert lines[-1].startswith(f"{ERROR}--centroids {run_folder / 'km.npy'} do not match km.json beside them "
                                "(it records centroids sha256 "), lines[-1]
    assert lines[-1].endswith("they are not one training run's pair; train again, or move the sidecar away and "
                              "pass --layer")
    assert not (run_folder / "u.onnx").exists()


def test_train_removes_what_a_killed_train_left_and_nothing_else(run_folder, trained, capsys):
    ours = {".km.npy.0123456789abcdef.tmp": (run_folder / "km.npy").read_bytes()[:100],  # cut short
            ".km.json.old-0123456789abcdef.tmp": (run_folder / "km.json").read_bytes(),
            ".km.usage.png.fedcba9876543210.tmp": b""}  # staged, killed before a byte was written
    theirs = {".km.npy.1111111111111111.tmp": b"the user's notes", "km.npy.0123456789abcdef.tmp": b"\x93NUMPY",
              ".km.json.0123456789abcdef.tmpx": b'{\n  "encoder": {'}
    for name, data in {**ours, **theirs}.items():
        (run_folder / name).write_bytes(data)
    (run_folder / ".km.json.2222222222222222.tmp").mkdir()
    code, _, err = train_again(capsys, run_folder, trained)
    assert code == 0, err
    left = contents(run_folder)
    assert not set(ours) & set(left)
    assert {name: left[name] for name in theirs} == theirs and left[".km.json.2222222222222222.tmp"] == b"[]"
    assert json.loads(left["km.json"])["k"] == 5 and np.load(run_folder / "km.npy").shape[0] == 5


# --- npy units folder --------------------------------------------------------------------------------------------


@pytest.fixture
def npy_run(tmp_path, speech_dir, logmel_bundle, capsys):
    """(folder, tokenize args) after one npy run wrote folder/units from two clips."""
    clips = sorted(speech_dir.glob("*.wav"))[:2]
    args = ("tokenize", logmel_bundle, *clips, "--format", "npy", "-o", tmp_path / "units")
    assert run_in_process(capsys, *args)[0] == 0
    return tmp_path, args


def test_npy_removes_a_killed_runs_staging_and_hidden_folders(npy_run, capsys):
    folder, args = npy_run
    units = folder / "units"
    expected = contents(units)
    shutil.copytree(units, folder / ".units.old-4242.tmp")  # killed after the swap, before the old one was removed
    (folder / ".units.0123456789abcdef.tmp").mkdir()  # killed while writing shards
    (folder / ".units.0123456789abcdef.tmp" / "index.tsv").write_text("path\tshard\toffset\tlength\tframes\n")
    (folder / ".units.abcdefabcdefabcd.tmp").mkdir()  # not ours: holds a file a units folder never holds
    (folder / ".units.abcdefabcdefabcd.tmp" / "notes.txt").write_text("mine")
    code, _, err = run_in_process(capsys, *args)
    assert code == 0, err
    assert sorted(os.listdir(folder)) == [".units.abcdefabcdefabcd.tmp", "units"]
    assert contents(units) == expected


def test_npy_puts_back_the_previous_folder_a_killed_swap_hid(npy_run, speech_dir, capsys):
    folder, args = npy_run
    expected = contents(folder / "units")
    os.rename(folder / "units", folder / ".units.old-4242.tmp")  # killed between the two renames of the swap
    bad = folder / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    code, _, err = run_in_process(capsys, *args[:2], bad, *args[4:])  # this run fails: the old folder must stay
    assert code == 1, err
    assert sorted(os.listdir(folder)) == ["bad.wav", "units"]
    assert contents(folder / "units") == expected


def test_npy_leaves_a_live_runs_staging_folder_alone(npy_run, capsys):
    folder, args = npy_run
    live = folder / ".units.0123456789abcdef.tmp"
    live.mkdir()
    (live / "index.tsv").write_text("path\tshard\toffset\tlength\tframes\n")
    held = try_lock(live)  # what a run still writing it holds
    try:
        code, _, err = run_in_process(capsys, *args)
    finally:
        os.close(held)
    assert code == 0, err
    assert sorted(os.listdir(folder)) == [live.name, "units"]


def test_npy_interrupted_during_its_swap_keeps_the_previous_folder(npy_run, capsys, monkeypatch):
    folder, args = npy_run
    expected = contents(folder / "units")
    monkeypatch.setattr(units_folder, "replace_into",
                        interrupt_on(units_folder, "replace_into", lambda t: t.name == "units"
                                     and not os.path.lexists(t)))  # the staged folder's rename, after the old one's
    code, _, err = run_in_process(capsys, *args[:3], *args[4:])
    assert code == 130, err
    assert sorted(os.listdir(folder)) == ["units"]
    assert contents(folder / "units") == expected
