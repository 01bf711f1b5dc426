"""Bundles from strangers: seeded mutations of a valid bundle (its manifest, its bytes, its graph's
output). Each case knows its one right outcome: an oracle written here (``ACCEPTS``, from docs/bundle.md
and docs/errors.md) says whether a manifest value is valid; a valid bundle must tokenize to the
unmutated bundle's units, an invalid one must be refused with exactly one `audiotok: error:` line
naming the bundle and the field, within a time limit, never a traceback. Most cases run in this process (seconds for hundreds); a few through real
subprocesses check the same of the installed command."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import run_cli, write_wav
from hostile_bundles import (assert_one_error_or_success, manifest_of, replace_field, run_in_process, unit_graph,
                             with_manifest)

from audiotok.runtime import Tokenizer
from audiotok.runtime.constants import frame_count

SEED = 13
FIELDS = ("encoder", "encoder_type", "layer", "k", "dim", "normalization", "precision", "opset", "centroids_sha256",
          "audiotok_version", "sample_rate", "hop", "receptive_field", "schema", "licence", "provenance", "agreement",
          "frame_rule", "feature_norm", "channel", "stream")
REQUIRED = FIELDS[:10]
DEEP = "[" * 50_000 + "]" * 50_000
# Raw JSON literals no field accepts, each with what the refusal must say. NaN, Infinity and 1e400 parse
# to non-finite floats in plain json.loads and 10**50 is no count anyone meant: refused before any field
# rule, so the message names the JSON problem; a nest of 37 levels fails every field's own rule.
ALWAYS_BAD = {"NaN": "is not a number JSON allows", "Infinity": "is not a number JSON allows",
              "-Infinity": "is not a number JSON allows", "1e400": "out of range", "true": None,
              "9" * 50: "an integer of 50 digits", DEEP: "nested too deeply",
              json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}): None}
SOMETIMES_BAD = ["null", "false", '"7"', "1.5", "-1", "0", "2", "4294967296", "[]", "{}", '"' + "x" * 10_000 + '"',
                 '"logmel"', '"none"', '"fp32"', '{"nested": {"NaN": "text"}}']
COMMANDS = ("tokenize", "info", "stream", "centroids", "plot", "verify")


# --- the oracle: what each manifest field accepts, written here from docs/bundle.md and docs/errors.md, not read
# from runtime/bundle/manifest.py, so that deleting or loosening a rule there fails these cases ----------------

def _integer(low: int, high: int):
    return lambda v: type(v) is int and low <= v <= high  # JSON true is not 1


def _text(longest: int, optional: bool = False):
    return lambda v: (v is None and optional) or (isinstance(v, str) and len(v) <= longest)


def _depth(value, level: int = 1) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max([_depth(c, level + 1) for c in children], default=level)


ACCEPTS = {
    "encoder": _text(4096), "encoder_type": _text(64), "layer": _integer(0, 1024), "k": _integer(2, 1 << 22),
    "dim": _integer(1, 1 << 16), "normalization": lambda v: v in ("none", "utterance"),
    "precision": lambda v: v in ("fp32", "fp16", "int8"), "opset": _integer(1, 1000),
    "centroids_sha256": lambda v: isinstance(v, str) and len(v) == 64 and not v.strip("0123456789abcdef"),
    "audiotok_version": _text(64), "sample_rate": _integer(1, 1 << 20), "hop": _integer(1, 1 << 20),
    "receptive_field": _integer(1, 1 << 20), "schema": lambda v: type(v) is int and v == 1,
    "licence": _text(4096, optional=True), "provenance": lambda v: isinstance(v, dict) and _depth(v) <= 32,
    "agreement": lambda v: isinstance(v, dict) and _depth(v) <= 32,
    "frame_rule": lambda v: v in ("floor", "pad"), "feature_norm": lambda v: v in ("none", "l2"),
    "channel": lambda v: v == "mean" or (type(v) is int and 0 <= v <= 1023),
    "stream": lambda v: v is None or _stream_entry(v),
}
STREAM_INPUTS = ["stream_cache", "stream_on", "stream_skip", "stream_cnn_stats", "stream_wave_stats"]
STREAM_OUTPUTS = ["stream_frames", "stream_cnn_stats_out", "stream_wave_stats_out"]
KV_INPUTS, KV_OUTPUTS = ["stream_context", "stream_kv"], ["stream_kv_out"]
KV_RANGES = {"layers": (1, 1024), "dim": (1, 1 << 16), "reach": (0, 4096)}


def _kv_entry(v) -> bool:
    """README's attention cache entry: three integers in their ranges."""
    return (isinstance(v, dict) and set(v) == set(KV_RANGES)
            and all(type(v[key]) is int and low <= v[key] <= high for key, (low, high) in KV_RANGES.items()))


