"""Encoder adapters shared by training and export (needs the ``[train]`` extra).

``load_encoder("logmel")`` gives the built-in log-mel encoder; any other name is a transformers
checkpoint (hub id or local folder) cut at ``layer``.
"""

from __future__ import annotations

from .base import Encoder, EncoderSpec
from .logmel import LogMelEncoder

BUILTIN = "logmel"


def load_encoder(name: str, layer: int | None = None, normalize: str = "auto") -> Encoder:
    """The frozen encoder ``name`` cut at ``layer`` (default 6, the GSLM layer, for transformers models)."""
    if name == BUILTIN:
        from audiotok.runtime.errors import SettingsError

        if layer not in (None, 0):
            raise SettingsError("--layer does not apply to the logmel encoder (it has one feature layer, 0)")
        return LogMelEncoder().eval()
    from .huggingface import load_huggingface

    return load_huggingface(name, layer, normalize)


__all__ = ["BUILTIN", "Encoder", "EncoderSpec", "LogMelEncoder", "load_encoder"]
