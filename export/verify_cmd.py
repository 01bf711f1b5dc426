"""Measure how often a bundle's units equal the torch encoder's, on your own audio.

The agreement in a bundle's manifest was measured at export, on the training (or a synthetic)
audio. This measures it again on the audio you care about: the torch encoder in float32 with the
bundle's centroids on one side, the bundle (any precision, on the execution provider you pick) on
the other, both on the same windows. Each file runs in one pass (the reference units) when it is
no longer than --max-pass-seconds; the default, auto, picks the longest pass whose attention
matrices fit in half the memory available now (at least 30 s). Longer files run in the runtime's
30 s windows on both sides. One line per file, then the total.

Examples:
  audiotok verify km500-int8.onnx --model hubert-base/ speech/*.flac
  audiotok verify km500-fp16.onnx --model hubert-base/ --provider cuda --min-agreement 0.98 speech/
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace

import numpy as np
import torch

from audiotok.models import BUILTIN, load_encoder
from audiotok.models.features import FeatureExtractor
from audiotok.runtime.commands.numbers import number, threads
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.bundle.centroids import centroids_sha256, extract_centroids
from audiotok.runtime.commands.options import add_provider_argument
from audiotok.runtime.constants import FRAME_SECONDS
from audiotok.runtime.corpus.listing import list_corpus
from audiotok.runtime.errors import AudiotokError, SettingsError
from audiotok.runtime.bundle.manifest import Manifest
from audiotok.runtime.audio.preprocess import prepared_blocks
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.runtime.windowing import DEFAULT_MAX_PASS_SECONDS, OFFLINE_POLICY, max_pass_seconds, one_pass_samples

from .centroids import CentroidsError, load_centroids
from .graph import NearestCentroid
from .parity import Agreement, check_min_agreement, equal_units

ATTENTION_COPIES = 3  # attention-score matrices alive at an onnxruntime pass's peak (benchmarks/pass_memory.py)
PASS_BYTES_PER_SECOND = 12e6  # a pass's other memory per second of audio at HuBERT-base size (torch, the larger)
NO_ATTENTION_PASS_SECONDS = 3600.0


class AgreementBelow(AudiotokError):
    """The measured agreement is below the --min-agreement the user asked for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="the encoder the bundle was exported from: 'logmel', a hub id or a local folder")
    parser.add_argument("--centroids", default=None,
                        help="centroids .npy (default: read back from the bundle and checked against its manifest)")
    add_provider_argument(parser, " to run the bundle on")
    parser.add_argument("--threads", type=threads(), default=None, help="intra-op threads (default: onnxruntime's)")
    parser.add_argument("--min-agreement", type=number("--min-agreement"), default=None,
                        help="exit with status 1 if the total agreement is below this fraction")
    parser.add_argument("--max-pass-seconds", default="auto", metavar="S",
                        help="files up to S seconds run in one pass on both sides; auto: as long as memory allows")


def _centroids(args: argparse.Namespace, manifest: Manifest) -> np.ndarray:
    if args.centroids is None:  # the bundle's own, checked against its manifest's hash
        return extract_centroids(args.bundle, manifest)
    array = load_centroids(args.centroids).array
    if centroids_sha256(array) != manifest.centroids_sha256:
        raise CentroidsError(f"--centroids {args.centroids} are not the ones this bundle was exported with "
                             f"(sha256 differs from its manifest); pass the exported --centroids")
    return array


def _encoder(args: argparse.Namespace, manifest: Manifest):
    if (args.model == BUILTIN) != (manifest.encoder_type == "logmel"):
        raise SettingsError(f"{args.bundle} was exported from {manifest.encoder} ({manifest.encoder_type}), "
                            f"not from --model {args.model}")
    layer = None if args.model == BUILTIN else manifest.layer
    encoder = load_encoder(args.model, layer, "yes" if manifest.normalization == "utterance" else "no")
    spec = encoder.spec
    if (spec.encoder_type, spec.dim) != (manifest.encoder_type, manifest.dim):
        raise SettingsError(f"{args.bundle} was exported from a {manifest.encoder_type} with {manifest.dim}-dim "
                            f"features at layer {manifest.layer}; --model {args.model} is a {spec.encoder_type} "
                            f"with {spec.dim}-dim features there")
    return encoder


