"""Measure how often a bundle's units equal the torch encoder's, on your own audio.

The agreement in a bundle's manifest was measured at export, on the training (or a synthetic)
audio. This measures it again on the audio you care about, through the same windows the runtime
uses: the torch encoder in float32 with the bundle's centroids on one side, the bundle (any
precision, on the execution provider you pick) on the other. One line per file, then the total.

Examples:
  audiotok verify km500-int8.onnx --model hubert-base/ speech/*.flac
  audiotok verify km500-fp16.onnx --model hubert-base/ --provider cuda --min-agreement 0.98 speech/
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from audiotok.models import BUILTIN, load_encoder
from audiotok.runtime.audio import file_blocks, find_audio_files
from audiotok.runtime.bundle_centroids import centroids_sha256, extract_centroids
from audiotok.runtime.errors import AudiotokError, SettingsError
from audiotok.runtime.manifest import Manifest
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.train.features import FeatureExtractor

from .centroids import CentroidsError, load_centroids
from .graph import NearestCentroid


class AgreementBelow(AudiotokError):
    """The measured agreement is below the --min-agreement the user asked for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="the encoder the bundle was exported from: 'logmel', a hub id or a local folder")
    parser.add_argument("--centroids", default=None,
                        help="centroids .npy (default: read back from the bundle and checked against its manifest)")
    parser.add_argument("--provider", action="append", default=None,
                        help="execution provider to run the bundle on (cpu, cuda, ...); falls back to CPU")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="exit with status 1 if the total agreement is below this fraction")


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


def run(args: argparse.Namespace) -> int:
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise SettingsError(f"--min-agreement is a fraction of frames in [0, 1], got {args.min_agreement}")
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=args.threads)
    manifest = tokenizer.manifest
    files = find_audio_files(args.audio)
    if not files:
        raise AudiotokError(f"no audio files found in {', '.join(args.audio)}")
    nearest = NearestCentroid(_centroids(args, manifest)).eval()
    extractor = FeatureExtractor(_encoder(args, manifest))
    frames = matching = 0
    for path in files:
        with torch.no_grad():
            expected = nearest(torch.from_numpy(extractor.features(file_blocks(path)))).numpy()
        got = tokenizer.tokenize(path)
        if got.shape != expected.shape:
            raise AudiotokError(f"{path}: the bundle gave {len(got)} units where torch gave {len(expected)}")
        same = int((got == expected).sum())
        frames, matching = frames + len(got), matching + same
        print(f"{path}\t{same}/{len(got)}\t{same / len(got) if len(got) else 1.0:.4%}", flush=True)
    fraction = matching / frames if frames else 1.0
    exported = manifest.agreement.get("agreement")
    at_export = f"; {exported:.2%} at export" if isinstance(exported, (int, float)) else ""
    plural = "s" if len(files) != 1 else ""
    print(f"agreement {fraction:.4%} of {frames} frames in {len(files)} file{plural} ({manifest.precision} bundle on "
          f"{tokenizer.providers[0]} vs torch fp32{at_export})")
    if args.min_agreement is not None and fraction < args.min_agreement:
        raise AgreementBelow(f"agreement {fraction:.4%} is below --min-agreement {args.min_agreement:.4%}")
    return 0
