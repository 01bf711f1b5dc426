"""Tokenize live audio: units are printed as soon as they are final, one line per chunk.

Input is the microphone (default), raw PCM on stdin (`--input -`, s16le unless --f32le) or an
audio file fed as a stream (to check settings against `audiotok tokenize`). Each window the
bundle runs on is --context-ms of past audio + a --chunk-ms chunk + --lookahead-ms of future
audio; the chunk's units are printed (and flushed) once its lookahead has arrived, so a frame's
unit appears after the rest of its chunk, the lookahead and one window's compute. --latency-ms
chooses the three lengths for a per-frame latency target on this device instead (the choice is
printed on stderr; a target out of reach is refused before any audio is read). End of input, --seconds
and Ctrl-C all print the remaining frames and exit 0; input that ends before its first sample
is an error, as in `audiotok tokenize` ("empty audio"). A read error or broken audio mid-stream
prints the remaining frames of what arrived, then one error line (exit 1). Overruns (audio lost
because the device or the tokenizer fell behind) are reported on stderr.

txt prints each chunk's units as one line of space-separated ids; jsonl prints one object per
chunk: {"frame": index of its first frame, "seconds": its start, "frames": count, "units": [...]}
(with --dedup, repeats are collapsed across chunk edges too, and "starts" gives each unit's frame).

Examples:
  audiotok stream units.onnx                                   # default microphone, until Ctrl-C
  audiotok stream units.onnx --device 2 --seconds 30 --format jsonl
  arecord -q -f S16_LE -r 16000 -c 1 | audiotok stream units.onnx --input -
  ffmpeg -loglevel error -i talk.mp3 -f s16le -ac 1 -ar 16000 - | audiotok stream units.onnx --input -
  sox -q -d -t raw -e signed -b 16 -c 1 -r 16000 - | audiotok stream units.onnx --input -
  audiotok stream units.onnx --latency-ms 250                  # settings chosen for this device
  audiotok stream units.onnx --input speech.wav --chunk-ms 320 --lookahead-ms 160
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import numpy as np

from ..audio.decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, decoded_blocks, open_audio
from ..errors import AudioError, AudiotokError, BundleError, SettingsError
from ..audio.pcm import pcm_blocks
from ..audio.preprocess import CHANNEL_MEAN, parse_channel
from ..stream import (CNN_CACHE_DEFAULTS, DEFAULT_CHUNK_MS, DEFAULT_CONTEXT_MS, DEFAULT_LOOKAHEAD_MS, RECOMPUTE_DEFAULTS, StreamSettings,
                      UnitChunk)
from ..stream_target import latency_target
from ..tokenizer import Tokenizer
from ..unit_runs import dedup
from .options import add_provider_argument
from .numbers import integer, number, threads

if TYPE_CHECKING:
    from ..audio.microphone import Microphone

STREAM_FORMATS = ("txt", "jsonl")  # one line per emitted chunk
STDIN_RATE = 16_000  # Hz, when --rate is not given for --input -
FILE_BLOCK_SECONDS = 0.1  # a file is fed in blocks this long, like a live source
OVERRUN_REPORT_SECONDS = 1.0  # at most one overrun warning per second
MAX_CHANNELS = 64  # of mic or stdin PCM: more than any capture device a speech stream comes from
PIPE_EXAMPLE = "e.g. arecord -q -f S16_LE -r 16000 -c 1 | audiotok stream BUNDLE --input -"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (where there is one to show), and the examples above kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.add_argument("bundle", help="an audiotok .onnx bundle (from `audiotok export`)")
    parser.add_argument("--input", default="mic", help="'mic', '-' for raw PCM on stdin, or an audio file")
    parser.add_argument("--device", default=None,
                        help="microphone: device index or part of its name (when not given: the system's default input)")
    parser.add_argument("--rate", type=integer("--rate"), default=None,
                        help=f"sample rate in Hz of the mic or stdin PCM, resampled to 16 kHz (when not given: stdin "
                             f"{STDIN_RATE}; mic {STDIN_RATE} if the device offers it, else its own)")
    parser.add_argument("--channels", type=integer("--channels"),
                        default=1, help="channels of the mic or stdin PCM (mixed to mono)")
    parser.add_argument("--channel", type=str, default=None,
                        help="'mean' mixes all channels, N takes channel N alone (0 is the first; audioTokenizer "
                             "takes 0) (when not given: the bundle's, 'mean' unless exported otherwise)")
    parser.add_argument("--f32le", action="store_true", help="stdin PCM is 32-bit float, not signed 16-bit")
    parser.add_argument("--seconds", type=number("--seconds"),
                        default=None, help="stop after this much audio (when not given: at end of input or Ctrl-C)")
    parser.add_argument("--latency-ms", default=None,
                        help="per-frame latency target (p95, ms): chunk, lookahead and context are chosen for it "
                             "after a short calibration on this device; instead of the three below")
    defaults = ("with the attention cache / with a stream entry point without it / without one: "
                "{} / {} / {}")
    lengths = list(zip((DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, DEFAULT_CONTEXT_MS), CNN_CACHE_DEFAULTS, RECOMPUTE_DEFAULTS))
    parser.add_argument("--chunk-ms", type=number("--chunk-ms"), default=None,
                        help="frames emitted per window, in ms (a multiple of 20; default " + defaults.format(*lengths[0]) + ")")
    parser.add_argument("--lookahead-ms", type=number("--lookahead-ms"), default=None,
                        help="future audio each window sees, in ms (adds that much latency; default "
                             + defaults.format(*lengths[1]) + ")")
    parser.add_argument("--context-ms", type=number("--context-ms"), default=None,
                        help="past audio each window sees, in ms (default " + defaults.format(*lengths[2]) + "; "
                             "with the attention cache it costs only attention, without it the whole transformer)")
    parser.add_argument("--no-kv-cache", action="store_true",
                        help="rerun the transformer on the whole window instead of attending to the keys and values "
                             "the context's frames had when they were emitted (bundles with an attention cache: "
                             "docs/streaming.md measures both); then a window covering the input gives offline units")
    parser.add_argument("--format", choices=STREAM_FORMATS, default="txt", help="txt: one line of ids per chunk; "
                        "jsonl: one object per chunk")
    parser.add_argument("--dedup", action="store_true", help="collapse repeated units, also across chunk edges")
    add_provider_argument(parser)
    parser.add_argument("--threads", type=threads(), default=1,
                        help="onnxruntime intra-op threads per stream (1 keeps a stream within one core)")


def _check(args: argparse.Namespace) -> StreamSettings | float:
    """Every setting, before the bundle or any audio is opened: the window lengths, or a latency target."""
    lengths = (args.chunk_ms, args.lookahead_ms, args.context_ms)
    if args.latency_ms is not None:
        if any(v is not None for v in lengths):
            raise SettingsError("--latency-ms chooses --chunk-ms, --lookahead-ms and --context-ms; pass one or the other")
        settings: StreamSettings | float = latency_target(args.latency_ms)
    else:
        defaults = (DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, DEFAULT_CONTEXT_MS)
        settings = StreamSettings(*(d if v is None else v for v, d in zip(lengths, defaults)))
    if args.seconds is not None and not args.seconds > 0:
        raise SettingsError(f"--seconds must be positive, got {args.seconds:g}")
    if args.rate is not None and not MIN_SAMPLE_RATE <= args.rate <= MAX_SAMPLE_RATE:
        raise SettingsError(f"--rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, got {args.rate}")
    if not 1 <= args.channels <= MAX_CHANNELS:
        raise SettingsError(f"--channels must be 1..{MAX_CHANNELS}, got {args.channels}")
    if args.threads < 1:
        raise SettingsError(f"--threads must be at least 1, got {args.threads}")
    is_file = args.input not in ("mic", "-")
    if is_file and (args.rate is not None or args.channels != 1):
        raise SettingsError(f"--rate and --channels describe mic or stdin audio; {args.input} carries its own")
    if args.f32le and args.input != "-":
        raise SettingsError("--f32le describes raw PCM on stdin; use it with --input -")
    if args.device is not None and args.input != "mic":
        raise SettingsError("--device picks a microphone; use it with --input mic")
    if args.channel is not None:
        args.channel = parse_channel(args.channel)
        if args.channel != CHANNEL_MEAN and not is_file and args.channel >= args.channels:
            raise SettingsError(f"--channel {args.channel} is beyond the {args.channels} channel(s) of --channels "
                                f"(channels count from 0)")
    if args.input == "-":
        check_stdin()
    return settings


def check_stdin() -> None:
    """stdin must be something to read PCM from: not closed (``<&-``), not a terminal.

    (Python itself refuses to start with a folder on stdin.)
    """
    stream = sys.stdin
    try:
        fd = stream.fileno() if stream is not None else -1
        is_open = fd >= 0 and os.fstat(fd) is not None
    except (OSError, ValueError, AttributeError):
        is_open = False
    if not is_open:
        raise SettingsError(f"--input - reads raw PCM from stdin, but stdin is closed ({PIPE_EXAMPLE})")
    if stream.isatty():
        raise SettingsError(f"--input - reads raw PCM from a pipe, but stdin is a terminal ({PIPE_EXAMPLE})")


@contextmanager
def open_source(args: argparse.Namespace, channel: int | str = CHANNEL_MEAN
                ) -> Iterator[tuple[int, Iterator[np.ndarray], Microphone | None]]:
    """(sample rate, blocks, microphone or None) for --input; a file's ``channel`` is picked as it is decoded."""
    if args.input == "-":
        rate = args.rate or STDIN_RATE
        yield rate, pcm_blocks(sys.stdin.buffer, encoding="f32le" if args.f32le else "s16le",
                               channels=args.channels, rate=rate), None
    elif args.input == "mic":
        from ..audio.microphone import Microphone

        with Microphone(args.device, rate=args.rate, channels=args.channels) as mic:
            print(f"audiotok: listening on input device {mic.device} {mic.name!r} at {mic.rate} Hz; "
                  f"Ctrl-C to stop", file=sys.stderr)
            yield mic.rate, mic.blocks(), mic
    else:
        with open_audio(args.input) as f:
            yield f.samplerate, decoded_blocks(f, source=args.input, block_seconds=FILE_BLOCK_SECONDS,
                                               channel=channel, on_failure="the units before it were printed"), None


