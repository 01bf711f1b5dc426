"""Draw a recording's waveform, spectrogram and units on one time axis, as an image.

Units are computed on the whole file exactly as `audiotok tokenize` does; --start/--seconds only
choose the stretch that is drawn. Needs matplotlib: pip install 'audiotok[plot]'.

Examples:
  audiotok plot units.onnx speech.wav -o speech.png
  audiotok plot units.onnx long.flac --start 12.5 --seconds 5 -o zoom.png --width 2400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..audio.decode import file_blocks
from ..constants import SAMPLE_RATE
from ..errors import AudioError, SettingsError
from ..formats.collisions import Place, check_apart
from ..plotting.canvas import image_format, new_figure, save_figure
from ..plotting.unit_plot import PlotWindow, draw_units_figure
from ..audio.preprocess import prepared_blocks
from ..tokenizer import Tokenizer
from .options import add_provider_argument
from .numbers import integer, number

MAX_PIXELS = 20_000  # per side of a plot: an image larger than any screen or page


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("audio", help="one audio file")
    parser.add_argument("-o", "--output", required=True, help="image to write (.png, .svg or .pdf)")
    parser.add_argument("--start", type=number("--start"), default=0.0, help="first second drawn")
    parser.add_argument("--seconds", type=number("--seconds"),
                        default=None, help="seconds drawn (None: to the end of the file)")
    parser.add_argument("--width", type=integer("--width", low=16, high=MAX_PIXELS),
                        default=1600, help="image width in pixels")
    parser.add_argument("--height", type=integer("--height", low=16, high=MAX_PIXELS),
                        default=900, help="image height in pixels")
    add_provider_argument(parser)


def run(args: argparse.Namespace) -> int:
    image_format(args.output)
    check_apart([Place(f"-o {args.output}", Path(args.output))], [
        Place(f"the bundle {args.bundle}", Path(args.bundle)), Place(f"the input {args.audio}", Path(args.audio))])
    if args.start < 0 or (args.seconds is not None and args.seconds <= 0):
        raise SettingsError("--start must be >= 0 and --seconds > 0")
    figure = new_figure(args.width, args.height)  # fails early when matplotlib is missing
    tokenizer = Tokenizer(args.bundle, providers=args.provider)
    blocks = list(file_blocks(args.audio, channel=tokenizer.preprocess.channel))
    if not blocks:
        raise AudioError(f"{args.audio}: empty audio (no samples)")
    samples = np.concatenate(blocks)
    duration = len(samples) / SAMPLE_RATE
    if args.start >= duration:
        raise AudioError(f"{args.audio}: --start {args.start} s is past the end ({duration:.2f} s)")
    stop = duration if args.seconds is None else min(duration, args.start + args.seconds)
    _, prepared = prepared_blocks(lambda: iter([samples]), tokenizer.preprocess)  # the bundle's frame rule
    units = tokenizer.tokenize_blocks(prepared, source=args.audio)
    m = tokenizer.manifest
    title = f"{Path(args.audio).name}: {m.encoder} layer {m.layer}, k={m.k}"
    draw_units_figure(figure, samples, units, PlotWindow(args.start, stop), k=m.k, title=title)
    save_figure(figure, args.output)
    print(f"audiotok: wrote {args.output} ({args.start:.2f}-{stop:.2f} s of {duration:.2f} s)", file=sys.stderr)
    return 0
