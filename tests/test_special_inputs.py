"""Pipes, devices and folders where a file belongs; stdin that is closed, a terminal or empty; noise
that C libraries print on fd 2. Each ends in one `audiotok: error:` line (or a documented clean
outcome), within a time limit: a FIFO nobody writes to must never be opened for reading.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import soundfile as sf
from conftest import error_line, write_wav

from audiotok.runtime import Tokenizer
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.errors import AudioError, BundleError
from audiotok.runtime.process.native_stderr import captured_stderr, clean_lines

LIMIT_S = 60  # a hang is a failure, not a stuck suite
PIPE_HINT = "audiotok stream BUNDLE --input -"


def cli(*args, stdin=subprocess.DEVNULL, shell_tail: str = "") -> subprocess.CompletedProcess:
    """``python -m audiotok ARGS`` under a time limit; ``shell_tail`` (e.g. ``<&-``) runs it through bash."""
    command = [sys.executable, "-m", "audiotok", *map(str, args)]
    if shell_tail:
        command = ["bash", "-c", " ".join(f"'{c}'" for c in command) + " " + shell_tail]
    return subprocess.run(command, capture_output=True, stdin=stdin, timeout=LIMIT_S)



def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    return error_line(result, *needles, alone=True)


@pytest.fixture(scope="module")
def specials(tmp_path_factory, speech_dir):
    d = tmp_path_factory.mktemp("specials")
    os.mkfifo(d / "pipe.wav")
    os.mkfifo(d / "pipe.onnx")
    os.mkfifo(d / "pipe.tsv")
    (d / "folder.wav").mkdir()
    ok = sorted(speech_dir.glob("*.wav"))[0]
    (d / "list.tsv").write_text(f"{d}\n{ok.resolve()}\t\npipe.wav\t\nfolder.wav\t\n")
    return d


def test_fifo_audio_file_is_refused_by_tokenize(logmel_bundle, specials):
    one_error_line(cli("tokenize", logmel_bundle, specials / "pipe.wav"),
                   "pipe.wav: is a pipe (FIFO), not an audio file", PIPE_HINT)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/stdin"])
def test_devices_are_refused_with_the_stream_hint(logmel_bundle, device):
    """/dev/stdin is the pipe the test feeds: refused without reading it, and without waiting on it."""
    with subprocess.Popen([sys.executable, "-m", "audiotok", "tokenize", str(logmel_bundle), device],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        _, err = proc.communicate(timeout=LIMIT_S)  # stdin stays open until the child exits
    result = subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)
    one_error_line(result, device, "not an audio file", PIPE_HINT)


def test_special_entries_of_a_manifest_are_per_file_errors(logmel_bundle, specials, tmp_path):
    out = tmp_path / "units.jsonl"
    result = cli("tokenize", logmel_bundle, f"@{specials / 'list.tsv'}", "--format", "jsonl", "-o", out)
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("audiotok: error: 2 of 3 files failed")
    assert len(out.read_text().splitlines()) == 1  # the one real file is done
    reasons = {r["path"]: r["error"] for r in map(json.loads, (tmp_path / "units.errors.jsonl").open())}
    assert "is a pipe (FIFO)" in reasons[str(specials / "pipe.wav")]
    assert "is a folder" in reasons[str(specials / "folder.wav")]


def test_special_file_in_a_folder_is_listed_and_refused(logmel_bundle, specials):
    """A folder scan lists the FIFO (not silently skipped) and the all-or-nothing run stops on it."""
    one_error_line(cli("tokenize", logmel_bundle, specials), "pipe.wav: is a pipe (FIFO)")


@pytest.mark.parametrize("command", ["tokenize", "info", "stream"])
def test_fifo_bundle_is_refused(specials, speech_dir, command):
    audio = {"tokenize": [sorted(speech_dir.glob("*.wav"))[0]], "info": [], "stream": ["--input", "-"]}[command]
    one_error_line(cli(command, specials / "pipe.onnx", *audio), "pipe.onnx: is a pipe (FIFO), not an ONNX bundle")


def test_fifo_manifest_is_refused(logmel_bundle, specials):
    one_error_line(cli("tokenize", logmel_bundle, f"@{specials / 'pipe.tsv'}"),
                   "pipe.tsv: is a pipe (FIFO), not a file list")


def test_fifo_stream_input_file_is_refused(logmel_bundle, specials):
    one_error_line(cli("stream", logmel_bundle, "--input", specials / "pipe.wav"), "is a pipe (FIFO)", PIPE_HINT)


def test_fifo_in_training_data_is_skipped_by_name(specials):
    """Training skips unreadable files with a warning (its rule for corrupt ones); a FIFO is one of them."""
    result = cli("train", "--model", "logmel", "--k", "4", "-o", specials / "c.npy", specials / "pipe.wav")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err
    assert "pipe.wav: is a pipe (FIFO), not an audio file" in err
    assert err.strip().splitlines()[-1].startswith("audiotok: error: no usable audio")
    assert not (specials / "c.npy").exists()


# --- stdin for `stream --input -` ------------------------------------------------------------------

def test_stream_stdin_closed(logmel_bundle):
    one_error_line(cli("stream", logmel_bundle, "--input", "-", stdin=None, shell_tail="<&-"), "stdin is closed")


def test_stream_empty_stdin_is_an_error_like_tokenize(logmel_bundle, tmp_path):
    streamed = one_error_line(cli("stream", logmel_bundle, "--input", "-"))
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert streamed == "audiotok: error: stdin: empty audio (no samples)"
    assert one_error_line(cli("stream", logmel_bundle, "--input", empty)) == \
        one_error_line(cli("tokenize", logmel_bundle, empty)) == f"audiotok: error: {empty}: empty audio (no samples)"


def test_stream_stdin_terminal(logmel_bundle):
    import pty

    master, slave = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "audiotok", "stream", str(logmel_bundle), "--input", "-"],
                                stdin=slave, capture_output=True, timeout=LIMIT_S)
    finally:
        os.close(master)
        os.close(slave)
    one_error_line(result, "stdin is a terminal", "arecord")


class FailingStdin:
    """stdin whose reads deliver ``data`` and then fail with EIO (a hung-up terminal or device)."""

    def __init__(self, data: bytes, fd: int) -> None:
        self.buffer = self
        self._data, self._fd = data, fd

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def read(self, n: int) -> bytes:
        if not self._data:
            raise OSError(5, "Input/output error")
        piece, self._data = self._data[:n], self._data[n:]
        return piece

    read1 = read


def test_stream_read_error_keeps_what_was_printed(logmel_bundle, speech_16k, monkeypatch, capsys):
    from audiotok.runtime.commands.dispatcher import main

    pcm = (speech_16k[: 3 * 16_000] * 32767).astype("<i2")
    read_end, write_end = os.pipe()
    try:
        monkeypatch.setattr(sys, "stdin", FailingStdin(pcm.tobytes(), read_end))
        code = main(["stream", str(logmel_bundle), "--input", "-"])
    finally:
        os.close(read_end)
        os.close(write_end)
    out, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines() == ["audiotok: error: stdin: reading PCM failed after 3.00 s of audio "
                                        "(Input/output error)"]
    offline = Tokenizer(logmel_bundle).tokenize(pcm, sample_rate=16_000)
    assert [int(u) for u in out.split()] == offline.tolist()  # every frame of what arrived, flushed


# --- library noise on fd 2 ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken_audio(tmp_path_factory, speech_16k):
    d = tmp_path_factory.mktemp("broken")
    (d / "zeros.mp3").write_bytes(b"\x00" * 5000)
    flac = d / "whole.flac"
    sf.write(flac, speech_16k[: 4 * 16_000], 16_000)
    data = flac.read_bytes()
    (d / "half.flac").write_bytes(data[: len(data) // 2])
    return d


def test_broken_mp3_gives_the_decoders_reason_and_nothing_else(logmel_bundle, broken_audio):
    line = one_error_line(cli("tokenize", logmel_bundle, broken_audio / "zeros.mp3"), "zeros.mp3: not a readable")
    assert "Illegal Audio-MPEG-Header" in line
    assert "possibly a pipe" not in line


def test_half_a_flac_says_where_decoding_stopped(logmel_bundle, broken_audio):
    """The first half decodes; the message gives the decoder's position (about 2 s of 4), not 0.00 s."""
    line = one_error_line(cli("tokenize", logmel_bundle, broken_audio / "half.flac"), "of 4.00 s in its header",
                          "the whole file is refused")
    seconds = float(line.split("decoding failed at ")[1].split(" s")[0])
    assert 1.0 < seconds < 3.0, line