def _stream_entry(v) -> bool:
    """README's stream entry: its kind, two channel counts in 1..65536, the input and output names, and
    optionally an attention cache (kv: null or an entry; with one, its inputs and output are named too)."""
    if not isinstance(v, dict) or set(v) - {"kv"} != {"kind", "frame_dim", "stats_channels", "inputs", "outputs"}:
        return False
    kv = v.get("kv")
    if kv is not None and not _kv_entry(kv):
        return False
    inputs, outputs = (STREAM_INPUTS + KV_INPUTS, STREAM_OUTPUTS + KV_OUTPUTS) if kv is not None else (STREAM_INPUTS,
                                                                                                      STREAM_OUTPUTS)
    return (v["kind"] in ("exact", "running-stats")
            and all(type(v[key]) is int and 1 <= v[key] <= 1 << 16 for key in ("frame_dim", "stats_channels"))
            and v["inputs"] == inputs and v["outputs"] == outputs)


GRID = {"sample_rate": 16_000, "hop": 320, "receptive_field": 400}  # the one frame grid the runtime implements


@dataclass(frozen=True)
class Expected:
    """What must happen to a bundle whose manifest has ``field`` set to ``literal``."""

    valid: bool  # the manifest passes every rule: tokenize must give the unmutated bundle's units
    needle: str | None = None  # when refused: the text the one error line must hold (the field, quoted)
    blames_audio: bool = False  # the refusal names the audio file, not the bundle


def expected(field: str, literal: str) -> Expected:
    if literal in ALWAYS_BAD and ALWAYS_BAD[literal] is not None:
        return Expected(False, ALWAYS_BAD[literal])
    value = json.loads(literal)
    if field == "schema":  # checked first, with its own message: which schema this runtime reads
        return Expected(True) if ACCEPTS["schema"](value) else Expected(False, "manifest schema")
    if not ACCEPTS[field](value):
        return Expected(False, f"manifest field '{field}'")
    if field in GRID and value != GRID[field]:
        return Expected(False, "frame grid")
    if field == "channel" and value != "mean" and value >= 1:  # the test's wav is mono: only channel 0 exists
        return Expected(False, f"has 1 channel, so --channel {value} is beyond them", blames_audio=True)
    return Expected(True)


def _manifest_cases() -> list[tuple[str, str, str]]:
    """(id, field, literal): every field with every hostile literal."""
    literals = list(ALWAYS_BAD) + SOMETIMES_BAD
    return [(f"{field}-{i}", field, literal) for field in FIELDS for i, literal in enumerate(literals)]


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


@dataclass(frozen=True)
class Base:
    model: onnx.ModelProto
    manifest: str
    wav: Path
    units: np.ndarray  # the unmutated bundle's units for ``wav``


@pytest.fixture(scope="module")
def base(logmel_bundle, speech_16k, tmp_path_factory) -> Base:
    """The valid bundle as an onnx model, its manifest text, 1.2 s of speech and the bundle's units for it."""
    model = onnx.load(str(logmel_bundle))
    wav = write_wav(tmp_path_factory.mktemp("fuzz") / "speech.wav", speech_16k[16_000:35_200])
    units = Tokenizer(logmel_bundle).tokenize(wav)
    assert len(units) == frame_count(19_200) and len(np.unique(units)) > 1
    return Base(model, manifest_of(model), wav, units)


