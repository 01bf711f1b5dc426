"""Print a bundle's manifest (encoder, layer, k, normalization, precision, agreement...) as JSON.

With --centroids, also write the bundle's unit vocabulary as a [k, dim] float32 .npy (checked
bit for bit against the manifest's centroids_sha256), e.g. to re-export it with another encoder
precision or to use it elsewhere.

Examples:
  audiotok info units.onnx
  audiotok info units.onnx --centroids units.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import numpy as np

from .bundle_centroids import extract_centroids
from .output import atomic_path
from .session import open_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("--centroids", metavar="OUT.npy", default=None,
                        help="also write the bundle's centroids here ([k, dim] float32 .npy)")


def run(args: argparse.Namespace) -> int:
    _, manifest = open_session(args.bundle)
    if args.centroids:
        centroids = extract_centroids(args.bundle, manifest)
        with atomic_path(args.centroids) as tmp, open(tmp, "wb") as f:
            np.save(f, centroids)
        print(f"audiotok: wrote {args.centroids}: {manifest.k} x {manifest.dim} centroids", file=sys.stderr)
    print(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    return 0
