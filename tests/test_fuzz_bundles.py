"""Bundles from strangers: seeded mutations of a valid bundle (its manifest, its bytes, its graph's
output) each end in success or exactly one `audiotok: error:` line naming the bundle, within a time
limit, never a traceback. Most cases run in this process (seconds for hundreds); a few through real
subprocesses check the same of the installed command."""

from __future__ import annotations

import json
import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import run_cli, write_wav
from hostile_bundles import (assert_one_error_or_success, manifest_of, replace_field, run_in_process, unit_graph,
                             with_manifest)

SEED = 13
FIELDS = ("encoder", "encoder_type", "layer", "k", "dim", "normalization", "precision", "opset", "centroids_sha256",
          "audiotok_version", "sample_rate", "hop", "receptive_field", "schema", "licence", "provenance", "agreement")
REQUIRED = FIELDS[:10]
# Raw JSON literals no field accepts; NaN, Infinity and 1e400 parse to non-finite floats in plain json.loads.
ALWAYS_BAD = ["NaN", "Infinity", "-Infinity", "1e400", "true", "9" * 50, "[" * 50_000 + "]" * 50_000,
              json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})]
SOMETIMES_BAD = ["null", "false", '"7"', "1.5", "-1", "0", "2", "4294967296", "[]", "{}", '"' + "x" * 10_000 + '"',
                 '"logmel"', '"none"', '"fp32"', '{"nested": {"NaN": "text"}}']
COMMANDS = ("tokenize", "info", "stream", "centroids", "plot", "verify")


def _command(kind: str, bundle, wav, tmp_path) -> list:
    if kind == "tokenize":
        return ["tokenize", bundle, wav]
    if kind == "stream":
        return ["stream", bundle, "--input", wav]
    if kind == "centroids":
        return ["info", bundle, "--centroids", tmp_path / "c.npy"]
    if kind == "plot":
        return ["plot", bundle, wav, "-o", tmp_path / "units.png"]
    if kind == "verify":
        return ["verify", bundle, wav, "--model", "logmel"]
    return ["info", bundle]


def _manifest_cases() -> list[tuple[str, str, str, bool]]:
    """(id, field, literal, must fail) for every field with every always-bad and a seeded few other values."""
    rng = random.Random(SEED)
    cases = []
    for field in FIELDS:
        for i, literal in enumerate(ALWAYS_BAD):
            cases.append((f"{field}-bad{i}", field, literal, True))
        for i, literal in enumerate(rng.sample(SOMETIMES_BAD, 5)):
            cases.append((f"{field}-other{SOMETIMES_BAD.index(literal)}", field, literal, False))
    return cases


@pytest.fixture(scope="module")
def base(logmel_bundle, tmp_path_factory):
    """The valid bundle as an onnx model, its manifest text, and a 1.2 s wav."""
    model = onnx.load(str(logmel_bundle))
    wav = write_wav(tmp_path_factory.mktemp("fuzz") / "noise.wav",
                    0.1 * np.random.default_rng(SEED).standard_normal(19_200).astype(np.float32))
    return model, manifest_of(model), wav


def _check(capsys, command: list, bundle, *, must_fail: bool, needles: tuple[str, ...] = ()) -> str | None:
    code, _, err = run_in_process(capsys, *command)
    line = assert_one_error_or_success(code, err)
    if must_fail:
        assert line is not None, f"{command} succeeded"
    if line is not None and needles:
        for needle in needles:
            assert needle in line, line
    return line


@pytest.mark.parametrize("case", _manifest_cases(), ids=lambda c: c[0])
def test_manifest_values(base, tmp_path, capsys, case):
    name, field, literal, must_fail = case
    model, manifest, wav = base
    bundle = with_manifest(model, replace_field(manifest, field, literal), tmp_path / "b.onnx")
    kind = COMMANDS[sum(map(ord, name)) % len(COMMANDS)]  # each command gets a share, the same every run
    line = _check(capsys, _command(kind, bundle, wav, tmp_path), bundle, must_fail=must_fail)
    if line is not None and must_fail:
        assert str(bundle) in line, line  # the bundle is named, not the audio
        assert f"'{field}'" in line or "manifest" in line, line


