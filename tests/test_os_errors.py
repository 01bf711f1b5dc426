"""An OSError is an ordinary error: a full disk, a read-only folder, a full or closed stdout is one line
naming the path and the OS's reason, exit 1, no temp files left, the previous output intact.

A full disk is a small tmpfs filled to the last page when the tests run as root; otherwise the
writers' files are swapped for ones whose writes fail with ENOSPC. The assertions are the same.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import error_line, write_wav
from hostile_bundles import run_in_process, unit_graph

from audiotok.runtime.bundle.manifest import Manifest

VALID = dict(encoder="logmel", encoder_type="logmel", layer=0, k=16, dim=80, normalization="none", precision="fp32",
             opset=18, centroids_sha256="ab" * 32, audiotok_version="0.1.0")
UNIT = 3  # the test bundle gives this unit for every frame
SAMPLES = 16_000  # one second: (16000 - 400) // 320 + 1 = 49 frames
FRAMES = (SAMPLES - 400) // 320 + 1
IS_ROOT = os.geteuid() == 0
ENOSPC = os.strerror(errno.ENOSPC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """(a bundle whose every unit is 3, a folder with two one-second wavs)."""
    root = tmp_path_factory.mktemp("os-errors")
    bundle = unit_graph(root / "units.onnx", Manifest(**VALID).to_json(), value=UNIT)
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        write_wav(audio / name, (0.1 * rng.standard_normal(SAMPLES)).astype(np.float32))
    return bundle, audio


def expected_txt(audio: Path) -> str:
    units = " ".join([str(UNIT)] * FRAMES)
    return "".join(f"{audio / name}\t{units}\n" for name in ("a.wav", "b.wav"))


class _FullFile:
    """A file object whose writes fail as a full disk's do."""

    def __init__(self, real) -> None:
        self._real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, ENOSPC)

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, ENOSPC)

    def close(self) -> None:
        self._real.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder and ``fill()``: after it, writing a byte there fails with ENOSPC (a real tmpfs as root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = IS_ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                                         capture_output=True).returncode == 0

    def fill() -> None:
        if mounted:
            with open(folder / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            return
        real_open = builtins.open

        def failing_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            inside = isinstance(file, (str, os.PathLike)) and Path(os.fspath(file)).absolute().is_relative_to(folder)
            return _FullFile(f) if inside and any(c in mode for c in "wax+") else f

        monkeypatch.setattr(builtins, "open", failing_open)
        monkeypatch.setattr(io, "open", failing_open)

    yield folder, fill
    monkeypatch.undo()
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes, the filler left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "filler"}


@pytest.mark.parametrize("fmt,name", [("txt", "u.txt"), ("fairseq", "u.km"), ("npy", "u"), ("jsonl", "u.jsonl")])
def test_a_full_disk_is_one_line_and_the_previous_output_stays(setup, full_disk, capsys, tmp_path, fmt, name):
    bundle, audio = setup
    folder, fill = full_disk
    target = folder / name
    if fmt == "jsonl":
        # A resumable run appends: the resume has one file left, long enough (30 s, a record of several
        # KiB) that its record cannot fit in the slack of the output's last page on the full tmpfs.
        long = tmp_path / "long.wav"
        write_wav(long, (0.1 * np.random.default_rng(1).standard_normal(30 * 16000)).astype(np.float32))
        first, second = [audio / "a.wav"], [audio / "a.wav", long]
    else:
        first = second = [audio]
    code, _, err = run_in_process(capsys, "tokenize", bundle, *first, "--format", fmt, "-o", target)
    assert code == 0, err
    before = tree(folder)
    fill()
    code, _, err = run_in_process(capsys, "tokenize", bundle, *second, "--format", fmt, "-o", target)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("audiotok: error: ") and ENOSPC in lines[-1] and str(folder) in lines[-1], err
    assert [line for line in lines if line.startswith("audiotok: error")] == [lines[-1]]
    if fmt != "jsonl":
        assert tree(folder) == before  # no staged temp, the old output byte for byte
    else:  # the finished record stays; a torn one after it is cut by the next run, which completes
        assert tree(folder)["u.jsonl"].startswith(before["u.jsonl"])
        assert not [p for p in tree(folder) if p.endswith(".tmp")]
        (folder / "filler").unlink(missing_ok=True)
        code, _, err = run_in_process(capsys, "tokenize", bundle, *second, "--format", fmt, "-o", target)
        assert code == 0, err
        records = [json.loads(line) for line in target.read_text().splitlines()]
        assert [r["path"] for r in records] == [str(p) for p in second]
        assert records[1]["units"] == [UNIT] * ((30 * 16000 - 400) // 320 + 1)  # 30 s: 1499 frames


def _cli(*args, stdout) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, timeout=120)


