"""The bundle manifest: everything the runtime needs, stored inside the ONNX file.

A unit vocabulary is only meaningful together with the encoder, layer and normalization it was
fitted on. The exporter writes this manifest as JSON into the model's ``metadata_props`` under the
key ``audiotok``; the runtime reads it back into a frozen dataclass once, checks it against the
frame grid it implements, and never guesses a missing value.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from ..constants import (
    HOP_SAMPLES,
    MANIFEST_SCHEMA,
    RECEPTIVE_FIELD_SAMPLES,
    SAMPLE_RATE,
)
from ..errors import BundleError
from ..audio.preprocess import CHANNEL_MEAN, FEATURE_NORMS, FRAME_RULES
from .stream_entry import StreamEntry, StreamRule
from .json_rules import (AnyJson, Choice, ChoiceOrInteger, Integer, JsonObject, JsonRuleError, Rule, Text,
                         load_bounded_json, shown)

NORMALIZATIONS = ("none", "utterance")  # "utterance": zero mean, unit variance per graph input
PRECISIONS = ("fp32", "fp16", "int8")
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few KB; the limit is checked before parsing
MAX_K = 1 << 22  # units; the largest published vocabularies have tens of thousands
MAX_DIM = 1 << 16  # feature dimension
MAX_LAYER = 1024
MAX_CHANNEL_INDEX = 1023

# What each manifest field must hold, checked before the dataclass is built. A new field is one
# line here plus its dataclass field (with a default, so older bundles still load).
FIELD_RULES: dict[str, Rule] = {
    "encoder": Text(),
    "encoder_type": Text(max_length=64),
    "layer": Integer(0, MAX_LAYER),
    "k": Integer(2, MAX_K),  # export refuses fewer than 2 centroids
    "dim": Integer(1, MAX_DIM),
    "normalization": Choice(NORMALIZATIONS),
    "precision": Choice(PRECISIONS),
    "opset": Integer(1, 1000),
    "centroids_sha256": Text(hex_length=64),
    "audiotok_version": Text(max_length=64),
    "sample_rate": Integer(1, 1 << 20),
    "hop": Integer(1, 1 << 20),
    "receptive_field": Integer(1, 1 << 20),
    "schema": Integer(0, 1 << 20),
    "frame_rule": Choice(FRAME_RULES),
    "feature_norm": Choice(FEATURE_NORMS),
    "channel": ChoiceOrInteger((CHANNEL_MEAN,), 0, MAX_CHANNEL_INDEX),
    "licence": Text(optional=True),
    "provenance": JsonObject(),
    "agreement": JsonObject(),
    "stream": StreamRule(),
}


@dataclass(frozen=True)
class Manifest:
    """What a bundle says about itself. Field names are the JSON keys."""

    encoder: str  # hub id, local folder or "logmel"
    encoder_type: str  # "logmel", "hubert", "wav2vec2", "wavlm", "data2vec-audio", ...
    layer: int  # units come from hidden_states[layer]
    k: int  # number of units
    dim: int  # feature dimension at that layer
    normalization: str  # one of NORMALIZATIONS, applied inside the graph
    precision: str  # one of PRECISIONS
    opset: int
    centroids_sha256: str
    audiotok_version: str
    sample_rate: int = SAMPLE_RATE
    hop: int = HOP_SAMPLES
    receptive_field: int = RECEPTIVE_FIELD_SAMPLES
    schema: int = MANIFEST_SCHEMA
    # Processor options (schema 1 bundles without them read as audiotok's defaults). frame_rule "pad":
    # a partial last frame is zero-padded to a full one (audioTokenizer's rule); feature_norm "l2": the
    # graph scales features to unit length before the nearest centroid; channel: "mean" or an index.
    frame_rule: str = "floor"
    feature_norm: str = "none"
    channel: int | str = "mean"
    licence: str | None = None  # the encoder's licence where its model card states one
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, centroid source, training
    agreement: dict[str, Any] = field(default_factory=dict)  # measured at export time
    # The stream entry point (stream_entry.py); None in bundles without one (they stream by recomputing windows).
    stream: dict[str, Any] | None = None

    @property
    def stream_entry(self) -> StreamEntry | None:
        return None if self.stream is None else StreamEntry.from_dict(self.stream)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)  # readers refuse NaN

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "bundle") -> Manifest:
        """The manifest in ``text``, validated; a BundleError naming ``source`` otherwise."""
        try:
            data = load_bounded_json(text, max_bytes=MAX_MANIFEST_BYTES)
        except JsonRuleError as exc:
            raise BundleError(f"{source}: its audiotok manifest cannot be used: {exc}") from None
        if not isinstance(data, dict):
            raise BundleError(f"{source}: its audiotok manifest is not a JSON object")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "bundle") -> Manifest:
        """Check every known field against ``FIELD_RULES``, then build; unknown keys are ignored."""
        schema = data.get("schema")
        if type(schema) is not int or schema != MANIFEST_SCHEMA:
            raise BundleError(
                f"{source}: manifest schema {shown(schema)} is not supported by this audiotok "
                f"(it reads schema {MANIFEST_SCHEMA}); upgrade audiotok or re-export the bundle"
            )
        known = set(cls.__dataclass_fields__)
        missing = sorted(
            name for name, f in cls.__dataclass_fields__.items()
            if name not in data and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise BundleError(f"{source}: manifest lacks {', '.join(missing)}")
        for name in sorted(known & set(data)):
            try:
                FIELD_RULES.get(name, AnyJson()).check(name, data[name])
            except JsonRuleError as exc:
                raise BundleError(f"{source}: manifest field {exc}") from None
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.check(source)
        return manifest

    def check(self, source: str = "bundle") -> None:
        """Refuse a manifest whose frame grid or settings this runtime does not implement."""
        grid = (self.sample_rate, self.hop, self.receptive_field)
        if grid != (SAMPLE_RATE, HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES):
            raise BundleError(
                f"{source}: frame grid (rate {grid[0]}, hop {grid[1]}, field {grid[2]}) differs from "
                f"this runtime's ({SAMPLE_RATE}, {HOP_SAMPLES}, {RECEPTIVE_FIELD_SAMPLES})"
            )
        if self.normalization not in NORMALIZATIONS:
            raise BundleError(f"{source}: unknown normalization {self.normalization!r}")
        if self.precision not in PRECISIONS:
            raise BundleError(f"{source}: unknown precision {self.precision!r}")