@pytest.mark.parametrize("field", FIELDS)
def test_missing_fields(base, tmp_path, capsys, field):
    model, manifest, wav = base
    data = json.loads(manifest)
    del data[field]
    bundle = with_manifest(model, json.dumps(data), tmp_path / "b.onnx")
    line = _check(capsys, ["tokenize", bundle, wav], bundle, must_fail=field in REQUIRED)
    if field in REQUIRED:
        assert f"lacks {field}" in line and str(bundle) in line, line


def _structural_cases() -> list[tuple[str, str, bool]]:
    """(id, manifest text, must fail): truncations, non-objects, nesting, size, unknown keys."""
    rng = random.Random(SEED + 1)
    cases = [("not-object-" + str(i), text, True) for i, text in enumerate(["[]", "1", "null", '"x"', "", " ", "{"])]
    cases += [("deep-" + str(depth), depth, depth > 31) for depth in (5, 20, 31, 33, 200, 100_000)]
    cases += [("truncated-" + str(i), cut, True) for i, cut in enumerate(sorted(rng.sample(range(1, 1200), 12)))]
    cases += [("schema-" + literal, literal, True) for literal in ("true", '"1"', "1.0", "2", "0", "null")]
    cases += [("huge", 2 << 20, True), ("unknown-key", "unknown", False), ("invalid-utf8-escape", "escape", True)]
    return cases


def _structural_text(manifest: str, case) -> str:
    name, arg, _ = case
    if name.startswith("not-object"):
        return arg
    if name.startswith("deep"):
        return replace_field(manifest, "provenance", "{\"a\": " + "[" * (arg - 1) + "]" * (arg - 1) + "}")
    if name.startswith("truncated"):
        return manifest[:arg]
    if name.startswith("schema"):
        return replace_field(manifest, "schema", arg)
    if name == "huge":
        return replace_field(manifest, "agreement", json.dumps({"pad": "x" * arg}))
    if name == "unknown-key":
        return replace_field(manifest, "processor_options_from_the_future", '{"x": 1}')
    return replace_field(manifest, "encoder", '"\\ud800 lone surrogate \\uZZZZ"')


@pytest.mark.parametrize("case", _structural_cases(), ids=lambda c: c[0])
def test_manifest_structure(base, tmp_path, capsys, case):
    model, manifest, wav = base
    bundle = with_manifest(model, _structural_text(manifest, case), tmp_path / "b.onnx")
    line = _check(capsys, ["tokenize", bundle, wav], bundle, must_fail=case[2])
    if case[2]:
        assert str(bundle) in line, line
    else:
        assert line is None


def _byte_cases() -> list[tuple[str, str, int]]:
    cases = [(f"flip-{seed}", "flip", seed) for seed in range(40)]
    return cases + [(f"cut-{seed}", "cut", seed) for seed in range(20)]


@pytest.mark.parametrize("case", _byte_cases(), ids=lambda c: c[0])
def test_bundle_bytes(logmel_bundle, base, tmp_path, capsys, case):
    _, mode, seed = case
    _, _, wav = base
    data = bytearray(logmel_bundle.read_bytes())
    rng = random.Random(SEED * 1000 + seed)
    if mode == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    else:
        data = data[:rng.choice([0, 1, 16, 100, 1000, rng.randrange(len(data))])]
    bundle = tmp_path / "b.onnx"
    bundle.write_bytes(bytes(data))
    kind = ("tokenize", "centroids", "stream", "info")[seed % 4]
    line = _check(capsys, _command(kind, bundle, wav, tmp_path), bundle, must_fail=mode == "cut")
    if line is not None:
        assert str(bundle) in line, line


