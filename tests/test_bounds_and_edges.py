"""Bounded work and the edges of numbers, shapes and names.

- A bundle holding a loop is refused by node before it runs; one that allocates gigabytes at run
  time is stopped by the memory limit, which AUDIOTOK_MAX_MEMORY_MB raises; Ctrl-C and SIGTERM
  stop a slow graph within seconds.
- --threads/--jobs and every numeric option refuse inf, nan and huge values in one line.
- The Python API refuses fractional or absurd sample rates and zero-size axes with a ValueError.
- A file name that is not UTF-8 goes into jsonl (file or stdout) and comes back byte for byte.
- An absurd header rate gets audiotok's range message.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from conftest import ctrl_c_reaches_it, error_line, run_cli, write_wav
from hostile_bundles import run_in_process
from onnx import TensorProto, numpy_helper

from audiotok.runtime.constants import MANIFEST_KEY
from audiotok.runtime.errors import SettingsError
from audiotok.runtime.bundle.manifest import Manifest
from audiotok.runtime.bundle.session import thread_limit
from audiotok.runtime.tokenizer import Tokenizer

VALID = dict(encoder="logmel", encoder_type="logmel", layer=0, k=16, dim=80, normalization="none", precision="fp32",
             opset=18, centroids_sha256="ab" * 32, audiotok_version="0.1.0")
UNIT = 3
SAMPLES = 16_000
FRAMES = (SAMPLES - 400) // 320 + 1


def _int(name: str, values, dims: list[int]) -> onnx.NodeProto:
    flat = np.array(values, dtype=np.int64).flatten().tolist()
    return oh.make_node("Constant", [], [name], value=oh.make_tensor(name + "_v", TensorProto.INT64, dims, flat))


def unit_bundle(path: Path, extra: list[onnx.NodeProto] = (), extra_out: str | None = None,
                initializers: list[onnx.TensorProto] = ()) -> Path:
    """A bundle whose every unit is UNIT; ``extra`` nodes compute ``extra_out`` (a float or int64 tensor),
    which is multiplied by zero and added to the frame count, so the units depend on it."""
    nodes = [oh.make_node("Shape", ["waveform"], ["shape"]), _int("axis1", 1, []),
             oh.make_node("Gather", ["shape", "axis1"], ["n"], axis=0), _int("field", 400, []), _int("hop", 320, []),
             _int("one", 1, []), oh.make_node("Sub", ["n", "field"], ["a"]), oh.make_node("Div", ["a", "hop"], ["b"]),
             oh.make_node("Add", ["b", "one"], ["frames0"])]
    if extra_out is None:
        nodes.append(oh.make_node("Identity", ["frames0"], ["frames"]))
    else:
        nodes += [*extra, oh.make_node("ReduceSum", [extra_out], ["extra_sum"], keepdims=0),
                  oh.make_node("Cast", ["extra_sum"], ["extra_int"], to=TensorProto.INT64), _int("zero", 0, []),
                  oh.make_node("Mul", ["extra_int", "zero"], ["nothing"]),
                  oh.make_node("Add", ["frames0", "nothing"], ["frames"])]
    nodes += [_int("axes", [0], [1]), oh.make_node("Unsqueeze", ["frames", "axes"], ["frames1"]),
              _int("batch", [1], [1]), oh.make_node("Concat", ["batch", "frames1"], ["out_shape"], axis=0),
              oh.make_node("ConstantOfShape", ["out_shape"], ["units"],
                           value=oh.make_tensor("v", TensorProto.INT64, [1], [UNIT]))]
    graph = oh.make_graph(nodes, "units", [oh.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, "samples"])],
                          [oh.make_tensor_value_info("units", TensorProto.INT64, [1, "frames"])],
                          initializer=list(initializers))
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 9
    oh.set_model_props(model, {MANIFEST_KEY: Manifest(**VALID).to_json()})
    onnx.save(model, str(path))
    return path


def endless_loop() -> list[onnx.NodeProto]:
    """A Loop with no trip count whose condition stays true: it never ends."""
    body = oh.make_graph(
        [oh.make_node("Identity", ["cond_in"], ["cond_out"]), _int("step", 1, []),
         oh.make_node("Add", ["v_in", "step"], ["v_out"])], "body",
        [oh.make_tensor_value_info("i", TensorProto.INT64, []), oh.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         oh.make_tensor_value_info("v_in", TensorProto.INT64, [])],
        [oh.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         oh.make_tensor_value_info("v_out", TensorProto.INT64, [])])
    true = oh.make_node("Constant", [], ["true"], value=oh.make_tensor("t", TensorProto.BOOL, [], [True]))
    return [true, _int("start", 0, []), oh.make_node("Loop", ["", "true", "start"], ["spun"], name="spin", body=body)]


def loop_in_if_branch() -> list[onnx.NodeProto]:
    """The endless Loop hidden in the then-branch of an If."""
    loop = endless_loop()
    then = oh.make_graph(loop, "then", [], [oh.make_tensor_value_info("spun", TensorProto.INT64, [])])
    other = oh.make_graph([_int("spun_else", 0, [])], "else", [],
                          [oh.make_tensor_value_info("spun_else", TensorProto.INT64, [])])
    flag = oh.make_node("Constant", [], ["flag"], value=oh.make_tensor("f", TensorProto.BOOL, [], [True]))
    return [flag, oh.make_node("If", ["flag"], ["branch"], name="choose", then_branch=then, else_branch=other)]


def expand_to(mib: int) -> list[onnx.NodeProto]:
    """An Expand of one float to ``mib`` MiB, from a shape of a few bytes in the file."""
    rows = mib * (1 << 20) // (4 * 16384)
    return [oh.make_node("ReduceSum", ["waveform"], ["total"], keepdims=0), _int("big_shape", [rows, 16384], [2]),
            oh.make_node("Expand", ["total", "big_shape"], ["big"], name="inflate")]


def matmul_chain(count: int, size: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``count`` products of a ``size`` x ``size`` matrix: legal, and slow (seconds per hundred nodes)."""
    weight = numpy_helper.from_array(np.eye(size, dtype=np.float32), "w")
    nodes = [oh.make_node("ReduceSum", ["waveform"], ["total"], keepdims=0),
             oh.make_node("Mul", ["w", "total"], ["x0"])]
    nodes += [oh.make_node("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]) for i in range(count)]
    return nodes, [weight]


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("edges")
    return write_wav(folder / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(SAMPLES)).astype(np.float32))


def expected_line(path: Path) -> str:
    return f"{path}\t{' '.join([str(UNIT)] * FRAMES)}\n"


# --- graphs that a unit graph never needs ---------------------------------------------------------------

def test_a_plain_unit_graph_still_tokenizes(tmp_path, wav):
    bundle = unit_bundle(tmp_path / "plain.onnx")
    result = run_cli("tokenize", bundle, wav)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == expected_line(wav)


@pytest.mark.parametrize("seconds", ["100000", "1e300"])
def test_a_huge_one_pass_limit_is_a_legal_setting(tmp_path, wav, capsys, seconds):
    """The memory ceiling grows with the pass but stays a number onnxruntime takes (at most 16 TiB)."""
    bundle = unit_bundle(tmp_path / "plain.onnx")
    assert run_in_process(capsys, "tokenize", bundle, wav, "--max-pass-seconds", seconds) == (0, expected_line(wav), "")


@pytest.mark.parametrize("build,needle", [
    (lambda: (endless_loop(), "spun"), "Loop node 'spin' in the graph is a loop"),
    (lambda: (loop_in_if_branch(), "branch"), "Loop node 'spin' in a subgraph of If node 'choose' is a loop"),
])
@pytest.mark.parametrize("command", ["tokenize", "info"])
def test_a_loop_is_refused_by_node_before_it_runs(tmp_path, wav, capsys, build, needle, command):
    nodes, out = build()
    bundle = unit_bundle(tmp_path / "loop.onnx", nodes, out)
    args = ("tokenize", bundle, wav) if command == "tokenize" else ("info", bundle)
    # a hang fails too: run_in_process stops the command after 30 s
    assert_alone(run_in_process(capsys, *args), f"{bundle}: {needle}", "refused before it runs")


def test_an_expand_to_gigabytes_is_stopped_by_the_memory_limit(tmp_path, wav):
    bundle = unit_bundle(tmp_path / "inflate.onnx", expand_to(2048), "big")
    assert bundle.stat().st_size < 2048
    result = run_cli("tokenize", bundle, wav)
    # docs/errors.md's rule: 1 GiB + 4 x the bundle (1 KB: 1 MiB) + 256 bytes per squared frame of a 30 s window
    limit = 1024 + 4 * 1 + -(-256 * 1500 * 1500 // 2**20)
    error_line(result, str(bundle), "Expand node 'inflate' asked for 2,048 MiB at run time",
               f"memory limit of {limit:,} MiB", "AUDIOTOK_MAX_MEMORY_MB")
    raised = run_cli("tokenize", bundle, wav, env={"AUDIOTOK_MAX_MEMORY_MB": "512"})
    error_line(raised, "memory limit of 512 MiB")


def test_the_memory_limit_can_be_raised_for_a_trusted_bundle(tmp_path, wav):
    bundle = unit_bundle(tmp_path / "inflate.onnx", expand_to(256), "big")  # fine under the default limit
    # a longer one-pass limit raises the default with the square of the pass (60 s: 3000 frames)
    large = unit_bundle(tmp_path / "large.onnx", expand_to(4096), "big")
    limit = 1024 + 4 * 1 + -(-256 * 3000 * 3000 // 2**20)
    error_line(run_cli("tokenize", large, wav, "--max-pass-seconds", "60"), f"memory limit of {limit:,} MiB")
    assert run_cli("tokenize", bundle, wav).stdout.decode() == expected_line(wav)
    error_line(run_cli("tokenize", bundle, wav, env={"AUDIOTOK_MAX_MEMORY_MB": "128"}), "memory limit of 128 MiB")
    error_line(run_cli("tokenize", bundle, wav, env={"AUDIOTOK_MAX_MEMORY_MB": "lots"}),
               "AUDIOTOK_MAX_MEMORY_MB must be a whole number of MiB")


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory) -> Path:
    nodes, weights = matmul_chain(count=400, size=1024)
    return unit_bundle(tmp_path_factory.mktemp("slow") / "slow.onnx", nodes, f"x{400}", weights)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_slow_graph_at_once(tmp_path, wav, slow_bundle, signum):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "tokenize", str(slow_bundle), str(wav),
                             "-o", str(out / "units.txt"), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_reaches_it)
    deadline = time.monotonic() + 120
    while not list(out.glob(".units.txt.*.tmp")):  # staged: the bundle is loaded and the run begins
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None  # still inside the graph's run
    sent = time.monotonic()
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    took = time.monotonic() - sent
    err = proc.stderr.read().decode()
    assert took < 2.5, f"{took:.1f} s"
    assert code == 130 and err.strip().splitlines()[-1] == "audiotok: interrupted", err
    assert list(out.iterdir()) == []  # no output, no staged temp


# --- numeric options --------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--threads", "100000"], "--threads must be at most 1024"),
    (["--threads", str(thread_limit() + 1)], f"--threads must be at most {thread_limit()} (4 per core"),
    (["--jobs", str(thread_limit() + 1)], f"--jobs must be at most {thread_limit()}"),
    (["--jobs", "inf"], "--jobs must be an integer, got 'inf'"),
    (["--threads", "nan"], "--threads must be an integer, got 'nan'"),
    (["--jobs", "9" * 40], "--jobs must be at most"),
    (["--max-pass-seconds", "inf"], "--max-pass-seconds must be a number of seconds"),
    (["--max-pass-seconds", "nan"], "--max-pass-seconds must be a number of seconds"),
    (["--trim-silence", "1e400"], "--trim-silence must be a number of dB"),
])
def test_tokenize_numbers_out_of_bounds_are_one_line(tmp_path, wav, capsys, args, needle):
    bundle = unit_bundle(tmp_path / "plain.onnx")
    assert_alone(run_in_process(capsys, "tokenize", bundle, wav, *args), needle)