def limit_seconds(blocks: Iterator[np.ndarray], seconds: float | None, rate: int) -> Iterator[np.ndarray]:
    """Pass blocks through until ``seconds`` of audio, cutting the last one to the exact sample."""
    if seconds is None:
        yield from blocks
        return
    left = int(round(seconds * rate))
    for block in blocks:
        yield block[:left]
        left -= len(block)
        if left <= 0:
            return


class ChunkWriter:
    """Writes each chunk as soon as it is final (one line, flushed), carrying --dedup across chunks."""

    def __init__(self, out: IO[str], fmt: str, collapse: bool) -> None:
        self.out, self.fmt, self.collapse = out, fmt, collapse
        self._last: int | None = None  # last unit written, for --dedup across chunk edges

    def write(self, chunks: list[UnitChunk]) -> None:
        for chunk in chunks:
            line = self._line(chunk)
            if line is not None:
                self.out.write(line + "\n")
                self.out.flush()

    def _line(self, chunk: UnitChunk) -> str | None:
        units, starts = chunk.units, None
        if self.collapse:
            units, lengths = dedup(chunk.units)
            starts = chunk.frame + np.r_[0, np.cumsum(lengths)[:-1]]
            if self._last is not None and units[0] == self._last:
                units, starts = units[1:], starts[1:]
            self._last = int(chunk.units[-1])
        if self.fmt == "txt":
            return " ".join(map(str, units.tolist())) if len(units) else None
        record: dict[str, object] = {"frame": chunk.frame, "seconds": round(chunk.seconds, 2),
                                     "frames": len(chunk.units), "units": units.tolist()}
        if starts is not None:
            record["starts"] = starts.tolist()
        return json.dumps(record)


