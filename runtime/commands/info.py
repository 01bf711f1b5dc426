"""Print a bundle's manifest (encoder, layer, k, normalization, precision, agreement...) as JSON.

The JSON also says the bundle's ``layout``: ``onnx`` (one plain ONNX file, what every ONNX tool
opens) or ``container`` (one file of any size: the graph, then its weights, which the runtime
memory-maps; docs/bundle_container.md). The JSON also holds ``compute``: what the bundle costs, counted from its graph (every MatMul, Gemm
and Conv by shape, int8 forms included): ``gmac_per_second`` (billions of multiply-accumulates per
second of audio, for a 30 s input in one pass), split into ``stages_gmac_per_second`` (cnn,
positional_conv, transformer_linear, attention, nearest_centroid), ``parameters``,
``file_bytes``, and ``stream``: the cost of the default stream (one context + chunk + lookahead
window per chunk), per window and per audio second. Divide ``gmac_per_second`` by a core's
sustained GMAC/s to estimate the real-time factor on another machine; `audiotok bench` measures it.
Counting runs the bundle on three short inputs (well under a second for a base-size model);
--no-compute skips it.

With --centroids, also write the bundle's unit vocabulary as a [k, dim] float32 .npy (checked
bit for bit against the manifest's centroids_sha256), e.g. to re-export it with another encoder
precision or to use it elsewhere.

The frame rule (manifest "frame_rule") says how many units n samples at 16 kHz give:
  floor  (n - 400) // 320 + 1 (0 below 400): whole frames only; audiotok's default
  pad    a partial last frame is zero-padded to a full one (audioTokenizer's rule):
         (n - 80 + 319) // 320 for n > 80, i.e. one frame more than floor unless (n - 400) % 320 == 0

Examples:
  audiotok info units.onnx
  audiotok info units.onnx --centroids units.npy
  audiotok info units.onnx | jq .compute.gmac_per_second
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..bundle.centroids import extract_centroids
from ..bundle.container import layout
from ..cost import bundle_compute
from ..formats.collisions import Place, check_apart
from ..formats.staging import atomic_path, check_target
from ..audio.preprocess import FRAME_COUNT_RULE
from ..bundle.session import open_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("--centroids", metavar="OUT.npy", default=None,
                        help="also write the bundle's centroids here ([k, dim] float32 .npy)")
    parser.add_argument("--no-compute", dest="compute", action="store_false",
                        help="leave out the compute count (print the manifest only, without running the bundle)")


def run(args: argparse.Namespace) -> int:
    if args.centroids:
        check_apart([Place(f"--centroids {args.centroids}", Path(args.centroids))],
                    [Place(f"the bundle {args.bundle}", Path(args.bundle))])
        check_target(args.centroids)
    _, manifest = open_session(args.bundle)
    if args.centroids:
        centroids = extract_centroids(args.bundle, manifest)
        with atomic_path(args.centroids) as tmp, open(tmp, "wb") as f:
            np.save(f, centroids)
        print(f"audiotok: wrote {args.centroids}: {manifest.k} x {manifest.dim} centroids", file=sys.stderr)
    described = {**asdict(manifest), "layout": layout(args.bundle)}
    if args.compute:
        described["compute"] = bundle_compute(args.bundle, manifest)
    print(json.dumps(described, indent=2, sort_keys=True))
    print(f"audiotok: {FRAME_COUNT_RULE[manifest.frame_rule]}", file=sys.stderr)
    return 0