def test_half_a_flac_in_a_stream_prints_the_units_before_it(logmel_bundle, broken_audio):
    result = cli("stream", logmel_bundle, "--input", broken_audio / "half.flac")
    line = one_error_line(result, "decoding failed at", "the units before it were printed")
    seconds = float(line.split("decoding failed at ")[1].split(" s")[0])
    frames = len(result.stdout.decode().split())
    assert seconds > 1.0 and frames >= int((seconds - 0.2) / 0.02) - 32  # all but the last unfinished chunk


@pytest.fixture(scope="module")
def failing_bundle(logmel_bundle, tmp_path_factory):
    """The logmel bundle with a Reshape to exactly 16080 samples (50 frames) in front: any other length fails inside
    onnxruntime at run time, after a clean load."""
    model = onnx.load(str(logmel_bundle))
    graph = model.graph
    shape = oh.make_tensor("fixed_len", onnx.TensorProto.INT64, [2], [1, 16_080])
    graph.initializer.append(shape)
    for node in graph.node:
        node.input[:] = ["waveform_fixed" if name == "waveform" else name for name in node.input]
    graph.node.insert(0, oh.make_node("Reshape", ["waveform", "fixed_len"], ["waveform_fixed"], name="fixed_length"))
    path = tmp_path_factory.mktemp("failing") / "failing.onnx"
    onnx.save(model, str(path))
    return path