@pytest.mark.parametrize("args,needle", [
    (["stream", "B", "--chunk-ms", "inf"], "--chunk-ms must be a finite number, got 'inf'"),
    (["stream", "B", "--rate", "1e9"], "--rate must be an integer, got '1e9'"),
    (["stream", "B", "--threads", "100000"], "--threads must be at most"),
    (["bench", "B", "--seconds", "nan"], "--seconds must be a finite number"),
    (["bench", "B", "--threads", "1", "100000"], "--threads must be at most"),
    (["evaluate", "B", "x", "--seed", "1e400"], "--seed must be an integer, got '1e400'"),
    (["train", "x", "--k", "1e400", "-o", "c.npy"], "--k must be an integer, got '1e400'"),
    (["train", "x", "--k", "16", "-o", "c.npy", "--max-hours", "inf"], "--max-hours must be a finite number"),
    (["train", "x", "--k", "16", "-o", "c.npy", "--percent", "nan"], "--percent must be a finite number"),
    (["train", "x", "--k", "99999999999", "-o", "c.npy"], "--k must be at most"),
    (["train", "x", "--k", "16", "-o", "c.npy", "--jobs", "100000"], "--jobs must be at most"),
    (["export", "--centroids", "c.npy", "-o", "b.onnx", "--min-agreement", "nan"], "--min-agreement must be a finite"),
    (["export", "--centroids", "c.npy", "-o", "b.onnx", "--layer", "1e3"], "--layer must be an integer"),
])
def test_every_command_refuses_inf_nan_and_huge(capsys, args, needle):
    assert_alone(run_in_process(capsys, *args), needle)