class OverrunReport:
    """Tells the user on stderr that microphone audio was lost: at most once a second, and at the end."""

    def __init__(self, mic: Microphone | None) -> None:
        self.mic = mic
        self._reported = 0
        self._when = 0.0

    def check(self, *, final: bool = False) -> None:
        if self.mic is None or self.mic.overruns == self._reported:
            return
        now = time.monotonic()
        if final or now - self._when >= OVERRUN_REPORT_SECONDS:
            self._reported, self._when = self.mic.overruns, now
            print(f"audiotok: warning: microphone overruns: {self._reported} block(s) of audio lost so far "
                  f"({self.mic.overflows} by the audio system, {self.mic.dropped} while the tokenizer fell behind)",
                  file=sys.stderr)


@contextmanager
def interrupt_between_blocks() -> Iterator[dict[str, bool]]:
    """Ctrl-C while waiting for audio stops at once; during inference, after the current block.

    Either way no frame is half-processed, so the final flush emits every remaining frame once.
    ``state["busy"]`` marks inference; ``state["stop"]`` is set by a deferred Ctrl-C.
    """
    state = {"busy": False, "stop": False}

    def handler(signum, frame) -> None:
        state["stop"] = True
        if not state["busy"]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _settings_for(tokenizer: Tokenizer, target: StreamSettings | float,
                  given: tuple[float | None, ...] = (None, None, None), kv_cache: bool = True) -> StreamSettings:
    """The window lengths: given (the bundle's defaults for those not given), or chosen for a latency
    target on this device (said on stderr)."""
    if isinstance(target, StreamSettings):
        lengths = (d if v is None else v for v, d in zip(given, tokenizer.default_lengths(kv_cache)))
        return StreamSettings(*lengths)
    chosen = tokenizer.settings_for_latency(target, kv_cache=kv_cache)
    print(f"audiotok: --latency-ms {target:g}: {chosen.describe()} (predicted on this device)", file=sys.stderr)
    return chosen.settings