def printed_units(out: str) -> np.ndarray:
    """The ids of `audiotok tokenize`'s one txt line (``PATH<TAB>ids``)."""
    (line,) = out.splitlines()
    return np.array(line.split("\t")[1].split(), dtype=np.int64)


def _refused(capsys, command: list, bundle, needle: str) -> str:
    """The command fails with exactly one error line naming ``bundle`` and holding ``needle``."""
    code, _, err = run_in_process(capsys, *command)
    line = assert_one_error_or_success(code, err)
    assert line is not None, f"{command} succeeded; expected a refusal holding {needle!r}"
    assert str(bundle) in line and needle in line, line
    return line


def _tokenizes(capsys, bundle, wav, units: np.ndarray) -> None:
    """`audiotok tokenize` succeeds and prints exactly ``units``."""
    code, out, err = run_in_process(capsys, "tokenize", bundle, wav)
    assert assert_one_error_or_success(code, err) is None and err == "", err
    assert np.array_equal(printed_units(out), units)


@pytest.mark.parametrize("case", _manifest_cases(), ids=lambda c: c[0])
def test_manifest_values(base, tmp_path, capsys, case):
    """An invalid value is refused by every command, naming the field (or the JSON problem); a valid one
    tokenizes to the unmutated bundle's units, unless k then excludes an id the graph emits."""
    name, field, literal = case
    bundle = with_manifest(base.model, replace_field(base.manifest, field, literal), tmp_path / "b.onnx")
    outcome = expected(field, literal)
    if outcome.valid and field == "k" and json.loads(literal) <= base.units.max():
        outcome = Expected(False, "outside")  # the graph's ids are checked against the manifest's k
    if outcome.valid:
        _tokenizes(capsys, bundle, base.wav, base.units)
        return
    kind = COMMANDS[sum(map(ord, name)) % len(COMMANDS)]  # each command gets a share, the same every run
    if (outcome.needle == "outside" or outcome.blames_audio) and kind in ("info", "centroids"):
        kind = "tokenize"  # info and centroids neither read audio nor run the graph
    _refused(capsys, _command(kind, bundle, base.wav, tmp_path), base.wav if outcome.blames_audio else bundle,
             outcome.needle)


# Values whose right answer is known: each must be refused naming its field, whatever the seeded choice above covers.
NAMED_REFUSALS = [("k", "-1"), ("k", "1.5"), ("hop", "-1"), ("sample_rate", "0"), ("layer", "false")]


@pytest.mark.parametrize("field,literal", NAMED_REFUSALS)
def test_named_refusals(base, tmp_path, capsys, field, literal):
    assert expected(field, literal) == Expected(False, f"manifest field '{field}'")
    bundle = with_manifest(base.model, replace_field(base.manifest, field, literal), tmp_path / "b.onnx")
    for kind in COMMANDS:
        _refused(capsys, _command(kind, bundle, base.wav, tmp_path), bundle, f"manifest field '{field}'")


def test_the_unmutated_manifest_is_valid(base, tmp_path, capsys):
    """The oracle agrees with the bundle export wrote: every field of it passes ACCEPTS."""
    data = json.loads(base.manifest)
    assert all(ACCEPTS[field](data[field]) for field in FIELDS)
    _tokenizes(capsys, with_manifest(base.model, base.manifest, tmp_path / "b.onnx"), base.wav, base.units)


@pytest.mark.parametrize("field", FIELDS)
def test_missing_fields(base, tmp_path, capsys, field):
    """A required field missing is refused naming it; an optional one reads as its default, except the
    schema, without which nothing says how to read the rest."""
    data = json.loads(base.manifest)
    del data[field]
    bundle = with_manifest(base.model, json.dumps(data), tmp_path / "b.onnx")
    if field == "schema":
        _refused(capsys, ["tokenize", bundle, base.wav], bundle, "manifest schema None is not supported")
    elif field in REQUIRED:
        _refused(capsys, ["tokenize", bundle, base.wav], bundle, f"lacks {field}")
    else:
        _tokenizes(capsys, bundle, base.wav, base.units)


