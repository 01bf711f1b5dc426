"""Export an encoder cut at its layer plus k-means centroids as ONE ONNX graph: waveform in, units out.

The bundle carries its own manifest (encoder, layer, k, normalization, precision, provenance and
the agreement with torch measured at export), so it cannot be used with the wrong layer later.

Precisions:
  fp32  exact: the units equal torch's (export fails below 99.9% of frames)
  int8  for CPUs: about 3x smaller; transformer MatMuls in int8, other groups only where measured
        harmless (default floor 95% of frames equal to torch's)
  fp16  for GPU providers: half the size, fp16 inside, fp32 distances (default floor 98%)
Below --min-agreement the export fails and writes nothing. `audiotok verify` measures the same
agreement on your own audio.

--centroids takes audiotok's own .npy, or an existing vocabulary, recognised from its content:
a .npy array, a torch .pt (tensor or state dict with one k x dim tensor), a scikit-learn
KMeans/MiniBatchKMeans pickle (fairseq/GSLM km.bin, any scikit-learn version), or a faiss
flat/IVF index (needs faiss-cpu). Imported vocabularies carry no layer: pass --layer.

Coming from audioTokenizer (mHuBERT-147, channel 0, tail padded to a full frame):
  audiotok export --model utter-project/mHuBERT-147 --centroids centroids.mhubert-147.k500.centroids.npy \
      --pad-last-frame --channel 0 -o mhubert-500.onnx     # or its .kmeans_faiss.index; add --feature-norm l2
                                                           # if it was trained with l2_norm

Examples:
  audiotok export --model logmel --centroids units.npy -o units.onnx
  audiotok export --model facebook/hubert-base-ls960 --layer 6 --centroids km.bin -o hubert50.onnx
  audiotok export --model hubert-base/ --centroids km500.npy --precision int8 --calibration speech/ -o km500-int8.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from audiotok.models.huggingface import NORMALIZE_CHOICES
from audiotok.runtime.commands.numbers import MAX_LAYER, integer, number
from audiotok.runtime.commands.options import add_provider_argument
from audiotok.models.vocabulary_sidecar import sidecar_path
from audiotok.runtime.formats.collisions import Place, check_apart, input_places
from audiotok.runtime.formats.staging import check_target
from audiotok.runtime.bundle.manifest import PRECISIONS
from audiotok.runtime.audio.preprocess import FEATURE_NORMS

from .bundle import DEFAULT_MIN_AGREEMENT, ExportConfig, export_bundle
from .container import LAYOUT_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="logmel",
                        help="the encoder the centroids were fitted with: 'logmel', a hub id or a local folder")
    parser.add_argument("--layer", type=integer("--layer", low=0, high=MAX_LAYER), default=None,
                        help="hidden_states index (default: the layer recorded beside the centroids, else 6)")
    parser.add_argument("--centroids", required=True, help="centroids: .npy from `audiotok train`, or .npy/.pt/km.bin (scikit-learn pickle)/faiss index")
    parser.add_argument("-o", "--output", required=True, help="bundle to write (.onnx)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (exact), int8 (CPU: smaller, faster) or fp16 (GPU providers)")
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="auto",
                        help="waveform normalization; auto reads the checkpoint's feature extractor")
    defaults = ", ".join(f"{p} {v}" for p, v in DEFAULT_MIN_AGREEMENT.items())
    parser.add_argument("--min-agreement", type=number("--min-agreement"), default=None,
                        help=f"refuse the bundle if its units equal torch's on fewer frames than this fraction "
                             f"(default per precision: {defaults})")
    parser.add_argument("--audio", nargs="+", default=[],
                        help="audio for the agreement check (default: the training data, else a synthetic signal)")
    parser.add_argument("--calibration", nargs="+", default=[], metavar="DIR",
                        help="int8: audio files or folders to calibrate activation ranges on (default: the "
                             "agreement-check audio)")
    add_provider_argument(parser, " to measure the agreement on")
    parser.add_argument("--pad-last-frame", action="store_true", default=None,
                        help="frame rule 'pad' (audioTokenizer's): a partial last frame is zero-padded to a full one "
                             "offline, in corpora and in streams (default: what the centroids' sidecar records, "
                             "else 'floor': whole frames only)")
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default=None,
                        help="l2: features are L2-normalised inside the graph before the nearest centroid, for "
                             "vocabularies clustered that way (audioTokenizer's l2_norm) (default: what the "
                             "sidecar records, else none; an imported vocabulary needs it given)")
    parser.add_argument("--channel", default=None,
                        help="the channel the bundle tokenizes multichannel audio with: 'mean' or N (0 is the "
                             "first; audioTokenizer takes 0); tokenize/stream --channel overrides it "
                             "(default: what the sidecar records, else mean)")
    parser.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto",
                        help="the bundle's file layout: onnx (one plain .onnx, up to 2 GB), container (one file "
                             "of any size, weights memory-mapped; docs/bundle_container.md), or auto: onnx "
                             "while the model fits one protobuf, else container")


def _check_output(args: argparse.Namespace) -> None:
    """Before minutes of export: -o is none of the files export reads, and not a folder or link."""
    inputs = [Place(f"--centroids {args.centroids}", Path(args.centroids)),
              Place(f"the sidecar {sidecar_path(args.centroids)} (beside --centroids)", sidecar_path(args.centroids)),
              *input_places("--audio", args.audio), *input_places("--calibration", args.calibration)]
    if Path(args.model).is_dir():  # a checkpoint folder is read whole: nothing may be written inside it
        inputs.append(Place(f"the checkpoint folder {args.model}", Path(args.model), folder=True))
    check_apart([Place(f"-o {args.output}", Path(args.output))], inputs)
    check_target(args.output)


def run(args: argparse.Namespace) -> int:
    _check_output(args)
    config = ExportConfig(model=args.model, centroids=args.centroids, output=args.output, layer=args.layer,
                          normalize=args.normalize, precision=args.precision, min_agreement=args.min_agreement,
                          audio=args.audio, calibration=args.calibration, providers=args.provider,
                          pad_last_frame=args.pad_last_frame, feature_norm=args.feature_norm, channel=args.channel,
                          layout=args.layout)
    with tqdm(desc="export", unit="step", disable=None, file=sys.stderr) as bar:
        def progress(step: str) -> None:
            bar.set_description(step)
            bar.update(1)

        manifest, agreement = export_bundle(config, progress)
    print(f"audiotok: wrote {args.output}: {manifest.encoder} layer {manifest.layer}, k={manifest.k}, "
          f"{manifest.precision}; units equal torch's on {agreement.fraction:.4%} of {agreement.frames} frames "
          f"({agreement.audio})", file=sys.stderr)
    return 0
