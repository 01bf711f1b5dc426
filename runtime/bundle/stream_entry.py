"""The bundle's stream entry point: what its manifest says about it, checked like every other field.

A bundle exported by this audiotok has, beside ``waveform`` -> ``units``, optional inputs and extra
outputs that let a stream feed only new samples: the graph computes their CNN frames, and runs the
transformer on cached frames followed by those. The optional inputs are graph inputs with default
initializers that give the offline graph exactly, so the offline call never passes them (and old
runtimes never see them); the manifest's ``stream`` entry names them and says how exact the path is:

* ``"exact"``: each CNN frame is a function of its own 400 samples (logmel; layer-norm CNNs without
  waveform normalization), so cached frames are the frames offline tokenization computes;
* ``"running-stats"``: the encoder normalises over its input (a group norm after the first
  convolution, or ``do_normalize``'s waveform statistics); in a stream those statistics are taken
  over everything heard so far (per-channel count, sum and sum of squares, carried in float64 from
  call to call) instead of over one window.

Inputs besides ``waveform`` (which in a stream call holds the samples of the new frames, from the
first new frame's first sample; at finish, to the input's end). Names are fixed here; the manifest
must list exactly these:

* ``stream_cache`` f32 ``[1, frames, frame_dim]``: CNN frames cached from earlier calls, the window's
  frames before the new ones (default ``[1, 0, frame_dim]``);
* ``stream_on`` bool ``[]``: use the running statistics (default false: the input's own, as offline);
* ``stream_skip`` i64 ``[]``: samples at the start of ``stream_waveform`` whose statistics are
  already counted (the overlap with the previous call);
* ``stream_cnn_stats`` f64 ``[3, stats_channels]`` and ``stream_wave_stats`` f64 ``[3, 1]``: count,
  sum and sum of squares so far (zeros at the start).

Outputs besides ``units`` (one per cached + new frame): ``stream_frames`` (the new CNN frames to
cache) and the updated statistics ``stream_cnn_stats_out``, ``stream_wave_stats_out``.

With a ``kv`` entry (transformers encoders whose attention and positional convolution the exporter
can split; not WavLM) the transformer need not rerun on the window's left context: two more inputs

* ``stream_context`` f32 ``[1, frames, frame_dim]``: CNN frames before ``stream_cache`` that only the
  positional convolution reads (at most ``kv.reach`` of them matter); no unit is computed for them;
* ``stream_kv`` f32 ``[layers, 2, frames, dim]``: each layer's attention keys and values of earlier
  frames, which the new frames attend to besides themselves (default: none, so the defaults still
  give the offline graph);

and one more output, ``stream_kv_out`` ``[layers, 2, frames, dim]``: the keys and values of every
frame the call computed a unit for (``stream_cache`` + new), which a stream keeps for the chunk's
frames. A cached frame's keys and values are those of the window that emitted it (its right context
was that window's lookahead): an approximation, measured, that ``--no-kv-cache`` turns off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .json_rules import JsonRuleError, shown

STREAM_KINDS = ("exact", "running-stats")
CACHE, ON, SKIP, CNN_STATS, WAVE_STATS = ("stream_cache", "stream_on", "stream_skip", "stream_cnn_stats",
                                          "stream_wave_stats")
FRAMES, CNN_STATS_OUT, WAVE_STATS_OUT = ("stream_frames", "stream_cnn_stats_out", "stream_wave_stats_out")
CONTEXT, KV, KV_OUT = "stream_context", "stream_kv", "stream_kv_out"
STREAM_INPUTS = (CACHE, ON, SKIP, CNN_STATS, WAVE_STATS)
STREAM_OUTPUTS = (FRAMES, CNN_STATS_OUT, WAVE_STATS_OUT)
KV_INPUTS, KV_OUTPUTS = (CONTEXT, KV), (KV_OUT,)
STATS_ROWS = 3  # count, sum, sum of squares
MAX_CHANNELS = 1 << 16
MAX_KV_LAYERS = 1024
MAX_REACH = 4096  # frames the positional convolution reads on one side (HuBERT's: 64)


@dataclass(frozen=True)
class KvEntry:
    """The manifest's ``stream.kv``: the sizes of the attention cache and the positional reach."""

    layers: int  # transformer layers kept (the cut)
    dim: int  # hidden size: keys and values are [frames, dim] per layer
    reach: int  # CNN frames before the first computed one that the positional convolution reads

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "dim": self.dim, "reach": self.reach}