def _structural_cases() -> list[tuple[str, object, str | None]]:
    """(id, argument, what the refusal says; None: valid): truncations, non-objects, nesting, size, unknown keys."""
    rng = random.Random(SEED + 1)
    cases = [("not-object-" + str(i), text, "not a JSON object") for i, text in enumerate(["[]", "1", "null", '"x"'])]
    cases += [("not-json-" + str(i), text, "not valid JSON") for i, text in enumerate(["", " ", "{"])]
    # provenance {"a": [[...]]} nested `depth` levels; free-form objects may nest 32 levels, and past
    # Python's own recursion limit the JSON reader refuses the text before any field is read.
    cases += [("deep-" + str(depth), depth, None if depth <= 32 else "'provenance' is nested deeper")
              for depth in (5, 20, 31, 32, 33, 200)]
    cases += [("deep-100000", 100_000, "nested too deeply")]
    # every strict prefix of a JSON object is invalid JSON
    cases += [("truncated-" + str(i), cut, "not valid JSON") for i, cut in enumerate(sorted(rng.sample(range(1, 1200), 12)))]
    cases += [("schema-" + literal, literal, "manifest schema") for literal in ("true", '"1"', "1.0", "2", "0", "null")]
    cases += [("huge", 2 << 20, "more than the 1048576 allowed"), ("unknown-key", "unknown", None),
              ("invalid-utf8-escape", "escape", "not valid JSON")]
    return cases


def _structural_text(manifest: str, case) -> str:
    name, arg, _ = case
    if name.startswith("not-"):
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
    bundle = with_manifest(base.model, _structural_text(base.manifest, case), tmp_path / "b.onnx")
    if case[2] is None:
        _tokenizes(capsys, bundle, base.wav, base.units)
    else:
        _refused(capsys, ["tokenize", bundle, base.wav], bundle, case[2])


# A stream entry (manifest "stream") that looks right but is not what this runtime implements, or that the
# graph does not have: each refused with one line naming it, before any audio is read.
KV_ON = {"inputs": STREAM_INPUTS + KV_INPUTS, "outputs": STREAM_OUTPUTS + KV_OUTPUTS}
STREAM_CASES = {
    "kind": ({"kind": "approximate"}, "manifest field 'stream': kind must be"),
    "kind-list": ({"kind": ["exact"]}, "manifest field 'stream': kind must be"),
    "frame-dim-zero": ({"frame_dim": 0}, "manifest field 'stream': frame_dim must be"),
    "frame-dim-huge": ({"frame_dim": 1 << 40}, "manifest field 'stream': frame_dim must be"),
    "stats-true": ({"stats_channels": True}, "manifest field 'stream': stats_channels must be"),
    "stats-float": ({"stats_channels": 1.0}, "manifest field 'stream': stats_channels must be"),
    "input-renamed": ({"inputs": STREAM_INPUTS[:-1] + ["other"]}, "manifest field 'stream': inputs must be"),
    "outputs-missing": ({"outputs": []}, "manifest field 'stream': outputs must be"),
    "extra-key": ({"cache_frames": 10}, "manifest field 'stream' must have exactly the keys"),
    "graph-without-entry": (None, "has a stream entry, but the graph has no optional input 'stream_cache'"),
    # the attention cache: a well-formed entry on a graph without its inputs, and each rule of its own
    "kv-graph-without-it": (dict(KV_ON, kv={"layers": 2, "dim": 32, "reach": 8}),
                            "has a stream entry, but the graph has no optional input 'stream_context'"),
    "kv-number": (dict(KV_ON, kv=5), "manifest field 'stream': kv must be a JSON object or null"),
    "kv-layers-zero": (dict(KV_ON, kv={"layers": 0, "dim": 32, "reach": 8}),
                       "manifest field 'stream': kv.layers must be an integer in 1..1024"),
    "kv-dim-float": (dict(KV_ON, kv={"layers": 2, "dim": 32.0, "reach": 8}),
                     "manifest field 'stream': kv.dim must be an integer in 1..65536"),
    "kv-reach-negative": (dict(KV_ON, kv={"layers": 2, "dim": 32, "reach": -1}),
                          "manifest field 'stream': kv.reach must be an integer in 0..4096"),
    "kv-reach-bool": (dict(KV_ON, kv={"layers": 2, "dim": 32, "reach": True}),
                      "manifest field 'stream': kv.reach must be an integer in 0..4096"),
    "kv-extra-key": (dict(KV_ON, kv={"layers": 2, "dim": 32, "reach": 8, "heads": 2}),
                     "manifest field 'stream': kv must have exactly the keys dim, layers, reach"),
    "kv-without-its-inputs": ({"kv": {"layers": 2, "dim": 32, "reach": 8}}, "manifest field 'stream': inputs must be"),
    "kv-inputs-without-kv": (dict(KV_ON, kv=None), "manifest field 'stream': inputs must be"),
}