@pytest.mark.parametrize("command", ["tokenize", "info"])
def test_writing_to_dev_full_is_an_error(setup, command):
    bundle, audio = setup
    args = ("tokenize", bundle, audio) if command == "tokenize" else ("info", bundle)
    with open("/dev/full", "w") as full:
        result = _cli(*args, stdout=full)
    assert result.returncode == 1
    error_line(result, f"stdout: {ENOSPC}")


def test_a_closed_stdout_is_an_error_unless_nothing_goes_there(setup, tmp_path):
    bundle, audio = setup
    closed = subprocess.run([sys.executable, "-m", "audiotok", "tokenize", str(bundle), str(audio)],
                            stderr=subprocess.PIPE, timeout=120, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 1
    error_line(closed, f"stdout: {os.strerror(errno.EBADF)}")
    out = tmp_path / "u.txt"
    to_file = subprocess.run([sys.executable, "-m", "audiotok", "tokenize", str(bundle), str(audio), "-o", str(out)],
                             stderr=subprocess.PIPE, timeout=120, preexec_fn=lambda: os.close(1))
    assert to_file.returncode == 0, to_file.stderr.decode()
    assert out.read_text() == expected_txt(audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.txt"]  # fd 1 was not lent to a staged file


def test_a_reader_that_stops_early_is_not_an_error(setup):
    bundle, audio = setup
    many = [audio] * 200  # enough lines to overflow the pipe after the reader left
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "tokenize", str(bundle), *map(str, many)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


@pytest.mark.parametrize("fmt", ["txt", "npy"])
def test_a_name_at_name_max_can_be_written(setup, tmp_path, capsys, fmt):
    """The staged temp's name must not be what makes a legal output name too long."""
    bundle, audio = setup
    name = "u" * (255 - 4) + ".txt" if fmt == "txt" else "u" * 255
    target = tmp_path / name
    code, _, err = run_in_process(capsys, "tokenize", bundle, audio, "--format", fmt, "-o", target)
    assert code == 0, err
    if fmt == "txt":
        assert target.read_text() == expected_txt(audio)
    else:
        assert json.loads((target / "meta.json").read_text())["units"] == 2 * FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_name_over_name_max_is_one_line(setup, tmp_path, capsys):
    bundle, audio = setup
    target = tmp_path / ("u" * 256)
    code, _, err = run_in_process(capsys, "tokenize", bundle, audio, "-o", target)
    assert code == 1 and os.strerror(errno.ENAMETOOLONG) in err.splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written in: a read-only tmpfs as root, mode 0555 otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if IS_ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)], check=True)
        yield folder, os.strerror(errno.EROFS)
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder, os.strerror(errno.EACCES)
        folder.chmod(0o755)


def test_a_read_only_feature_cache_is_one_line(setup, tmp_path, read_only_folder):
    _, audio = setup
    folder, reason = read_only_folder
    result = subprocess.run([sys.executable, "-m", "audiotok", "train", "--model", "logmel", "--k", "2",
                             "-o", str(tmp_path / "c.npy"), "--cache", str(folder / "cache"), str(audio)],
                            capture_output=True, timeout=300)
    error_line(result, "feature cache", str(folder / "cache"), reason, "--cache")
    assert not (tmp_path / "c.npy").exists()