@dataclass(frozen=True)
class StreamEntry:
    """The manifest's ``stream`` entry: which kind of stream path, and the sizes of its caches."""

    kind: str  # one of STREAM_KINDS
    frame_dim: int  # channels of one cached CNN frame
    stats_channels: int  # channels of the first convolution's running statistics (1 when unused)
    kv: KvEntry | None = None  # the attention cache, where the encoder has one

    @property
    def inputs(self) -> tuple[str, ...]:
        return STREAM_INPUTS + (KV_INPUTS if self.kv else ())

    @property
    def outputs(self) -> tuple[str, ...]:
        return STREAM_OUTPUTS + (KV_OUTPUTS if self.kv else ())

    def to_dict(self) -> dict[str, Any]:
        entry = {"kind": self.kind, "frame_dim": self.frame_dim, "stats_channels": self.stats_channels,
                 "inputs": list(self.inputs), "outputs": list(self.outputs)}
        if self.kv is not None:  # bundles without one keep the entry older runtimes read
            entry["kv"] = self.kv.to_dict()
        return entry

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StreamEntry:
        StreamRule().check("stream", value)
        kv = value.get("kv")
        return cls(value["kind"], value["frame_dim"], value["stats_channels"],
                   None if kv is None else KvEntry(kv["layers"], kv["dim"], kv["reach"]))


@dataclass(frozen=True)
class StreamRule:
    """The manifest rule for ``stream``: null (no stream entry) or an object this runtime implements."""

    def check(self, name: str, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise JsonRuleError(f"'{name}' must be a JSON object or null, got {shown(value)}")
        expected = {"kind", "frame_dim", "stats_channels", "inputs", "outputs"}
        if set(value) - {"kv"} != expected:
            raise JsonRuleError(f"'{name}' must have exactly the keys {', '.join(sorted(expected))} (and "
                                f"optionally kv), got {shown(sorted(map(str, value)))}")
        if not isinstance(value["kind"], str) or value["kind"] not in STREAM_KINDS:
            raise JsonRuleError(f"'{name}': kind must be one of {', '.join(STREAM_KINDS)}, got {shown(value['kind'])}")
        for key in ("frame_dim", "stats_channels"):
            if type(value[key]) is not int or not 1 <= value[key] <= MAX_CHANNELS:
                raise JsonRuleError(f"'{name}': {key} must be an integer in 1..{MAX_CHANNELS}, got {shown(value[key])}")
        kv = value.get("kv")
        if kv is not None:
            self._check_kv(name, kv)
        extra_in, extra_out = (KV_INPUTS, KV_OUTPUTS) if kv is not None else ((), ())
        for key, names in (("inputs", STREAM_INPUTS + extra_in), ("outputs", STREAM_OUTPUTS + extra_out)):
            if value[key] != list(names):
                raise JsonRuleError(f"'{name}': {key} must be {list(names)} (the stream entry this audiotok "
                                    f"implements), got {shown(value[key])}")

    @staticmethod
    def _check_kv(name: str, kv: Any) -> None:
        if not isinstance(kv, dict):
            raise JsonRuleError(f"'{name}': kv must be a JSON object or null, got {shown(kv)}")
        if set(kv) != {"layers", "dim", "reach"}:
            raise JsonRuleError(f"'{name}': kv must have exactly the keys dim, layers, reach, got "
                                f"{shown(sorted(map(str, kv)))}")
        for key, high in (("layers", MAX_KV_LAYERS), ("dim", MAX_CHANNELS), ("reach", MAX_REACH)):
            low = 0 if key == "reach" else 1
            if type(kv[key]) is not int or not low <= kv[key] <= high:
                raise JsonRuleError(f"'{name}': kv.{key} must be an integer in {low}..{high}, got {shown(kv[key])}")