# name -> (unit_graph options, what the error says; None: a valid graph)
GRAPHS = {
    "valid": ({}, None),
    "declared-without-shape": (dict(declared=(TensorProto.INT64, None)), None),
    "int32-output": (dict(dtype=TensorProto.INT32, declared=(TensorProto.INT32, [1, "frames"])), None),
    "float-output": (dict(dtype=TensorProto.FLOAT, declared=(TensorProto.FLOAT, [1, "frames"])), "integer"),
    "float-behind-int-declaration": (dict(dtype=TensorProto.FLOAT), "not a valid ONNX model"),
    "negative-ids": (dict(value=-1), "outside"),
    "id-k": (dict(value=16), "outside"),
    "huge-ids": (dict(value=2**40), "outside"),
    "rank-1": (dict(rank=1, declared=(TensorProto.INT64, ["frames"])), "[1, frames]"),
    "rank-3": (dict(rank=3, declared=(TensorProto.INT64, [1, 1, "frames"])), "[1, frames]"),
    "rank-3-undeclared": (dict(rank=3, declared=(TensorProto.INT64, None)), "[1, frames]"),
    "one-frame-too-many": (dict(frames_delta=1), "shaped"),
    "one-frame-too-few": (dict(frames_delta=-1), "shaped"),
    "half-the-frames": (dict(frames_delta=-20), "shaped"),
    "batch-2": (dict(batch=2), "shaped"),
    "int-input": (dict(input_declared=(TensorProto.INT64, [1, "samples"])), "input 'waveform'"),
    "double-input": (dict(input_declared=(TensorProto.DOUBLE, [1, "samples"])), "input 'waveform'"),
    "rank-1-input": (dict(input_declared=(TensorProto.FLOAT, ["samples"])), "input 'waveform'"),
    "other-output-name": (dict(output_name="ids", declared=(TensorProto.INT64, [1, "frames"])), "output 'units'"),
    "fails-at-run": (dict(fail_at_run=True, declared=(TensorProto.INT64, [1, "frames"])), "the graph failed"),
}


@pytest.mark.parametrize("kind", ["tokenize", "stream", "corpus", "plot"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_outputs(base, tmp_path, capsys, name, kind):
    options, needle = GRAPHS[name]
    _, manifest, wav = base
    bundle = unit_graph(tmp_path / f"{name}.onnx", manifest, **options)
    out = tmp_path / "units.jsonl"
    command = (["tokenize", bundle, wav, wav.parent, "--format", "jsonl", "-o", out] if kind == "corpus"
               else _command(kind, bundle, wav, tmp_path))
    line = _check(capsys, command, bundle, must_fail=needle is not None)
    if needle is None:
        return
    assert str(bundle) in line and needle in line, line
    assert str(wav) not in line  # the bundle is blamed, not the audio
    if kind == "corpus":  # the run stops; no file is recorded as done or as failed
        assert not out.exists() or out.read_text() == ""
        assert not (tmp_path / "units.errors.jsonl").exists()


SUBPROCESS_CASES = [("k", "NaN"), ("dim", '"80"'), ("provenance", "[" * 100_000 + "]" * 100_000), ("layer", "true")]


@pytest.mark.parametrize("field,literal", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_installed_command_on_bad_manifests(base, tmp_path, field, literal):
    model, manifest, wav = base
    bundle = with_manifest(model, replace_field(manifest, field, literal), tmp_path / "b.onnx")
    for command in (["tokenize", bundle, wav], ["stream", bundle, "--input", wav], ["info", bundle]):
        result = run_cli(*command)
        err = result.stderr.decode()
        assert result.returncode == 1 and err.count("\n") == 1 and err.startswith("audiotok: error: "), err
        assert str(bundle) in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["negative-ids", "one-frame-too-many", "rank-1"])
def test_installed_command_on_bad_graphs(base, tmp_path, name):
    _, manifest, wav = base
    bundle = unit_graph(tmp_path / "b.onnx", manifest, **GRAPHS[name][0])
    result = run_cli("stream", bundle, "--input", wav)
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1 and GRAPHS[name][1] in err, err
    assert result.stdout == b""  # no garbage ids were printed before the error