def assert_alone(outcome: tuple[int, str, str], *needles: str) -> None:
    """Exit 1 and nothing on stderr but one ``audiotok: error:`` line holding each of ``needles``."""
    code, out, err = outcome
    assert code == 1 and out == "", err
    assert len(err.splitlines()) == 1 and err.startswith("audiotok: error: "), err
    assert all(needle in err for needle in needles), err


def test_threads_in_the_python_api_are_bounded(tmp_path):
    bundle = unit_bundle(tmp_path / "plain.onnx")
    with pytest.raises(SettingsError, match=f"threads must be an integer in 1..{thread_limit()}"):
        Tokenizer(bundle, threads=100_000)


# --- the Python API -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    return Tokenizer(unit_bundle(tmp_path_factory.mktemp("api") / "plain.onnx"))


@pytest.mark.parametrize("rate", [16000.5, float("nan"), float("inf"), 0, -16000, 10**9, True, "16000"])
def test_a_sample_rate_no_audio_has_is_a_value_error(tokenizer, rate):
    with pytest.raises(ValueError, match=r"^sample_rate must be a positive whole number of Hz, got "):
        tokenizer.tokenize(np.zeros(SAMPLES, np.float32), sample_rate=rate)


def test_a_whole_float_sample_rate_is_taken(tokenizer):
    units = tokenizer.tokenize(np.zeros(SAMPLES, np.float32), sample_rate=16000.0)
    assert units.tolist() == [UNIT] * FRAMES


