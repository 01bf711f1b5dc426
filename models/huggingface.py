"""Hugging Face speech encoders (HuBERT, mHuBERT-147, wav2vec2, WavLM, data2vec-audio), cut at a layer.

"Layer L" means exactly ``model(x, output_hidden_states=True).hidden_states[L]``. The adapter
keeps only the first L transformer layers, so later layers are never computed, and proves the cut
on a probe input when it is built: transformers' meaning of the last hidden state has changed
between versions (with or without the final layer norm), and a silently different layer is the
most common way to get wrong units.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from audiotok.runtime.constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.errors import AudiotokError, SettingsError

from .base import Encoder, EncoderSpec, utterance_normalize

PROBE_SECONDS = 0.5
NORMALIZE_CHOICES = ("auto", "yes", "no")


class EncoderNotFound(AudiotokError):
    """The checkpoint is neither a local folder nor reachable on the hub."""


def _conv_geometry(config) -> tuple[int, int]:
    """(hop, receptive field) in samples of the checkpoint's convolutional front end."""
    hop, field = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return hop, field


def _licence_from_card(folder: Path) -> str | None:
    """The ``license:`` line of a model card's YAML front matter, if the folder has one."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    found = re.search(r"^licen[cs]e:\s*(\S+)", front.group(1), re.M) if front else None
    return found.group(1).strip("'\"") if found else None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick TCP connect to the hub: huggingface_hub retries for ~25 s before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _load_config(source: str):
    """The checkpoint's config and the from_pretrained arguments that found it (cheap: no weights)."""
    from transformers import AutoConfig

    local = Path(source).expanduser()
    if local.exists() and not local.is_dir():
        raise EncoderNotFound(f"--model {source}: is a file; pass a model folder (config.json + weights) or a hub id")
    if local.is_dir():
        attempts = [{"pretrained_model_name_or_path": str(local)}]
    else:  # the local cache first, then the hub if it answers
        attempts = [{"pretrained_model_name_or_path": source, "local_files_only": True}]
        if _hub_reachable():
            attempts.append({"pretrained_model_name_or_path": source})
    error = None
    for kwargs in attempts:
        try:
            return AutoConfig.from_pretrained(**kwargs), kwargs
        except (OSError, ValueError) as exc:
            error = exc
    if local.is_dir():
        raise EncoderNotFound(f"--model {source}: not a loadable transformers checkpoint "
                              f"({str(error).splitlines()[0][:160]})")
    raise EncoderNotFound(
        f"--model {source}: not a local folder, not in the local cache, and the model hub is not reachable; "
        f"download it where the hub is reachable (huggingface-cli download {source} --local-dir DIR) "
        f"and pass that local folder"
    )


def _load_weights(config, found_with: dict) -> nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar for reading a local file is noise on stderr
    try:
        model = AutoModel.from_pretrained(config=config, **found_with)
    except (OSError, ValueError) as exc:
        raise EncoderNotFound(f"--model {found_with['pretrained_model_name_or_path']}: weights could not be "
                              f"loaded ({str(exc).splitlines()[0][:160]})") from None
    finally:
        hf_logging.enable_progress_bar()
    if not hasattr(getattr(model, "encoder", None), "layers"):
        raise AudiotokError(f"--model {found_with['pretrained_model_name_or_path']}: a {config.model_type} model "
                            f"without a transformer encoder audiotok can cut")
    return model.eval().requires_grad_(False)


def _do_normalize(source: str, found_with: dict, choice: str) -> bool:
    if choice != "auto":
        return choice == "yes"
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(**found_with)
    except (OSError, ValueError):
        raise SettingsError(
            f"--model {source}: no feature extractor config (preprocessor_config.json), so its waveform "
            f"normalization is unknown; pass --normalize yes or --normalize no"
        ) from None
    rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise SettingsError(f"--model {source}: expects {rate} Hz audio; audiotok encoders run at {SAMPLE_RATE} Hz")
    return bool(getattr(extractor, "do_normalize", False))


class HuggingFaceEncoder(Encoder):
    """A frozen transformers encoder whose output is ``hidden_states[layer]``."""

    def __init__(self, model: nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.normalize = spec.normalization == "utterance"

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            waveform = utterance_normalize(waveform)
        return self.model(waveform).last_hidden_state


def _cut(model: nn.Module, layer: int, probe: torch.Tensor) -> None:
    """Drop layers after ``layer`` in place, then prove the output equals hidden_states[layer]."""
    with torch.no_grad():
        expected = model(probe, output_hidden_states=True).hidden_states[layer]
        encoder = model.encoder
        encoder.layers = encoder.layers[:layer]
        final_norm = getattr(encoder, "layer_norm", None)
        candidates = [None]
        if "StableLayerNorm" in type(encoder).__name__ and final_norm is not None:
            candidates = [nn.Identity(), final_norm]  # pre-LN encoders norm after the last layer
        for norm in candidates:
            if norm is not None:
                encoder.layer_norm = norm
            got = model(probe).last_hidden_state
            if got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                return
    raise AudiotokError(f"cannot cut this {type(model).__name__} at layer {layer}: the truncated model does "
                        f"not reproduce hidden_states[{layer}] (unsupported transformers layout)")


def load_huggingface(source: str, layer: int | None, normalize: str = "auto") -> HuggingFaceEncoder:
    """Load ``source`` (hub id or local folder), freeze it and cut it after ``layer``."""
    if normalize not in NORMALIZE_CHOICES:
        raise SettingsError(f"--normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {normalize!r}")
    config, found_with = _load_config(source)
    if not hasattr(config, "conv_stride") or not hasattr(config, "num_hidden_layers"):
        raise AudiotokError(f"--model {source}: a {config.model_type} model, not a wav2vec2-style speech encoder")
    geometry = _conv_geometry(config)
    if geometry != (HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES):
        raise AudiotokError(f"--model {source}: its CNN has hop {geometry[0]} and receptive field {geometry[1]}; "
                            f"audiotok needs {HOP_SAMPLES} and {RECEPTIVE_FIELD_SAMPLES}")
    depth = config.num_hidden_layers
    layer = min(6, depth) if layer is None else layer
    if not 0 <= layer <= depth:
        raise SettingsError(f"--layer {layer} is beyond {source}'s depth: it has hidden states 0..{depth}")
    do_normalize = _do_normalize(source, found_with, normalize)
    model = _load_weights(config, found_with)
    probe = torch.from_numpy(np.random.default_rng(0).standard_normal(int(PROBE_SECONDS * SAMPLE_RATE),
                                                                       dtype=np.float32))[None]
    _cut(model, layer, probe)
    folder = Path(source).expanduser()
    spec = EncoderSpec(
        name=source,
        encoder_type=config.model_type,
        layer=layer,
        num_layers=depth,
        dim=config.hidden_size,
        normalization="utterance" if do_normalize else "none",
        licence=_licence_from_card(folder) if folder.is_dir() else None,
        config_sha256=hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest(),
    )
    return HuggingFaceEncoder(model, spec)
