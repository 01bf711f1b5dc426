"""Held-out audit of the hostile-input classes: cases the other hostile-input tests do not cover.

* edges: a file name that is not UTF-8, or holds ``$...$``, is drawn literally in every figure
  (plot's title, train's usage plot), not a matplotlib traceback;
* OS errors: a full disk while train writes its set of files (centroids, sidecar, plot) is one line
  naming the file being written, and the previous set and the folder stay as they were;
* bounds/API: a numpy integer is a channel number, as it is a thread count and a sample rate.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav
from hostile_bundles import run_in_process, unit_graph

from audiotok.runtime.formats.file_set import FileSet
from audiotok.runtime.formats.staging import OutputError
from audiotok.runtime.bundle.manifest import Manifest
from audiotok.runtime.tokenizer import Tokenizer

VALID = dict(encoder="logmel", encoder_type="logmel", layer=0, k=16, dim=80, normalization="none", precision="fp32",
             opset=18, centroids_sha256="ab" * 32, audiotok_version="0.1.0")
ENOSPC = os.strerror(errno.ENOSPC)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return unit_graph(tmp_path_factory.mktemp("audit") / "units.onnx", Manifest(**VALID).to_json(), value=3)


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((16_000, 2))).astype(np.float32)


@pytest.mark.parametrize("name", [os.fsdecode(b"clip\xff.wav"), "clip$\\frac$.wav", "a$b$c.wav"])
def test_plot_draws_any_file_name(name, bundle, stereo, tmp_path, capsys):
    import matplotlib  # noqa: F401  (the [plot] extra, part of the [test] extra)

    write_wav(tmp_path / "clip.wav", stereo[:, 0]).rename(tmp_path / name)  # soundfile cannot write such names
    image = tmp_path / "p.png"
    code, _, err = run_in_process(capsys, "plot", bundle, tmp_path / name, "-o", image)
    assert code == 0 and "Traceback" not in err, err
    assert image.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name, "p.png"])


def test_render_figure_keeps_names_as_text(tmp_path):
    from audiotok.runtime.plotting.canvas import new_figure, render_figure

    figure = new_figure(300, 200)
    ax = figure.add_subplot()
    title = ax.set_title(os.fsdecode(b"k\xff$\\frac$.npy"))
    render_figure(figure, tmp_path / "f.png", "png")
    assert title.get_text() == "k\\udcff$\\frac$.npy" and not title.get_parse_math()


def test_a_full_disk_while_writing_a_file_set_names_that_file(tmp_path):
    (tmp_path / "km.npy").write_bytes(b"previous centroids")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError) as caught:
        with FileSet() as files:
            files.stage(tmp_path / "km.usage.png").write_bytes(b"png")
            files.stage(tmp_path / "km.npy").write_bytes(b"new")
            files.stage(tmp_path / "km.json")
            raise OSError(errno.ENOSPC, ENOSPC)  # as a write of km.json on a full disk raises
    assert str(caught.value) == f"{tmp_path / 'km.json'}: {ENOSPC}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staged file left, nothing replaced
    assert (tmp_path / "km.npy").read_bytes() == b"previous centroids"


def test_an_interrupt_in_a_file_set_is_not_turned_into_an_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with FileSet() as files:
            files.stage(tmp_path / "a.npy")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channel", [np.int64(1), np.uint8(1), np.int32(1)])
def test_a_numpy_integer_is_a_channel_number(channel, bundle, stereo):
    plain = Tokenizer(bundle, channel=1).tokenize(stereo, sample_rate=16_000)
    assert np.array_equal(Tokenizer(bundle, channel=channel).tokenize(stereo, sample_rate=16_000), plain)
    assert len(plain) == (16_000 - 400) // 320 + 1


@pytest.mark.parametrize("channel", [np.bool_(True), np.float64(1.0), np.array([0, 1]), -1])
def test_what_is_not_a_channel_number_is_refused_naming_it(channel, bundle):
    from audiotok.runtime.errors import SettingsError

    with pytest.raises(SettingsError, match="channel must be 'mean' or a channel number"):
        Tokenizer(bundle, channel=channel)


@pytest.mark.parametrize("command", [
    ("tokenize", "{bundle}", "{clip}", "-o", "{target}"),
    ("tokenize", "{bundle}", "{clip}", "--format", "jsonl", "-o", "{target}"),
    ("tokenize", "{bundle}", "{clip}", "--format", "fairseq", "-o", "{target}"),
    ("info", "{bundle}", "--centroids", "{target}"),
    ("evaluate", "{bundle}", "{clip}", "-o", "{target}"),
])
@pytest.mark.parametrize("suffix", [".wav", ".npy"])  # the name does not matter: the content is a recording
def test_an_output_onto_a_recording_that_is_not_an_input_is_refused(command, suffix, bundle, stereo, tmp_path,
                                                                    capsys):
    clip = write_wav(tmp_path / "clip.wav", stereo[:, 0])
    target = write_wav(tmp_path / "take2.wav", stereo[:, 1]).rename(tmp_path / f"take2{suffix}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = [a.format(bundle=bundle, clip=clip, target=target) for a in command]
    code, _, err = run_in_process(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("audiotok: error: ")]
    assert code == 1 and "Traceback" not in err and lines == [
        f"audiotok: error: -o {target}: is WAV audio, and audiotok writes no audio, so this would destroy a "
        "recording; nothing was changed: give another name"], err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_resume_counts_only_the_files_it_was_given(bundle, stereo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.wav", "b.wav"):
        write_wav(tmp_path / name, stereo[:, 0])
    assert run_in_process(capsys, "tokenize", bundle, "a.wav", "b.wav", "--format", "jsonl", "-o", "u.jsonl")[0] == 0
    code, _, err = run_in_process(capsys, "tokenize", bundle, "b.wav", "--format", "jsonl", "-o", "u.jsonl")
    assert code == 0, err
    assert err.splitlines()[-1].endswith(
        "; 1 of 1 files done; it also holds 1 records of paths not given this run (records match paths as written: "
        "resume with the same path arguments, from the same folder)"), err
    assert (tmp_path / "u.jsonl").read_text().count('"path"') == 2
