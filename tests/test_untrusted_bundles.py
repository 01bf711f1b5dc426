"""A bundle is checked before it is trusted: its manifest against a declared schema, its graph's declared
signature at load, and what the graph returns on every run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import error_line, run_cli
from hostile_bundles import manifest_of, replace_field, unit_graph

from audiotok.runtime.errors import BundleError
from audiotok.runtime.bundle.json_rules import JsonRuleError, load_bounded_json
from audiotok.runtime.bundle.manifest import FIELD_RULES, Manifest
from audiotok.runtime.tokenizer import Tokenizer, checked_units

VALID = dict(encoder="logmel", encoder_type="logmel", layer=0, k=16, dim=80, normalization="none", precision="fp32",
             opset=18, centroids_sha256="ab" * 32, audiotok_version="0.1.0")


def test_every_manifest_field_has_a_rule():
    """A field added to Manifest without a rule would be trusted as it comes: the table must cover it."""
    assert set(FIELD_RULES) == set(Manifest.__dataclass_fields__)


def test_a_manifest_survives_its_own_json():
    manifest = Manifest(**VALID, provenance={"training": {"frames": 12}}, agreement={"agreement": 0.99})
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("field,value,needle", [
    ("k", True, "'k' must be an integer"),
    ("k", 16.0, "'k' must be an integer"),
    ("k", 1, "'k' must be an integer in 2.."),
    ("k", 1 << 40, "'k' must be an integer"),
    ("layer", -1, "'layer' must be an integer"),
    ("layer", "6", "'layer' must be an integer"),
    ("dim", None, "'dim' must be an integer"),
    ("encoder", 5, "'encoder' must be a string"),
    ("encoder", "x" * 5000, "'encoder' must be a string of at most"),
    ("licence", ["MIT"], "'licence' must be a string or null"),
    ("precision", "fp8", "'precision' must be one of fp32, fp16, int8"),
    ("centroids_sha256", "not-hex", "'centroids_sha256' must be 64 lowercase hex digits"),
    ("provenance", [], "'provenance' must be a JSON object"),
    ("agreement", "high", "'agreement' must be a JSON object"),
    ("provenance", {"a": json.loads("[" * 34 + "]" * 34)}, "nested deeper than 32"),
    ("schema", True, "schema True is not supported"),
])
def test_each_field_is_checked_before_use(field, value, needle):
    with pytest.raises(BundleError, match="^units.onnx: ") as info:
        Manifest.from_dict({**VALID, "schema": 1, field: value}, source="units.onnx")
    assert needle in str(info.value)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    manifest = Manifest.from_dict({**VALID, "schema": 1, "processor": {"chunk": 3}}, source="b")
    assert manifest.k == 16 and not hasattr(manifest, "processor")


@pytest.mark.parametrize("text,needle", [
    ('{"k": NaN}', "NaN is not a number JSON allows"),
    ('{"k": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"k": 1e400}', "out of range"),
    ('{"k": ' + "9" * 5000 + "}", "5000 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b'{"k": "\xff"}', "not UTF-8"),
    ('{"k": 1', "not valid JSON"),
])
def test_json_that_plain_json_loads_would_take_or_crash_on(text, needle):
    with pytest.raises(JsonRuleError, match=needle):
        load_bounded_json(text, max_bytes=1 << 20)


def test_json_size_is_bounded_before_parsing():
    with pytest.raises(JsonRuleError, match="more than the 100 allowed"):
        load_bounded_json('{"pad": "' + "x" * 200 + '"}', max_bytes=100)


def test_manifest_too_large_is_refused():
    text = json.dumps({**VALID, "schema": 1, "agreement": {"pad": "x" * (2 << 20)}})
    with pytest.raises(BundleError, match="b.onnx: its audiotok manifest cannot be used: it is .* bytes"):
        Manifest.from_json(text, source="b.onnx")


@pytest.mark.parametrize("output,needle", [
    (np.zeros((1, 3), np.float32), "float32, not integer unit ids"),
    (np.zeros(3, np.int64), "shaped [3]"),
    (np.zeros((1, 1, 3), np.int64), "shaped [1, 1, 3]"),
    (np.zeros((2, 3), np.int64), "shaped [2, 3]"),
    (np.zeros((1, 4), np.int64), "shaped [1, 4] for 1040 samples; a bundle gives [1, 3]"),
    (np.array([[0, -1, 2]]), "unit ids in -1..2, outside its manifest's 0..15"),
    (np.array([[0, 16, 2]]), "unit ids in 0..16, outside its manifest's 0..15"),
])
def test_what_a_graph_returns_is_checked(output, needle):
    with pytest.raises(BundleError, match="^b.onnx: ") as info:
        checked_units(output, 1040, 16, "b.onnx")
    assert needle in str(info.value)


def test_good_output_comes_back_as_int64_ids():
    units = checked_units(np.array([[0, 15, 7]], np.int32), 1040, 16, "b.onnx")
    assert units.dtype == np.int64 and units.tolist() == [0, 15, 7]


def test_the_library_raises_bundle_errors_too(logmel_bundle, tmp_path):
    import onnx

    manifest = manifest_of(onnx.load(str(logmel_bundle)))
    tokenizer = Tokenizer(unit_graph(tmp_path / "b.onnx", manifest, value=99))
    with pytest.raises(BundleError, match="unit ids in 99..99, outside its manifest's 0..15"):
        tokenizer.tokenize(np.zeros(16_000, np.float32), sample_rate=16_000)
    with pytest.raises(BundleError, match="'k' must be an integer"):
        Tokenizer(unit_graph(tmp_path / "c.onnx", replace_field(manifest, "k", "16.5")))


def test_a_bundle_error_inside_a_ray_worker_reaches_the_user_as_its_own_line():
    """Ray wraps a worker's exception (as a subclass of it whose text is the remote traceback); the
    engine unwraps it so `--engine ray` prints the same one line as a local run."""
    from ray.exceptions import RayTaskError

    from audiotok.runtime.corpus.ray_engine import _audiotok_cause

    wrapped = RayTaskError("map", "Traceback (most recent call last): ...", BundleError("b.onnx: bad ids"))
    found = _audiotok_cause(wrapped.as_instanceof_cause())
    assert type(found) is BundleError and str(found) == "b.onnx: bad ids"
    assert _audiotok_cause(RuntimeError("a lost node")) is None


# --- data kept outside the bundle ------------------------------------------------------------------------------

def _externalise(tensor, location: str) -> None:
    """Make ``tensor`` keep its bytes in ``location`` (beside the model), as ONNX external data does."""
    from onnx import TensorProto

    nbytes = len(tensor.raw_data) or 4 * len(tensor.float_data) or 8 * len(tensor.int64_data)
    for field in ("raw_data", "float_data", "int64_data", "int32_data"):
        tensor.ClearField(field)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _in_initializer(model, location):
    _externalise(max(model.graph.initializer, key=lambda t: len(t.raw_data)), location)


def _in_constant_of_a_subgraph(model, location):
    """A Constant node's tensor inside an If branch: found however deep it sits."""
    import onnx.helper as oh
    from onnx import TensorProto

    def branch(name: str, external: bool):
        value = oh.make_tensor(name, TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
        if external:
            _externalise(value, location)
        return oh.make_graph([oh.make_node("Constant", [], ["c"], value=value)], name, [],
                             [oh.make_tensor_value_info("c", TensorProto.FLOAT, [4])])

    model.graph.initializer.append(oh.make_tensor("flag", TensorProto.BOOL, [], [True]))
    model.graph.node.append(oh.make_node("If", ["flag"], ["unused"], then_branch=branch("plain", False),
                                         else_branch=branch("hidden", True)))


@pytest.mark.parametrize("place", [_in_initializer, _in_constant_of_a_subgraph])
@pytest.mark.parametrize("neighbour", ["fifo", "file"])
def test_a_bundle_that_reads_files_beside_it_is_refused(place, neighbour, logmel_bundle, tmp_path):
    """onnxruntime would read a tensor's bytes from a file beside the bundle: a FIFO there hangs the load,
    a file there becomes weights. A bundle is one file, so any tensor kept outside it is refused first."""
    import onnx
    import soundfile as sf

    model = onnx.load(str(logmel_bundle))
    place(model, "weights.bin")
    hidden = "hidden" if place is _in_constant_of_a_subgraph else next(
        t.name for t in model.graph.initializer if t.external_data)
    bundle = tmp_path / "b.onnx"
    onnx.save(model, str(bundle))
    if neighbour == "fifo":
        os.mkfifo(tmp_path / "weights.bin")
    else:
        (tmp_path / "weights.bin").write_bytes(b"\0" * (1 << 20))
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(16_000, np.float32), 16_000)
    expected = (f"{bundle}: not a self-contained bundle: 1 tensor(s) stored outside the file ({hidden} -> "
                "'weights.bin'); an audiotok bundle is one file, and nothing beside it is read")
    for command in (["tokenize", bundle, audio], ["info", bundle]):
        assert error_line(run_cli(*command)) == f"audiotok: error: {expected}"
    with pytest.raises(BundleError) as info:
        Tokenizer(bundle)
    assert str(info.value) == expected


def test_the_check_reads_past_protobuf_groups_rather_than_giving_up(logmel_bundle, tmp_path):
    """An unknown field in the deprecated group encoding, placed before the graph, is valid protobuf:
    the check must read past it, not give up and let the external data through to onnxruntime."""
    import onnx

    from audiotok.runtime.bundle.onnx_external import describe_external_data

    model = onnx.load(str(logmel_bundle))
    _in_initializer(model, "weights.bin")
    group = bytes([0x9B, 0x06, 0x08, 0x01, 0x9C, 0x06])  # field 99: start group, {field 1 = 1}, end group
    bundle = tmp_path / "g.onnx"
    bundle.write_bytes(group + model.SerializeToString())
    assert onnx.load(str(bundle), load_external_data=False).graph.initializer  # protobuf itself reads it
    assert describe_external_data(bundle).startswith("1 tensor(s) stored outside the file")
    assert describe_external_data(logmel_bundle) is None
