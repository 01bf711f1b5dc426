"""`audiotok plot` and the training cluster-usage plot: real images of the requested size, not blank."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli

FORBIDDEN_AT_IMPORT = {"torch", "transformers", "sklearn", "onnx", "onnxscript", "matplotlib", "faiss"}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def assert_not_blank(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)[..., :3]
    assert image.std() > 0.05, "image is (nearly) one colour"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "too few colours for waveform + spectrogram"


@pytest.fixture(scope="module")
def matplotlib():
    import matplotlib  # the [plot] extra, part of the [test] extra

    return matplotlib


def test_plot_writes_a_png_of_the_requested_size(matplotlib, logmel_bundle, speech_dir, tmp_path):
    out = tmp_path / "utt.png"
    result = run_cli("plot", logmel_bundle, speech_dir / "utt1.wav", "-o", out, "--width", "1000", "--height", "600")
    assert result.returncode == 0, result.stderr.decode()
    assert png_size(out) == (1000, 600)
    assert_not_blank(out)


def test_plot_a_window_and_default_size(matplotlib, logmel_bundle, speech_dir, tmp_path):
    out = tmp_path / "zoom.png"
    result = run_cli("plot", logmel_bundle, speech_dir / "utt1.wav", "-o", out, "--start", "1", "--seconds", "0.5")
    assert result.returncode == 0, result.stderr.decode()
    assert "1.00-1.50 s" in result.stderr.decode()
    assert png_size(out) == (1600, 900)
    assert_not_blank(out)


def test_plot_start_past_the_end_is_an_error(matplotlib, logmel_bundle, speech_dir, tmp_path):
    out = tmp_path / "late.png"
    result = run_cli("plot", logmel_bundle, speech_dir / "utt0.wav", "-o", out, "--start", "600")
    err = result.stderr.decode()
    assert result.returncode == 1 and "past the end" in err and "Traceback" not in err
    assert not out.exists()


def test_train_writes_a_usage_plot_beside_the_centroids(matplotlib, logmel_units):
    plot = logmel_units.with_suffix(".usage.png")
    assert plot.is_file()
    assert png_size(plot) == (1200, 600)
    assert_not_blank(plot)


@pytest.fixture
def without_matplotlib(tmp_path) -> dict:
    """An environment where `import matplotlib` fails, as on an install without the [plot] extra."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def test_plot_without_matplotlib_says_what_to_install(without_matplotlib, logmel_bundle, speech_dir, tmp_path):
    out = tmp_path / "x.png"
    result = run_cli("plot", logmel_bundle, speech_dir / "utt0.wav", "-o", out, env=without_matplotlib)
    assert result.returncode == 1
    assert result.stderr.decode() == ("audiotok: error: plotting needs matplotlib, which is not installed: "
                                      "pip install 'audiotok[plot]'\n")
    assert not out.exists()
    assert run_cli("plot", "--help", env=without_matplotlib).returncode == 0


def test_train_without_matplotlib_still_writes_centroids(without_matplotlib, speech_dir, tmp_path):
    out = tmp_path / "units.npy"
    result = run_cli("train", "--model", "logmel", "--k", "4", "--n-init", "1", "-o", out, speech_dir / "utt0.wav",
                     env=without_matplotlib)
    assert result.returncode == 0, result.stderr.decode()
    assert out.is_file() and not out.with_suffix(".usage.png").exists()
    assert "pip install 'audiotok[plot]'" in result.stderr.decode()


def test_runtime_modules_stay_light_at_import():
    modules = sorted(p.stem for p in (REPO / "runtime").glob("*.py") if p.stem != "__init__")
    code = (f"import sys\nfor m in {modules!r}: __import__('audiotok.runtime.' + m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_AT_IMPORT)!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