@pytest.mark.parametrize("name", list(STREAM_CASES))
def test_stream_entries(base, tmp_path, capsys, name):
    change, needle = STREAM_CASES[name]
    entry = json.loads(base.manifest)["stream"]
    # the graph cases are well-formed entries (the manifest rule accepts them) on graphs without their inputs
    assert ACCEPTS["stream"](entry) and (change is None
                                         or ACCEPTS["stream"]({**entry, **change}) is (name == "kv-graph-without-it"))
    if change is None:  # a valid entry on a graph without the stream inputs (a handmade unit graph)
        bundle = unit_graph(tmp_path / "b.onnx", base.manifest)
        text = replace_field(manifest_of(onnx.load(str(bundle))), "stream", json.dumps(entry))
        bundle = with_manifest(onnx.load(str(bundle)), text, bundle)
    else:
        bundle = with_manifest(base.model, replace_field(base.manifest, "stream", json.dumps({**entry, **change})),
                               tmp_path / "b.onnx")
    for kind in ("stream", "tokenize"):
        _refused(capsys, _command(kind, bundle, base.wav, tmp_path), bundle, needle)


def test_a_stream_entry_with_kv_null_has_no_attention_cache(base, tmp_path):
    """``"kv": null`` is the entry without an attention cache (the key is optional): accepted, and the bundle
    streams and tokenizes as without it."""
    from audiotok.runtime import Tokenizer

    entry = json.loads(base.manifest)["stream"]
    assert "kv" not in entry and ACCEPTS["stream"]({**entry, "kv": None})
    bundle = with_manifest(base.model, replace_field(base.manifest, "stream", json.dumps({**entry, "kv": None})),
                           tmp_path / "b.onnx")
    tokenizer = Tokenizer(bundle)
    assert tokenizer.manifest.stream_entry.kv is None and not tokenizer.cached_encoder().uses_kv
    assert np.array_equal(tokenizer.tokenize(base.wav), base.units)


def _byte_cases() -> list[tuple[str, str, int]]:
    cases = [(f"flip-{seed}", "flip", seed) for seed in range(40)]
    return cases + [(f"cut-{seed}", "cut", seed) for seed in range(20)]


def _outcome(capsys, command: list, bundle) -> tuple[int, str]:
    """(exit status, stdout) of one in-process run; a failure is one error line naming ``bundle``."""
    code, out, err = run_in_process(capsys, *command)
    line = assert_one_error_or_success(code, err)
    assert line is None or str(bundle) in line, line
    return code, out if line is None else line


def _cut_refusal(data: bytes) -> str:
    """What refusing a bundle cut to ``data`` must say. protobuf serialises a model's fields in order
    (graph, opset, then the manifest in metadata_props): a cut inside a field leaves bytes protobuf
    cannot parse, a cut before the opset ends leaves no graph or no opset; only a cut exactly at the
    manifest's start leaves a whole ONNX model without a manifest."""
    try:
        model = onnx.load_from_string(bytes(data))
        whole = model.HasField("graph") and len(model.opset_import) > 0
    except Exception:  # noqa: BLE001 -- protobuf's DecodeError, or onnx's own
        whole = False
    return "an ONNX model, but not an audiotok bundle" if whole else "not a valid ONNX model, or a truncated one"