def test_graph_failure_is_one_line_without_onnxruntime_noise(failing_bundle, tmp_path):
    wav = write_wav(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.1)
    one_error_line(cli("tokenize", failing_bundle, wav), "failing.onnx: the graph failed on 1.50 s of audio",
                   "Reshape node. Name:'fixed_length", "cannot be reshaped")


def test_graph_failure_noise_is_captured_in_process(failing_bundle, capfd):
    tokenizer = Tokenizer(failing_bundle)
    assert len(tokenizer.tokenize(np.zeros(16_080, np.float32), sample_rate=16_000)) == 50  # the one good length
    with pytest.raises(BundleError, match="fixed_length"):
        tokenizer.tokenize(np.zeros(8_000, np.float32), sample_rate=16_000)
    assert capfd.readouterr().err == ""


def test_capture_restores_fd2_and_returns_what_was_written(capfd):
    with captured_stderr() as outer:
        os.write(2, b"\x1b[1;31m2026-01-01 00:00:00.1 [E:onnxruntime:, x.cc:1 F] boom\x1b[m\nNote: a\nNote: a\n")
        with captured_stderr() as inner:  # nested: shares the outer capture
            os.write(2, b"inner\n")
    os.write(2, b"after\n")
    assert outer.lines == ["boom", "Note: a", "inner"] and inner.lines == []
    assert outer.summary() == "boom"
    assert capfd.readouterr().err == "after\n"
    assert clean_lines("Note: x\n\nNote: x\n") == ["Note: x"]


def test_file_blocks_messages_in_process(broken_audio, specials):
    for path, needle in [(broken_audio / "zeros.mp3", "Illegal Audio-MPEG-Header"),
                         (specials / "pipe.wav", "is a pipe (FIFO)"), (specials / "folder.wav", "is a folder")]:
        with pytest.raises(AudioError, match=re.escape(needle)):
            list(file_blocks(path))


def test_nonblocking_stdin_waits_for_audio_instead_of_ending():
    """O_NONBLOCK on the pipe (set by some producers) makes "nothing yet" look like the end of input."""
    import threading
    import time

    from audiotok.runtime.audio.pcm import pcm_blocks

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    pcm = np.arange(16_000, dtype="<i2")

    def produce() -> None:
        for piece in np.array_split(pcm, 4):
            time.sleep(0.2)  # the reader finds the pipe empty in between
            os.write(write_end, piece.tobytes())
        os.close(write_end)

    producer = threading.Thread(target=produce)
    producer.start()
    with os.fdopen(read_end, "rb") as stream:
        got = np.concatenate(list(pcm_blocks(stream, encoding="s16le", channels=1, rate=16_000)))
    producer.join()
    assert np.array_equal(got[:, 0], pcm)