def run(args: argparse.Namespace) -> int:
    target = _check(args)
    tokenizer = Tokenizer(args.bundle, providers=args.provider, threads=args.threads, channel=args.channel)
    # a target this device cannot reach fails here, before audio
    settings = _settings_for(tokenizer, target, (args.chunk_ms, args.lookahead_ms, args.context_ms), not args.no_kv_cache)
    writer = ChunkWriter(sys.stdout, args.format, args.dedup)
    with open_source(args, tokenizer.preprocess.channel) as (rate, blocks, mic), interrupt_between_blocks() as state:
        stream = tokenizer.stream(chunk_ms=settings.chunk_ms, lookahead_ms=settings.lookahead_ms,
                                  context_ms=settings.context_ms, sample_rate=rate, kv_cache=not args.no_kv_cache)
        overruns = OverrunReport(mic)
        failure: AudiotokError | None = None
        received, interrupted = 0, False
        try:
            for block in limit_seconds(blocks, args.seconds, rate):
                received += len(block)
                state["busy"] = True
                writer.write(stream.accept(block))
                state["busy"] = False
                overruns.check()
                if state["stop"]:
                    break
        except KeyboardInterrupt:
            interrupted = True
        except BundleError:  # its units so far cannot be trusted either: nothing more is written
            raise
        except AudiotokError as exc:  # e.g. the device stopped: what arrived before it is still good
            failure = exc
        state["busy"] = True  # a second Ctrl-C during the final flush waits for it
        writer.write(stream.flush())
        overruns.check(final=True)
    if failure is not None:
        raise failure
    if received == 0 and not (interrupted or state["stop"]):  # the same rule as `audiotok tokenize`
        raise AudioError(f"{'stdin' if args.input == '-' else args.input}: empty audio (no samples)")
    return 0