@pytest.mark.parametrize("case", _byte_cases(), ids=lambda c: c[0])
def test_bundle_bytes(logmel_bundle, base, tmp_path, capsys, case):
    """A cut bundle is refused, saying why. A flipped byte may land in a weight (a valid graph with other numbers),
    in a name or a length (a graph onnx cannot read), or in the manifest: which one depends on where
    protobuf put each field, so the right answer is not known here; the test asserts the answer is the
    same both times the same bytes are read, units included."""
    _, mode, seed = case
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
    command = _command(kind, bundle, base.wav, tmp_path)
    first = _outcome(capsys, command, bundle)
    if mode == "cut":
        assert first[0] != 0, f"a bundle cut to {len(data)} bytes was read"
        assert first[1].startswith(f"audiotok: error: {bundle}: {_cut_refusal(data)}"), first[1]
        return
    assert _outcome(capsys, command, bundle) == first


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
    """A graph that keeps the bundle contract runs, its ids (all 0) printed as they are; one that breaks
    it is refused, blaming the bundle, with nothing recorded."""
    options, needle = GRAPHS[name]
    wav = base.wav
    bundle = unit_graph(tmp_path / f"{name}.onnx", base.manifest, **options)
    out = tmp_path / "units.jsonl"
    command = (["tokenize", bundle, wav, wav.parent, "--format", "jsonl", "-o", out] if kind == "corpus"
               else _command(kind, bundle, wav, tmp_path))
    if needle is None:
        code, printed, err = run_in_process(capsys, *command)
        assert code == 0 and assert_one_error_or_success(code, err) is None, err
        zeros = [0] * frame_count(19_200)
        if kind == "tokenize":
            assert printed_units(printed).tolist() == zeros
        elif kind == "stream":
            assert [int(u) for u in printed.split()] == zeros
        elif kind == "corpus":
            assert [json.loads(r)["units"] for r in out.read_text().splitlines()] == [zeros]
        else:
            assert (tmp_path / "units.png").stat().st_size > 0
        return
    line = _refused(capsys, command, bundle, needle)
    assert str(wav) not in line  # the bundle is blamed, not the audio
    if kind == "corpus":  # the run stops; no file is recorded as done or as failed
        assert not out.exists() or out.read_text() == ""
        assert not (tmp_path / "units.errors.jsonl").exists()


SUBPROCESS_CASES = [("k", "NaN"), ("dim", '"80"'), ("provenance", "[" * 100_000 + "]" * 100_000), ("layer", "true")]


@pytest.mark.parametrize("field,literal", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_installed_command_on_bad_manifests(base, tmp_path, field, literal):
    wav = base.wav
    bundle = with_manifest(base.model, replace_field(base.manifest, field, literal), tmp_path / "b.onnx")
    needle = {"k": "is not a number JSON allows", "dim": "manifest field 'dim'",
              "provenance": "nested too deeply", "layer": "manifest field 'layer'"}[field]
    for command in (["tokenize", bundle, wav], ["stream", bundle, "--input", wav], ["info", bundle]):
        result = run_cli(*command)
        err = result.stderr.decode()
        assert result.returncode == 1 and err.count("\n") == 1 and err.startswith("audiotok: error: "), err
        assert str(bundle) in err and needle in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["negative-ids", "one-frame-too-many", "rank-1"])
def test_installed_command_on_bad_graphs(base, tmp_path, name):
    bundle = unit_graph(tmp_path / "b.onnx", base.manifest, **GRAPHS[name][0])
    result = run_cli("stream", bundle, "--input", base.wav)
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1 and GRAPHS[name][1] in err, err
    assert result.stdout == b""  # no garbage ids were printed before the error
