"""A bundle is checked before it is trusted: its manifest against a declared schema, its graph's declared
signature at load, and what the graph returns on every run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_bundles import manifest_of, replace_field, unit_graph

from audiotok.runtime.errors import BundleError
from audiotok.runtime.json_rules import JsonRuleError, load_bounded_json
from audiotok.runtime.manifest import FIELD_RULES, Manifest
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
