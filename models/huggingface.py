"""Hugging Face speech encoders (HuBERT, mHuBERT-147, wav2vec2, WavLM, data2vec-audio), cut at a layer.

"Layer L" means exactly ``model(x, output_hidden_states=True).hidden_states[L]``. The adapter
keeps only the first L transformer layers, so later layers are never computed, and proves the cut
on a probe input when it is built: transformers' meaning of the last hidden state has changed
between versions (with or without the final layer norm), and a silently different layer is the
most common way to get wrong units.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
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
from audiotok.runtime.log import log
from audiotok.runtime.bundle.manifest import MAX_DIM, MAX_LAYER
from audiotok.runtime.process.native_stderr import captured_stderr

from .base import Encoder, EncoderSpec, utterance_normalize

PROBE_SECONDS = 0.5
NORMALIZE_CHOICES = ("auto", "yes", "no")


class EncoderNotFound(AudiotokError):
    """The checkpoint is neither a local folder nor reachable on the hub."""


# transformers families with the wav2vec2-style front end (a strided CNN, then a transformer encoder)
SPEECH_FAMILIES = frozenset({"hubert", "wav2vec2", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                             "wav2vec2-conformer", "sew", "sew-d"})
TRAINING_ONLY_WEIGHTS = ("masked_spec_embed",)  # used to mask inputs in pre-training, never at inference


def _reason(exc: BaseException | None) -> str:
    """An exception's first line, bounded, for a one-line error (its type when it has no message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] if exc is not None else []
    text = lines[0] if lines else type(exc).__name__
    if text.endswith(":") and len(lines) > 1:  # "Validation error for field 'x':" says why on its next line
        text = f"{text} {lines[1]}"
    return text[:200]


def _positive_ints(value: object, *, most: int = 64) -> bool:
    return (isinstance(value, (list, tuple)) and 0 < len(value) <= most
            and all(type(v) is int and 0 < v < 1 << 20 for v in value))


def _check_config(source: str, config) -> None:
    """The config values audiotok reads before any weights load: types and ranges, one line if wrong.

    A config.json comes from whoever published the checkpoint; transformers checks some values late
    (a negative size fails deep inside tensor creation), so the ones audiotok relies on are checked here.
    """
    problems = []
    if not (_positive_ints(config.conv_kernel) and _positive_ints(config.conv_stride)
            and len(config.conv_kernel) == len(config.conv_stride)):
        problems.append("conv_kernel and conv_stride must be equal-length lists of positive integers")
    for name, high in (("num_hidden_layers", MAX_LAYER), ("hidden_size", MAX_DIM),
                       ("num_attention_heads", MAX_DIM), ("intermediate_size", 1 << 20)):
        value = getattr(config, name, None)
        if type(value) is not int or not 1 <= value <= high:
            problems.append(f"{name} must be an integer in 1..{high}, got {value!r}"[:200])
    if problems:
        raise EncoderNotFound(f"--model {source}: its config.json cannot be used: {problems[0]}")


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
        except Exception as exc:  # a stranger's config.json: transformers raises many types for bad values
            error = exc
    if local.is_dir():
        raise EncoderNotFound(f"--model {source}: not a loadable transformers checkpoint ({_reason(error)})")
    raise EncoderNotFound(
        f"--model {source}: not a local folder, not in the local cache, and the model hub is not reachable; "
        f"download it where the hub is reachable (huggingface-cli download {source} --local-dir DIR) "
        f"and pass that local folder"
    )


def _load_weights(config, found_with: dict) -> nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    source = found_with["pretrained_model_name_or_path"]
    hf_logging.disable_progress_bar()  # a bar for reading a local file is noise on stderr
    try:  # transformers prints its own load report (tables of keys): audiotok says what matters itself
        with contextlib.redirect_stdout(io.StringIO()), captured_stderr():
            model, info = AutoModel.from_pretrained(config=config, output_loading_info=True, **found_with)
    except Exception as exc:  # size mismatches, negative dimensions, unreadable files: the checkpoint's fault
        raise EncoderNotFound(f"--model {source}: weights could not be loaded ({_reason(exc)})") from None
    finally:
        hf_logging.enable_progress_bar()
    missing = [key for key in info.get("missing_keys", ()) if not key.endswith(TRAINING_ONLY_WEIGHTS)]
    if missing:  # initialised at random: units would not mean what the checkpoint learned
        log.warning("--model %s: %d weight(s) are not in the checkpoint and were initialised at random (%s%s); "
                    "its units will not mean what it learned", source, len(missing), ", ".join(sorted(missing)[:3]),
                    ", ..." if len(missing) > 3 else "")
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
    except OSError:  # no preprocessor_config.json
        raise SettingsError(
            f"--model {source}: no feature extractor config (preprocessor_config.json), so its waveform "
            f"normalization is unknown; pass --normalize yes or --normalize no"
        ) from None
    except Exception as exc:  # there, but not usable
        raise SettingsError(f"--model {source}: its preprocessor_config.json cannot be used ({_reason(exc)}); "
                            "fix it, or pass --normalize yes or --normalize no") from None
    rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise SettingsError(f"--model {source}: expects {str(rate)[:40]} Hz audio; audiotok encoders run at "
                            f"{SAMPLE_RATE} Hz")
    do_normalize = getattr(extractor, "do_normalize", False)
    if not isinstance(do_normalize, bool):  # "false" in a JSON string would read as true
        raise SettingsError(f"--model {source}: its preprocessor_config.json has do_normalize "
                            f"{str(do_normalize)[:40]!r}, not true or false; pass --normalize yes or no")
    return do_normalize


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
        try:
            expected = model(probe, output_hidden_states=True).hidden_states[layer]
        except Exception as exc:  # a config whose values build a model that cannot run
            raise AudiotokError(f"this {type(model).__name__} cannot run on audio ({_reason(exc)})") from None
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
    if config.model_type not in SPEECH_FAMILIES:
        raise AudiotokError(f"--model {source}: a {config.model_type} model, not a wav2vec2-style speech encoder")
    _check_config(source, config)
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
