"""Outputs never cost the user data: refused targets stay byte-identical, staged outputs leave no debris,
side files are replaced only when audiotok wrote them, one run at a time writes a resumable output, and
damaged resume files are one line naming the file and line."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ctrl_c_reaches_it, error_line, run_cli
from corpus_audio import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_16k) -> Path:
    folder = tmp_path_factory.mktemp("safety-corpus")
    write_corpus(folder, speech_16k, files=3, seconds=2.0, seed=4)
    return folder


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, speech_16k) -> Path:
    """Enough audio that a run lasts long enough to be stopped or interrupted midway."""
    folder = tmp_path_factory.mktemp("safety-big-corpus")
    write_corpus(folder, speech_16k, files=40, seconds=4.0, seed=5)
    return folder


def holds_flock(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds a ``flock`` on ``path``, read from /proc/locks (observing, never locking).

    Probing with a lock of our own would race the run under test for it; /proc/locks only reads.
    """
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and str(pid) in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory, speech_16k) -> Path:
    """Five times ``big_corpus``: a run that stays under way for a while after it takes its output's lock."""
    folder = tmp_path_factory.mktemp("safety-long-corpus")
    write_corpus(folder, speech_16k, files=200, seconds=4.0, seed=6)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry under ``folder`` (hidden ones too): its bytes (files) and mode."""
    state = {}
    for path in sorted(folder.rglob("*")):
        data = path.read_bytes() if path.is_file() else b"<dir>"
        state[str(path.relative_to(folder))] = (data, path.stat().st_mode)
    return state



def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr.decode()
    return error_line(result, alone=True)


def wavs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.wav"))


# --- 1. a folder audiotok did not write is never replaced ---------------------------------------------------

def _corpus_with_meta(folder: Path, source: Path) -> None:  # the reproducer: a corpus holding any meta.json
    shutil.copytree(source, folder)
    (folder / "meta.json").write_text('{"dataset": "mine"}\n')


def _units_folder_claimed(folder: Path, source: Path) -> None:  # a meta.json that claims the format, not ours
    folder.mkdir()
    (folder / "meta.json").write_text('{"format": "audiotok-units", "version": 1}\n')
    (folder / "notes.txt").write_text("my notes\n")


def _old_version(folder: Path, source: Path) -> None:
    folder.mkdir()
    (folder / "meta.json").write_text('{"format": "audiotok-units", "version": 99}\n')
    (folder / "index.tsv").write_text("path\n")


def _a_file(folder: Path, source: Path) -> None:
    folder.write_text("not a folder\n")


def _units_folder_symlink(folder: Path, source: Path) -> None:
    real = folder.with_name("real")
    real.mkdir()
    folder.symlink_to(real, target_is_directory=True)


@pytest.mark.parametrize("make", [_corpus_with_meta, _units_folder_claimed, _old_version, _a_file,
                                  _units_folder_symlink])
def test_npy_refuses_a_target_audiotok_did_not_write(make, corpus, logmel_bundle, tmp_path):
    target = tmp_path / "corpus"
    make(target, corpus)
    before = snapshot(tmp_path)
    line = one_error(run_cli("tokenize", logmel_bundle, corpus, "--format", "npy", "-o", target))
    assert line.startswith(f"audiotok: error: -o {target}: exists and is not")
    assert snapshot(tmp_path) == before  # nothing touched, no staging debris


def test_npy_into_its_own_input_corpus_keeps_the_audio(corpus, logmel_bundle, tmp_path):
    folder = tmp_path / "data"
    _corpus_with_meta(folder, corpus)
    before = snapshot(tmp_path)
    line = one_error(run_cli("tokenize", logmel_bundle, folder, "--format", "npy", "-o", folder))
    assert "it holds '00'" in line
    assert snapshot(tmp_path) == before


def test_npy_replaces_only_its_own_units_folder(corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units"
    files = wavs(corpus)
    assert run_cli("tokenize", logmel_bundle, *files, "--format", "npy", "-o", out).returncode == 0
    again = run_cli("tokenize", logmel_bundle, files[0], "--format", "npy", "--dedup", "-o", out)
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads((out / "meta.json").read_text())["files"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units"]  # no staged or swapped-out folder left
    assert sorted(p.name for p in out.iterdir()) == ["durations-00000.npy", "index.tsv", "meta.json",
                                                    "units-00000.npy"]
    (out / "mine.txt").write_text("a user's file in a units folder\n")
    before = snapshot(tmp_path)
    line = one_error(run_cli("tokenize", logmel_bundle, files[0], "--format", "npy", "-o", out))
    assert "it holds 'mine.txt'" in line
    assert snapshot(tmp_path) == before


def test_npy_onto_the_current_folder_is_refused(corpus, logmel_bundle, tmp_path):
    (tmp_path / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    for target in (".", str(tmp_path)):
        line = one_error(run_cli("tokenize", logmel_bundle, corpus, "--format", "npy", "-o", target, cwd=tmp_path))
        assert line.startswith(f"audiotok: error: -o {target}: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path)
    one_error(run_cli("tokenize", logmel_bundle, corpus, "--format", "npy", "-o", ".", cwd=empty))
    assert snapshot(tmp_path) == before


# --- 2. output integrity -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["tokenize", "{bundle}", "{audio}", "-o", "{out}"],
    ["tokenize", "{bundle}", "{audio}", "--format", "fairseq", "-o", "{out}"],
    ["tokenize", "{bundle}", "{audio}", "--format", "jsonl", "--overwrite", "-o", "{out}"],
    ["tokenize", "{bundle}", "{audio}", "--format", "jsonl", "-o", "{out}"],
    ["info", "{bundle}", "--centroids", "{out}"],
    ["export", "--model", "logmel", "--centroids", "{centroids}", "-o", "{out}"],
], ids=["txt", "fairseq", "jsonl-overwrite", "jsonl", "info-centroids", "export"])
def test_a_folder_as_output_file_is_one_line_and_no_debris(command, corpus, logmel_bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    args = [a.format(bundle=logmel_bundle, audio=wavs(corpus)[0], out=out, centroids=logmel_bundle.with_suffix(".npy"))
            for a in command]
    line = one_error(run_cli(*args))
    assert line == f"audiotok: error: -o {out}: is a folder; give a file name"
    assert snapshot(tmp_path) == before  # no .out.XXXX.tmp, no out.run.json


FORGED = "x.wav\t1 2 3\nvictim.wav"  # in txt: a record for x.wav, then one for victim.wav


@pytest.mark.parametrize("fmt", ["txt", "fairseq", "npy"])
def test_a_path_that_would_forge_records_is_refused(fmt, corpus, logmel_bundle, tmp_path):
    audio = tmp_path / "in"
    audio.mkdir()
    shutil.copy(wavs(corpus)[0], audio / FORGED)
    shutil.copy(wavs(corpus)[1], audio / "victim.wav")
    before = snapshot(tmp_path)
    out = tmp_path / ("units" if fmt == "npy" else "units.txt")
    result = run_cli("tokenize", logmel_bundle, audio, "--format", fmt, "-o", out)
    line = one_error(result)
    assert line.startswith("audiotok: error: " + ascii(str(audio / FORGED))) and "'\\t'" in line
    assert snapshot(tmp_path) == before
    if fmt == "txt":  # to stdout too: nothing is printed
        to_stdout = run_cli("tokenize", logmel_bundle, audio)
        one_error(to_stdout)
        assert to_stdout.stdout == b""


def test_jsonl_holds_any_path_exactly(corpus, logmel_bundle, tmp_path):
    audio = tmp_path / "in"
    audio.mkdir()
    shutil.copy(wavs(corpus)[0], audio / FORGED)
    shutil.copy(wavs(corpus)[1], audio / "victim.wav")
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, audio, "--format", "jsonl", "-o", out)
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(json.loads(line)["path"] for line in out.read_text().splitlines()) == sorted(
        [str(audio / FORGED), str(audio / "victim.wav")])


@pytest.mark.parametrize("fmt, stop", [("txt", signal.SIGINT), ("npy", signal.SIGTERM), ("fairseq", signal.SIGTERM)])
def test_an_interrupted_run_leaves_the_old_output_and_no_debris(fmt, stop, long_corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units"
    if fmt == "npy":
        assert run_cli("tokenize", logmel_bundle, wavs(long_corpus)[0], "--format", "npy", "-o", out).returncode == 0
    else:
        out.write_text("the previous output\n")
    before = snapshot(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "audiotok", "tokenize", logmel_bundle, long_corpus, "--format",
                                fmt, "-o", out], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               preexec_fn=ctrl_c_reaches_it)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".units.*.tmp")):  # the staged output exists: the run is under way
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.005)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err.decode()
    assert err.decode().strip().splitlines()[-1] == "audiotok: interrupted"
    assert snapshot(tmp_path) == before  # the old output as it was, no staged file or folder left


@pytest.mark.parametrize("fmt, module", [("txt", "lines"), ("fairseq", "lines"), ("npy", "units_folder")])
def test_an_interrupt_before_the_writer_guards_its_temp_still_leaves_no_debris(fmt, module, corpus, logmel_bundle,
                                                                                tmp_path, monkeypatch, capsys):
    """Ctrl-C can land between a temp's creation and the writer's own cleanup block (the window the
    timing test above hits now and then): the run still ends as an interrupt and removes the temp."""
    import importlib

    from audiotok.runtime.commands.dispatcher import main

    writer = importlib.import_module(f"audiotok.runtime.formats.{module}")
    real = writer.stage_beside

    def staged_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "stage_beside", staged_then_interrupted)
    out = tmp_path / "units"
    if fmt != "npy":
        out.write_text("the previous output\n")
    before = snapshot(tmp_path)
    assert main(["tokenize", str(logmel_bundle), *map(str, wavs(corpus)), "--format", fmt, "-o", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "audiotok: interrupted"
    assert snapshot(tmp_path) == before


def _run_with_umask(umask: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"import os, sys; os.umask({umask}); from audiotok.runtime.commands.dispatcher "
                           "import main; sys.exit(main(sys.argv[1:]))", *map(str, args)], capture_output=True,
                          timeout=600)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_permissions_the_umask_gives(umask, corpus, logmel_bundle, tmp_path):
    files = wavs(corpus)[:2]
    for args in (["-o", tmp_path / "units.txt"], ["--format", "jsonl", "-o", tmp_path / "units.jsonl"],
                 ["--format", "npy", "-o", tmp_path / "units"]):
        result = _run_with_umask(umask, "tokenize", logmel_bundle, *files, *args)
        assert result.returncode == 0, result.stderr.decode()
    result = _run_with_umask(umask, "info", logmel_bundle, "--centroids", tmp_path / "c.npy")
    assert result.returncode == 0, result.stderr.decode()
    written = sorted(tmp_path.rglob("*"), key=lambda p: p.relative_to(tmp_path).as_posix())
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "c.npy", "units", "units.jsonl", "units.run.json", "units.txt", "units/index.tsv", "units/meta.json",
        "units/units-00000.npy"]
    for path in written:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, path


# --- side files of a resumable run ---------------------------------------------------------------------------

@pytest.mark.parametrize("side, content", [
    ("units.run.json", '{"my": "settings"}\n'),
    ("units.run.json", "not json at all\n"),
    ("units.errors.jsonl", "my own log\n"),
    ("units.errors.jsonl", '{"path": "a.wav", "error": "x", "mine": 1}\n'),
])
def test_side_files_audiotok_did_not_write_are_never_replaced(side, content, corpus, logmel_bundle, tmp_path):
    (tmp_path / side).write_text(content)
    before = snapshot(tmp_path)
    line = one_error(run_cli("tokenize", logmel_bundle, *wavs(corpus), "--format", "jsonl", "-o",
                             tmp_path / "units.jsonl"))
    assert line.startswith(f"audiotok: error: {tmp_path / side} exists and is not ")
    assert snapshot(tmp_path) == before  # and no units.jsonl was created


def test_a_run_replaces_its_own_side_files(corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really")
    first = run_cli("tokenize", logmel_bundle, *wavs(corpus), bad, "--format", "jsonl", "-o", out)
    assert first.returncode == 1 and (tmp_path / "units.errors.jsonl").exists()
    bad.unlink()
    again = run_cli("tokenize", logmel_bundle, *wavs(corpus), "--format", "jsonl", "-o", out, "--overwrite")
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.jsonl", "units.run.json"]


def test_a_second_concurrent_run_refuses_at_once(long_corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    command = [sys.executable, "-m", "audiotok", "tokenize", logmel_bundle, long_corpus, "--format", "jsonl", "-o", out]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not holds_flock(first.pid, out):  # the output appears a moment before its lock is taken
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.002)
        first.send_signal(signal.SIGSTOP)  # keep it mid-run, lock held, while the second one starts
        second = run_cli(*command[3:])
        line = one_error(second)
        assert line == (f"audiotok: error: {out}: another audiotok run is writing it (it holds the lock); "
                        "wait for it to finish, or choose another -o")
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == [str(p) for p in wavs(long_corpus)]  # every file exactly once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.jsonl", "units.run.json"]  # no lock debris
    with_jobs = run_cli(*command[3:], "--jobs", "2")  # the lock is gone with the process that held it
    assert with_jobs.returncode == 0 and "200 of 200 files already done" in with_jobs.stderr.decode()


# --- 4. damaged resume files -----------------------------------------------------------------------------------

def _record_not_utf8(out: Path) -> str:
    lines = out.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'{"path": "', b'{"path": "\xff\xfe', 1)
    out.write_bytes(b"".join(lines))
    return f"{out}:2: not valid UTF-8"


def _record_bad_escape(out: Path) -> str:
    lines = out.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'{"path": "', b'{"path": "\\q', 1)
    out.write_bytes(b"".join(lines))
    return f"{out}:1: a damaged record (Invalid \\escape)"


def _run_not_object(out: Path) -> str:
    out.with_name("units.run.json").write_text("[1, 2, 3]\n")
    return f"{out.with_name('units.run.json')}: holds a JSON list, not an object"


def _run_not_utf8(out: Path) -> str:
    run = out.with_name("units.run.json")
    run.write_bytes(run.read_bytes().replace(b'"jsonl"', b'"js\xc3onl"'))
    return f"{run}:"


def _run_bad_json(out: Path) -> str:
    run = out.with_name("units.run.json")
    run.write_bytes(run.read_bytes().replace(b'"k": 16', b'"k": 16,,'))
    return f"{run}:"


def _run_wrong_type(out: Path) -> str:
    run = out.with_name("units.run.json")
    run.write_bytes(run.read_bytes().replace(b'"k": 16', b'"k": "16"'))
    return f"{run}: 'k' is \"16\" where audiotok writes int"


def _run_deeply_nested(out: Path) -> str:
    out.with_name("units.run.json").write_text('{"k": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return f"{out.with_name('units.run.json')}: JSON nested too deeply"


@pytest.mark.parametrize("damage", [_record_not_utf8, _record_bad_escape, _run_not_object, _run_not_utf8,
                                    _run_bad_json, _run_wrong_type, _run_deeply_nested])
def test_a_damaged_resume_file_is_one_line_naming_it(damage, corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    files = wavs(corpus)
    assert run_cli("tokenize", logmel_bundle, *files[:2], "--format", "jsonl", "-o", out).returncode == 0
    expected = damage(out)
    before = snapshot(tmp_path)
    line = one_error(run_cli("tokenize", logmel_bundle, *files, "--format", "jsonl", "-o", out))
    assert line.startswith(f"audiotok: error: {expected}"), line
    if expected.endswith(":"):  # a JSON or UTF-8 error: the line number follows the file name
        assert line[len("audiotok: error: ") + len(expected):].split(":")[0].isdigit(), line
    assert snapshot(tmp_path) == before


# --- train's side files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["units.json", "units.usage.png"])
def test_train_keeps_side_files_it_did_not_write(side, corpus, tmp_path):
    (tmp_path / side).write_bytes(b"\x89PNG\r\n\x1a\n a user's image" if side.endswith(".png") else b'{"mine": 1}')
    before = snapshot(tmp_path)
    line = one_error(run_cli("train", "--model", "logmel", "--k", "4", "-o", tmp_path / "units.npy", corpus))
    assert line.startswith(f"audiotok: error: {tmp_path / side} exists and is not ")
    assert snapshot(tmp_path) == before


def test_train_replaces_its_own_side_files(corpus, tmp_path):
    args = ["train", "--model", "logmel", "--k", "4", "--n-init", "1", "--max-iter", "2", "-o", tmp_path / "u.npy",
            corpus]
    assert run_cli(*args).returncode == 0
    centroids = np.load(tmp_path / "u.npy")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr.decode()
    assert np.array_equal(np.load(tmp_path / "u.npy"), centroids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audiotok-features", "u.json", "u.npy", "u.usage.png"]
