"""Make an encoder export-friendly without changing what it computes.

Two things in a transformers encoder hide the graph's real structure from onnxruntime's
optimizers and quantizer, and neither changes the numbers:

* Weight normalization on the positional convolution (``weight = g * v / ||v||``) is a
  parametrization recomputed on every forward. Exported as is, it becomes a ReduceL2 and a
  division on the weights inside the graph: the convolution's weight is then not a constant, so it
  cannot be folded, fused or quantized. Baking it once gives the same weight tensor.
* Attention. PyTorch's SDPA exports as a decomposition with NaN guards, and transformers' eager
  path builds an all-zero additive mask when it is exported with torch.export (it cannot prove the
  mask away while tracing), which costs a full pass over every attention matrix. The encoder never
  receives a padding mask (inputs are never padded), so attention is exported as the plain
  ``softmax(q k^T * scale) v``: the same arithmetic as transformers' eager path without the mask.

The export checks its units against the unmodified torch encoder, so a mistake here cannot
slip through silently.

The plain attention also serves the stream entry point's attention cache (stream_graph.py): while an
:class:`AttentionCache` is active, a layer's queries attend to its cached keys and values of earlier
frames before their own, and the layer's own keys and values are recorded for the stream to keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from .quiet import quiet

PLAIN_ATTENTION = "audiotok_plain"


class AttentionCache:
    """One layer's keys and values of earlier frames ``[batch, heads, frames, head_dim]``, and, once the
    layer has run, its own (``key``, ``value``), recorded by :func:`_plain_attention`."""

    def __init__(self, cached_key: torch.Tensor, cached_value: torch.Tensor) -> None:
        self.cached_key, self.cached_value = cached_key, cached_value
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None


_ACTIVE: list[AttentionCache] = []  # the cache of the layer running now, innermost last


@contextmanager
def attending_to(cache: AttentionCache) -> Iterator[AttentionCache]:
    """Run a layer whose attention also sees ``cache``'s earlier frames, and records its own."""
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.pop()


def bake_parametrizations(module: nn.Module) -> int:
    """Replace every parametrized weight (weight norm) by its current value; returns how many."""
    baked = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
                baked += 1
    return baked


def _plain_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention, query/key/value ``[batch, heads, frames, head_dim]``."""
    if attention_mask is not None:  # the encoders are always called without one; see module docstring
        raise ValueError("audiotok exports attention without padding masks")
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    if _ACTIVE:  # a stream call: earlier frames' keys and values first, then the window's own
        cache = _ACTIVE[-1]
        cache.key, cache.value = key, value
        key = torch.cat([cache.cached_key.to(key.dtype), key], dim=2)
        value = torch.cat([cache.cached_value.to(value.dtype), value], dim=2)
    weights = torch.softmax(torch.matmul(query, key.transpose(2, 3)) * scale, dim=-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _no_mask(*args, attention_mask=None, **kwargs):
    if attention_mask is not None:
        raise ValueError("audiotok exports attention without padding masks")
    return None


def use_plain_attention(model: nn.Module) -> bool:
    """Switch a transformers model to :func:`_plain_attention`; False where it cannot be switched.

    Uses transformers' public registries for attention functions and their masks. Models whose
    attention does not go through them (WavLM's relative-position attention, older transformers)
    keep their own implementation, which exports correctly, only less compactly.
    """
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:
        return False
    AttentionInterface.register(PLAIN_ATTENTION, _plain_attention)
    AttentionMaskInterface.register(PLAIN_ATTENTION, _no_mask)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        return False
    try:
        with quiet("transformers"):  # a model that cannot switch (WavLM) says so as a warning: it is expected
            setter(PLAIN_ATTENTION)
    except (ValueError, ImportError, AttributeError):
        return False
    return getattr(model.config, "_attn_implementation", None) == PLAIN_ATTENTION


def prepare_for_export(module: nn.Module) -> nn.Module:
    """Bake weight norms and switch transformers attention to the plain form, in place."""
    bake_parametrizations(module)
    for sub in module.modules():
        if hasattr(sub, "config") and hasattr(sub, "set_attn_implementation"):
            use_plain_attention(sub)
            break
    return module
