"""Print a bundle's manifest (encoder, layer, k, normalization, precision, agreement...) as JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .session import open_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")


def run(args: argparse.Namespace) -> int:
    _, manifest = open_session(args.bundle)
    print(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    return 0
