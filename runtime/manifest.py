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

from .constants import (
    HOP_SAMPLES,
    MANIFEST_SCHEMA,
    RECEPTIVE_FIELD_SAMPLES,
    SAMPLE_RATE,
)
from .errors import BundleError

NORMALIZATIONS = ("none", "utterance")  # "utterance": zero mean, unit variance per graph input
PRECISIONS = ("fp32", "fp16", "int8")


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
    licence: str | None = None  # the encoder's licence where its model card states one
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, centroid source, training
    agreement: dict[str, Any] = field(default_factory=dict)  # measured at export time

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "bundle") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{source}: its audiotok manifest is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise BundleError(f"{source}: its audiotok manifest is not a JSON object")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "bundle") -> Manifest:
        schema = data.get("schema")
        if schema != MANIFEST_SCHEMA:
            raise BundleError(
                f"{source}: manifest schema {schema!r} is not supported by this audiotok "
                f"(it reads schema {MANIFEST_SCHEMA}); upgrade audiotok or re-export the bundle"
            )
        known = set(cls.__dataclass_fields__)
        missing = sorted(
            name for name, f in cls.__dataclass_fields__.items()
            if name not in data and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise BundleError(f"{source}: manifest lacks {', '.join(missing)}")
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
        if self.k < 1 or self.dim < 1 or self.layer < 0:
            raise BundleError(f"{source}: manifest has k={self.k}, dim={self.dim}, layer={self.layer}")
