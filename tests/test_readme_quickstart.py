"""README's quickstart, verbatim: the bash block that trains, exports and tokenizes with `logmel` on
`examples/speech/`, read from README.md and run in a temporary copy of the examples, so the first
command a reader types cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from conftest import REPO

QUICKSTART_INTRO = "Train, export and tokenize offline with the built-in `logmel` encoder"


def quickstart_block() -> str:
    """The first ```bash block after the quickstart's introduction in README.md."""
    text = (REPO / "README.md").read_text()
    start = text.index(QUICKSTART_INTRO)
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match is not None, "README's quickstart has no bash block"
    return match.group(1)


def test_readme_quickstart_runs_on_the_examples(tmp_path):
    block = quickstart_block()
    assert "audiotok train" in block and "audiotok tokenize units.onnx examples/speech/*.ogg" in block
    shutil.copytree(REPO / "examples" / "speech", tmp_path / "examples" / "speech")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert (tmp_path / "units.npy").is_file() and (tmp_path / "units.onnx").is_file()
    assert np.load(tmp_path / "units.npy").shape == (100, 80)  # --k 100 centroids of 80 log-mel bands
    files = sorted((tmp_path / "examples" / "speech").glob("*.ogg"))
    lines = result.stdout.decode().splitlines()
    assert len(files) == 32 and [line.split("\t")[0] for line in lines] == [f"examples/speech/{f.name}" for f in files]
    used = set()
    for path, line in zip(files, lines):
        samples, rate = sf.read(str(path), dtype="float32")
        n = len(soxr.resample(samples, rate, 16_000, quality="HQ")) if rate != 16_000 else len(samples)
        units = [int(u) for u in line.split("\t")[1].split()]
        assert len(units) == (n - 400) // 320 + 1, path.name  # README: one unit per 20 ms, frame rule floor
        assert all(0 <= u < 100 for u in units)
        used.update(units)
    assert len(used) > 50  # the speech uses most of the 100 units
