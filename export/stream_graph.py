"""The unit graph with a stream entry point: the same graph serves offline calls and stream calls.

An encoder is split where its frames become local: the *front* (waveform normalization, the CNN)
turns samples into one frame per 320 samples, each a function of its own 400 samples once the
normalization statistics are fixed; the *back* (feature projection, positional convolution,
transformer layers) runs on a window of frames. A stream computes each frame's front once, caches
it, and runs the back on cached frames followed by the new ones (runtime/stream_cache.py).

:class:`StreamableGraph` computes ``back(concat(stream_cache, front(waveform)))``. Its stream inputs
have defaults (runtime/bundle/stream_entry.py names them) that give the offline graph exactly: an empty
cache (a concatenation with nothing is a copy) and ``stream_on`` false, which selects (an ``If``: an
exact selection) the input's own statistics as the offline graph computes them. With ``stream_on``
true, statistics the offline graph takes over its whole input are running totals (count, sum, sum
of squares per channel, float64 between calls) over every sample heard so far: each call adds the
samples after its ``skip`` overlap, then normalises with the totals. Encoders whose frames are local
(logmel, layer-norm CNNs without waveform normalization) have no statistics: their cache is exact.
The selection is an ONNX ``If``, so an offline call computes none of the stream path.

:func:`stream_split` returns None for encoders it cannot split exactly (checked on a probe:
``back(front(x))`` must equal the encoder's own output); those bundles stream by recomputing windows.

The attention cache (``kv``): where the encoder's attention goes through the plain attention
(encoder_rewrites.py; not WavLM's relative-position attention) and its layers are the post- or
pre-norm transformer layers of HuBERT, wav2vec2 and data2vec-audio, the back also takes CNN frames
that only the positional convolution reads (``stream_context``) and each layer's keys and values of
earlier frames (``stream_kv``), and returns the keys and values of the frames it computed. A stream
then runs the transformer on chunk + lookahead frames only, attending to the cached context. The
defaults (no context frame, no cached key) are the offline computation: a concatenation with nothing,
and a positional convolution whose explicit zero padding is the one the encoder's own convolution
applies (proved bit for bit on a probe at export, else the bundle gets no attention cache).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiotok.models import Encoder
from audiotok.models.base import utterance_normalize
from audiotok.models.huggingface import HuggingFaceEncoder
from audiotok.models.logmel import LogMelEncoder
from audiotok.runtime.constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES
from audiotok.runtime.bundle.stream_entry import KvEntry, StreamEntry

from .encoder_rewrites import PLAIN_ATTENTION, AttentionCache, attending_to
from .graph import UnitGraph

WAVEFORM_EPS = 1e-7  # utterance_normalize's variance floor
# Samples a stream call recounts at most: one frame's 400 (a window with no new frame recomputes its
# last) plus the 0-319 after the last whole frame that a flush counted (runtime/stream_cache.py).
MAX_SKIP_SAMPLES = RECEPTIVE_FIELD_SAMPLES + HOP_SAMPLES
SPLIT_FAMILIES = ("hubert", "wav2vec2", "wavlm", "data2vec-audio")  # transformers models with this forward
PROBE_SAMPLES = 16_000 + 237


def running_stats(values: torch.Tensor, skip: torch.Tensor, totals: torch.Tensor, head: int):
    """Add ``values[:, :, skip:]`` (``[1, C, n]``) to ``totals`` (``[3, C]`` f64: count, sum, sum of
    squares); return the mean and variance of everything counted (f32, ``[C]``) and the totals.

    ``skip`` is at most ``head`` (a constant): the sums are the whole input's less those of a masked
    head, so nothing as long as the input is allocated beside it (the offline path computes this too,
    and ignores it)."""
    first = values[:, :, :head]
    mask = (torch.arange(first.shape[-1], device=values.device) < skip).to(values.dtype)
    skipped = first * mask
    count = (values.shape[-1] - mask.sum()).to(torch.float64).expand(values.shape[1])
    total = (values.sum(-1)[0] - skipped.sum(-1)[0]).to(torch.float64)
    squares = (torch.linalg.vector_norm(values, 2, dim=-1)[0].to(torch.float64) ** 2
               - (skipped * skipped).sum(-1)[0].to(torch.float64))
    totals = totals + torch.stack([count, total, squares])
    mean = totals[1] / totals[0]
    var = torch.clamp(totals[2] / totals[0] - mean * mean, min=0.0)
    return mean.to(values.dtype), var.to(values.dtype), totals


class HuggingFaceSplit:
    """front: (normalization) + CNN, running statistics where the offline graph has input statistics.

    A plain object, not a module: its weights are the encoder's, registered once, in the unit graph."""

    def __init__(self, encoder: HuggingFaceEncoder) -> None:
        self.model = encoder.model
        self.normalize = encoder.normalize
        convs = self.model.feature_extractor.conv_layers
        first = convs[0]
        self.group_norm = isinstance(getattr(first, "layer_norm", None), nn.GroupNorm)
        self.kernel, self.stride = first.conv.kernel_size[0], first.conv.stride[0]
        self.channels = first.conv.out_channels
        self.frame_dim = convs[-1].conv.out_channels
        self.kv: KvEntry | None = None  # set by stream_split once proven exact

    @property
    def kind(self) -> str:
        return "running-stats" if self.group_norm or self.normalize else "exact"

    def front(self, samples: torch.Tensor, on: torch.Tensor, skip: torch.Tensor, cnn_stats: torch.Tensor,
              wave_stats: torch.Tensor):
        """CNN frames ``[1, n, frame_dim]`` of ``samples``: with ``on`` false exactly the offline graph's.

        Each normalization is an ONNX ``If`` on ``on`` (``torch.cond``): the offline call runs the
        offline graph's own operators and nothing else; a stream call, the running statistics.
        Branch outputs are flat (``torch.cond`` wants dense outputs) and reshaped after."""
        x = samples
        if self.normalize:
            def running_waveform(x, skip, stats):
                mean, var, stats = running_stats(x[:, None], skip, stats, MAX_SKIP_SAMPLES)
                return ((x - mean[0]) / torch.sqrt(var[0] + WAVEFORM_EPS)).reshape(-1), stats

            def own_waveform(x, skip, stats):
                return utterance_normalize(x).reshape(-1), stats.clone()

            flat, wave_stats = torch.cond(on, running_waveform, own_waveform, (x, skip, wave_stats))
            x = flat.reshape(x.shape)
        convs = self.model.feature_extractor.conv_layers
        h = x[:, None]
        if self.group_norm:
            first = convs[0]
            norm = first.layer_norm
            h = first.conv(h)
            head = MAX_SKIP_SAMPLES // self.stride + 1

            def running_cnn(h, skip, stats):
                counted = torch.div(torch.clamp(skip - self.kernel + self.stride, min=0), self.stride,
                                    rounding_mode="floor")
                mean, var, stats = running_stats(h, counted, stats, head)
                scale = norm.weight / torch.sqrt(var + norm.eps)  # per channel: one multiply-add per value
                return (h * scale[None, :, None] + (norm.bias - mean * scale)[None, :, None]).reshape(-1), stats

            def own_cnn(h, skip, stats):
                return norm(h).reshape(-1), stats.clone()

            flat, cnn_stats = torch.cond(on, running_cnn, own_cnn, (h, skip, cnn_stats))
            h = first.activation(flat.reshape(h.shape))
            convs = convs[1:]
        for layer in convs:
            h = layer(h)
        return h.transpose(1, 2), cnn_stats, wave_stats

    def project(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = self.model.feature_projection(frames)
        return hidden[0] if isinstance(hidden, tuple) else hidden  # wav2vec2, data2vec: (hidden, normed)

    def back(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(self.project(frames))[0]

    # -- the attention cache ------------------------------------------------------------------------
    def kv_layout(self) -> KvEntry | None:
        """The cache's sizes, or None where this encoder's layers are not the ones :meth:`back_kv` runs."""
        encoder = self.model.encoder
        layers = getattr(encoder, "layers", ())
        if (getattr(self.model.config, "_attn_implementation", None) != PLAIN_ATTENTION or not len(layers)
                or not hasattr(encoder, "pos_conv_embed") or not hasattr(encoder, "layer_norm")):
            return None
        attention = getattr(layers[0], "attention", None)
        heads, head_dim = getattr(attention, "num_heads", None), getattr(attention, "head_dim", None)
        if type(heads) is not int or type(head_dim) is not int:
            return None
        self.heads, self.head_dim = heads, head_dim
        self.pre_norm = "StableLayerNorm" in type(encoder).__name__
        reach = sum(m.padding[0] for m in encoder.pos_conv_embed.modules() if isinstance(m, nn.Conv1d))
        return KvEntry(len(layers), heads * head_dim, reach)

    def _position_after(self, hidden: torch.Tensor, first, reach: int) -> torch.Tensor:
        """The positional embedding of ``hidden[:, first:]``, reading ``reach`` frames before it.

        A single convolution (HuBERT, wav2vec2) is computed at those frames only, its zero padding made
        explicit (what the window's edge gives); other stacks (data2vec-audio's five convolutions) run on
        ``reach`` frames before ``first`` onwards, and the frames before ``first`` are dropped."""
        embed = self.model.encoder.pos_conv_embed
        low = torch.sym_max(0, first - reach)
        conv = getattr(embed, "conv", None)
        if isinstance(conv, nn.Conv1d) and getattr(embed, "batch_norm", None) is None and hasattr(embed, "activation"):
            pad = conv.padding[0]
            x = nn.functional.pad(hidden[:, low:].transpose(1, 2), (pad - (first - low), pad))
            y = nn.functional.conv1d(x, conv.weight, conv.bias, stride=conv.stride, dilation=conv.dilation,
                                     groups=conv.groups)[:, :, :hidden.shape[1] - first]
            return embed.activation(y).transpose(1, 2)
        return embed(hidden[:, low:])[:, first - low:]

    def _heads(self, rows: torch.Tensor) -> torch.Tensor:  # [frames, dim] -> [1, heads, frames, head_dim]
        return rows.reshape(1, -1, self.heads, self.head_dim).transpose(1, 2)

    def back_kv(self, frames: torch.Tensor, first, kv: torch.Tensor, reach: int):
        """Hidden states of ``frames[:, first:]`` attending also to ``kv``'s earlier frames, and their own
        keys and values ``[layers, 2, frames - first, dim]``. The frames before ``first`` feed only the
        positional convolution, which reads ``reach`` of them (more change nothing; fewer are the window's
        edge, zero-padded as offline). ``first`` 0 and an empty ``kv``: the encoder's own computation."""
        encoder = self.model.encoder
        hidden = self.project(frames)
        # No If here: at ``first`` 0 the explicit padding is the convolution's own (and a stack runs on
        # every frame), which stream_split proves bit for bit on a probe; an If's branches cost a third of
        # a small encoder's export to trace.
        h = hidden[:, first:] + self._position_after(hidden, first, reach)
        if not self.pre_norm:
            h = encoder.layer_norm(h)
        h = encoder.dropout(h)
        kept = []
        for i, layer in enumerate(encoder.layers):
            with attending_to(AttentionCache(self._heads(kv[i, 0]), self._heads(kv[i, 1]))) as cache:
                h = layer(h)
                h = h[0] if isinstance(h, tuple) else h
            if cache.key is None:
                raise RuntimeError("a layer's attention did not go through the attention cache")
            kept.append(torch.stack([cache.key.transpose(1, 2).reshape(h.shape[1], -1),
                                     cache.value.transpose(1, 2).reshape(h.shape[1], -1)]))
        if self.pre_norm:
            h = encoder.layer_norm(h)  # the cut's final norm: an identity or the encoder's own (models/)
        return h, torch.stack(kept)

    def offline(self, waveform: torch.Tensor) -> torch.Tensor:
        """What front + back give with the input's own statistics: checked against the encoder."""
        x = utterance_normalize(waveform) if self.normalize else waveform
        frames = self.model.feature_extractor(x).transpose(1, 2)
        return self.back(frames)


class LogMelSplit:
    """logmel: every frame is local; the back is the identity."""

    kind = "exact"
    kv = None

    def __init__(self, encoder: LogMelEncoder) -> None:
        self.encoder = encoder
        self.frame_dim = encoder.spec.dim
        self.channels = 1

    def front(self, samples, on, skip, cnn_stats, wave_stats):
        return self.encoder(samples), cnn_stats, wave_stats

    def back(self, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def offline(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.encoder(waveform)


def stream_split(encoder: Encoder) -> HuggingFaceSplit | LogMelSplit | None:
    """The encoder's front/back split, or None where this export cannot give one exactly."""
    if isinstance(encoder, LogMelEncoder):
        return LogMelSplit(encoder)
    if not isinstance(encoder, HuggingFaceEncoder) or encoder.spec.encoder_type not in SPLIT_FAMILIES:
        return None
    model = encoder.model
    if getattr(model, "adapter", None) is not None or not hasattr(model, "feature_projection"):
        return None
    split = HuggingFaceSplit(encoder)
    probe = torch.from_numpy(np.random.default_rng(1).standard_normal(PROBE_SAMPLES, dtype=np.float32))[None]
    with torch.no_grad():
        expected = encoder(probe)
        if not torch.equal(split.offline(probe), expected):
            return None
        split.kv = split.kv_layout()
        if split.kv is not None and not _kv_exact(split, probe, expected):
            split.kv = None
    return split


def _kv_exact(split: HuggingFaceSplit, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    """The attention-cache back with no context and no cached key must be the encoder's output exactly,
    and every layer's attention must have gone through the cache (a transformers version that bypasses
    the attention interface would otherwise ignore it silently)."""
    x = utterance_normalize(probe) if split.normalize else probe
    frames = split.model.feature_extractor(x).transpose(1, 2)
    empty = torch.zeros(split.kv.layers, 2, 0, split.kv.dim)
    try:
        hidden, kv = split.back_kv(frames, 0, empty, split.kv.reach)
    except RuntimeError:
        return False
    return torch.equal(hidden, expected) and tuple(kv.shape) == (split.kv.layers, 2, frames.shape[1], split.kv.dim)


class StreamableGraph(nn.Module):
    """:class:`UnitGraph` with the stream inputs and outputs: ``units`` (and ``features``) of the cached
    frames followed by the waveform's, the waveform's frames, and the running statistics."""

    def __init__(self, graph: UnitGraph, split: HuggingFaceSplit | LogMelSplit) -> None:
        super().__init__()
        self.unit_graph = graph
        self.split = split  # not a module: its weights are the graph's

    @property
    def with_features(self) -> bool:
        return self.unit_graph.with_features

    @property
    def entry(self) -> StreamEntry:
        return StreamEntry(self.split.kind, self.split.frame_dim, self.split.channels, self.split.kv)

    def forward(self, waveform, stream_cache, stream_on, stream_skip, stream_cnn_stats, stream_wave_stats,
                stream_context=None, stream_kv=None):
        frames, cnn_stats, wave_stats = self.split.front(waveform, stream_on, stream_skip, stream_cnn_stats,
                                                         stream_wave_stats)
        window = torch.cat([stream_cache, frames], dim=1)
        kv = ()
        if self.split.kv is None:
            hidden = self.split.back(window)
        else:
            hidden, kv_out = self.split.back_kv(torch.cat([stream_context, window], dim=1), stream_context.shape[1],
                                                stream_kv, self.split.kv.reach)
            kv = (kv_out,)
        units = self.unit_graph.nearest(hidden)
        offline = (units, hidden.float()) if self.with_features else (units,)
        return (*offline, frames, cnn_stats, wave_stats, *kv)