@pytest.mark.parametrize("shape", [(0,), (0, 2), (2, 0), (SAMPLES, 0)])
def test_a_zero_size_axis_is_a_value_error(tokenizer, shape):
    with pytest.raises(ValueError, match=r"samples"):
        tokenizer.tokenize(np.zeros(shape, np.float32), sample_rate=16_000)


def test_a_stream_refuses_the_same(tokenizer):
    with pytest.raises(ValueError, match="sample rate must be a positive whole number of Hz, got 44100.5"):
        tokenizer.stream(sample_rate=44100.5)
    with pytest.raises(ValueError, match=r"no channels"):
        tokenizer.stream().accept(np.zeros((320, 0), np.float32))


# --- names and decoders -----------------------------------------------------------------------------------

@pytest.fixture
def odd_names(tmp_path, wav) -> tuple[Path, list[bytes]]:
    """A folder holding wavs named with a byte that is not UTF-8, a tab and a newline."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = [b"caf\xe9.wav", b"tab\there.wav", b"line\nbreak.wav"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(wav.read_bytes())
    return folder, names


def _names_back(text: str, folder: Path) -> list[bytes]:
    """Each record's path as bytes, the way docs/errors.md says to read it back."""
    return sorted(os.path.basename(os.fsencode(json.loads(line)["path"])) for line in text.splitlines())


@pytest.mark.parametrize("to", ["stdout", "file"])
def test_every_name_round_trips_through_jsonl(tmp_path, odd_names, to):
    folder, names = odd_names
    bundle = unit_bundle(tmp_path / "plain.onnx")
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", bundle, folder, "--format", "jsonl", *(["-o", out] if to == "file" else []))
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode("ascii") if to == "stdout" else out.read_text("ascii")
    assert _names_back(text, folder) == sorted(names)
    assert all(json.loads(line)["units"] == [UNIT] * FRAMES for line in text.splitlines())
    if to == "file":  # the resume reads the escaped names back and finds every file done
        again = run_cli("tokenize", bundle, folder, "--format", "jsonl", "-o", out)
        assert again.returncode == 0 and "3 of 3 files already done" in again.stderr.decode()
        assert out.read_text("ascii") == text


def test_txt_points_to_jsonl_and_jsonl_takes_it(tmp_path, odd_names):
    folder, _ = odd_names
    bundle = unit_bundle(tmp_path / "plain.onnx")
    error_line(run_cli("tokenize", bundle, folder / os.fsdecode(b"caf\xe9.wav")), "use --format jsonl")
    assert run_cli("tokenize", bundle, folder / os.fsdecode(b"caf\xe9.wav"), "--format", "jsonl").returncode == 0


@pytest.mark.parametrize("rate", [0, 3, 2**31, 2**32 - 1])
def test_an_absurd_header_rate_gets_audiotoks_range(tmp_path, wav, capsys, rate):
    data = bytearray(wav.read_bytes())
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    data[24:28] = struct.pack("<I", rate)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(bytes(data))
    bundle = unit_bundle(tmp_path / "plain.onnx")
    code, out, err = run_in_process(capsys, "tokenize", bundle, bad)
    assert code == 1 and out == ""
    assert err == (f"audiotok: error: {bad}: header claims {rate} Hz and 1 channel(s); audiotok reads "
                   "1000..768000 Hz with at least one channel\n")
