"""Export an encoder cut at its layer plus k-means centroids as ONE ONNX graph: waveform in, units out.

The bundle carries its own manifest (encoder, layer, k, normalization, precision, provenance and
the agreement with torch measured at export), so it cannot be used with the wrong layer later.
Export fails, writing nothing, if the bundle's units differ from torch's on more than 0.1% of frames.

--centroids takes audiotok's own .npy, or an existing vocabulary, recognised from its content:
a .npy array, a torch .pt (tensor or state dict with one k x dim tensor), a scikit-learn
KMeans/MiniBatchKMeans pickle (fairseq/GSLM km.bin, any scikit-learn version), or a faiss
flat/IVF index (needs faiss-cpu). Imported vocabularies carry no layer: pass --layer.

Examples:
  audiotok export --model logmel --centroids units.npy -o units.onnx
  audiotok export --model facebook/hubert-base-ls960 --layer 6 --centroids km.bin -o hubert50.onnx
"""

from __future__ import annotations

import argparse
import sys

from audiotok.models.huggingface import NORMALIZE_CHOICES

from .bundle import ExportConfig, export_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="logmel",
                        help="the encoder the centroids were fitted with: 'logmel', a hub id or a local folder")
    parser.add_argument("--layer", type=int, default=None,
                        help="hidden_states index (default: the layer recorded beside the centroids, else 6)")
    parser.add_argument("--centroids", required=True, help="centroids: .npy from `audiotok train`, or .npy/.pt/km.bin (scikit-learn pickle)/faiss index")
    parser.add_argument("-o", "--output", required=True, help="bundle to write (.onnx)")
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="auto",
                        help="waveform normalization; auto reads the checkpoint's feature extractor")
    parser.add_argument("--min-agreement", type=float, default=0.999,
                        help="refuse the bundle if its units match torch's on fewer frames than this fraction")
    parser.add_argument("--audio", nargs="+", default=[],
                        help="audio for the parity check (default: the training data, else a synthetic signal)")


def run(args: argparse.Namespace) -> int:
    config = ExportConfig(model=args.model, centroids=args.centroids, output=args.output, layer=args.layer,
                          normalize=args.normalize, min_agreement=args.min_agreement, audio=args.audio)
    manifest, agreement = export_bundle(config)
    print(f"audiotok: wrote {args.output}: {manifest.encoder} layer {manifest.layer}, k={manifest.k}, "
          f"{manifest.precision}; units equal torch's on {agreement.fraction:.4%} of {agreement.frames} frames "
          f"({agreement.audio})", file=sys.stderr)
    return 0