def available_memory_bytes() -> int | None:
    """MemAvailable (Linux), else free physical memory, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fitting_pass_seconds(encoder) -> float:
    """The longest one pass whose estimated peak fits in half the available memory (30 s at least).

    A pass needs memory linear in its length for the CNN's activations (PASS_BYTES_PER_SECOND at
    a 512-channel CNN, scaled by the checkpoint's widest CNN layer) plus the attention scores,
    ``heads x frames^2`` float32 values of which ATTENTION_COPIES are alive at the peak: measured on
    a HuBERT-base-size checkpoint with benchmarks/pass_memory.py (docs/long-inputs-and-exact-units.md),
    rounded up. Encoders without attention (logmel) need memory linear in the length: up to an hour.
    """
    config = getattr(getattr(encoder, "model", None), "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        return NO_ATTENTION_PASS_SECONDS
    available = available_memory_bytes()
    if available is None:
        return DEFAULT_MAX_PASS_SECONDS
    width = max(getattr(config, "conv_dim", (512,)) or (512,)) / 512
    quadratic = ATTENTION_COPIES * heads * 4 / FRAME_SECONDS ** 2  # bytes per second^2
    linear = PASS_BYTES_PER_SECOND * width
    budget = available / 2
    seconds = (-linear + math.sqrt(linear * linear + 4 * quadratic * budget)) / (2 * quadratic)
    return max(DEFAULT_MAX_PASS_SECONDS, float(math.floor(seconds)))


def run(args: argparse.Namespace) -> int:
    check_min_agreement(args.min_agreement)
    if args.max_pass_seconds != "auto":
        max_pass_seconds(args.max_pass_seconds)  # a bad value fails before anything is loaded
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=args.threads)
    manifest = tokenizer.manifest
    files = [item.path for item in list_corpus(args.audio)]
    if not files:
        raise AudiotokError(f"no audio files found in {', '.join(args.audio)}")
    nearest = NearestCentroid(_centroids(args, manifest), manifest.feature_norm).eval()
    encoder = _encoder(args, manifest)
    if args.max_pass_seconds != "auto":
        limit = max_pass_seconds(args.max_pass_seconds)
    else:
        limit = fitting_pass_seconds(encoder)
        print(f"audiotok: files up to {limit:g} s run in one pass, longer ones in 30 s windows "
              f"(--max-pass-seconds auto, from the memory available now)", file=sys.stderr)
    tokenizer.policy = replace(OFFLINE_POLICY, one_pass_samples=one_pass_samples(limit, "--max-pass-seconds"))
    extractor = FeatureExtractor(encoder, tokenizer.policy)
    frames = matching = 0
    for path in files:
        with torch.no_grad():
            pre = tokenizer.preprocess  # the bundle's channel and frame rule, as tokenize applies them
            _, blocks = prepared_blocks(lambda: file_blocks(path, channel=pre.channel), pre)
            expected = nearest(torch.from_numpy(extractor.features(blocks))).numpy()
        got = tokenizer.tokenize(path)
        if got.shape != expected.shape:
            raise AudiotokError(f"{path}: the bundle gave {len(got)} units where torch gave {len(expected)}")
        same = equal_units(got, expected)
        frames, matching = frames + len(got), matching + same
        print(f"{path}\t{same}/{len(got)}\t{same / len(got) if len(got) else 1.0:.4%}", flush=True)
    agreement = Agreement(frames, matching, audio=f"{len(files)} files")
    exported = manifest.agreement.get("agreement")
    at_export = f"; {exported:.2%} at export" if isinstance(exported, (int, float)) else ""
    plural = "s" if len(files) != 1 else ""
    print(f"agreement {agreement.fraction:.4%} of {frames} frames in {len(files)} file{plural} ({manifest.precision} "
          f"bundle on {tokenizer.providers[0]} vs torch fp32{at_export})")
    if not agreement.meets(args.min_agreement):
        raise AgreementBelow(f"agreement {agreement.fraction:.4%} is below --min-agreement {args.min_agreement:.4%}")
    return 0
