"""Measure, on this machine, whether a bundle keeps up: offline speed per thread count, and streaming.

Offline: the real-time factor (processing time / audio time; below 1 is faster than real time)
of one `audiotok tokenize`-style pass over the input, and the process's peak memory, for each
--threads value ("auto" is onnxruntime's default, what `audiotok tokenize` uses). Each thread
count runs in a fresh process: one warm-up pass, then the best of up to --runs timed passes.

Stream: for each --stream CHUNK:LOOKAHEAD:CONTEXT setting (milliseconds; the default setting of
`audiotok stream` is always measured) and for each --latency-ms target (the setting
`audiotok stream --latency-ms` chooses here, or why none fits), the compute of one window, the
share of a core the stream needs (CPU seconds per audio second), per-frame latency (p50/p95/max
over every frame: its wait for the rest of its chunk and the lookahead, plus its window's measured
compute), the chunk-end latency (lookahead + median compute), agreement with offline units of the
same input, and whether it keeps up with 2x headroom (a window computes in at most half a chunk).
Streams run with --stream-threads threads, like `audiotok stream --threads`.

Last, a recommendation: the threads and stream setting that keep up with 2x headroom, or what to
change when none does. The input is synthetic speech-like audio unless --audio gives a file.
Run time: per thread count a warm-up and up to --runs passes over --seconds of audio (stopping
after 8 s of timed passes), and about 8 s per stream setting; lower --seconds or --runs to shorten it.

Examples:
  audiotok bench units.onnx
  audiotok bench units.onnx --threads 1 2 4 --stream 640:80:640 320:80:320
  audiotok bench units.onnx --latency-ms 250 400 600
  audiotok bench units.onnx --audio speech.flac --seconds 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio.decode import file_blocks
from ..cost import CostModel, bundle_stream_cost, to_gmac
from ..constants import SAMPLE_RATE, frame_count
from ..corpus.engine import available_cores
from ..errors import AudioError, AudiotokError, SettingsError
from ..bundle.session import open_session
from ..stream import DEFAULT_CHUNK_MS, DEFAULT_CONTEXT_MS, DEFAULT_LOOKAHEAD_MS, StreamSettings, default_lengths
from ..stream_target import frame_waits_ms, latency_target
from ..audio.synthetic_speech import speech_like
from .options import add_provider_argument
from .numbers import integer, number, threads

HEADROOM = 2.0  # "keeps up" means the work takes at most half the time it has
MAX_SECONDS = 600.0
WORKER_TIMEOUT_S = 900
BUDGET_S = 8.0  # timed seconds per measurement after which no further pass or window starts
STREAM_SPEC = re.compile(r"^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$")
DEFAULT_STREAM = (DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, DEFAULT_CONTEXT_MS)
DEFAULT_TARGETS = (250.0, 400.0)  # --latency-ms targets measured unless others are given


def stream_spec(text: str) -> tuple[float, float, float]:
    """``CHUNK:LOOKAHEAD:CONTEXT`` in milliseconds, checked as `audiotok stream` checks them."""
    match = STREAM_SPEC.match(text.strip())
    if not match:
        raise SettingsError(f"--stream {text!r} is not CHUNK:LOOKAHEAD:CONTEXT in milliseconds, e.g. 640:80:640")
    chunk, lookahead, context = (float(v) for v in match.groups())
    StreamSettings(chunk, lookahead, context)
    return chunk, lookahead, context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="an audiotok .onnx bundle")
    parser.add_argument("--seconds", type=number("--seconds"), default=30.0, help="length of the offline input")
    parser.add_argument("--threads", type=threads(), nargs="+", default=None, metavar="N",
                        help="onnxruntime threads to measure offline; None: auto (onnxruntime's choice), and 1 when there are more cores")
    parser.add_argument("--stream", nargs="+", default=[], metavar="C:L:X",
                        help="stream settings chunk:lookahead:context in ms, measured besides the default "
                             f"{DEFAULT_CHUNK_MS}:{DEFAULT_LOOKAHEAD_MS}:{DEFAULT_CONTEXT_MS}")
    parser.add_argument("--latency-ms", nargs="+", default=[f"{t:g}" for t in DEFAULT_TARGETS], metavar="MS",
                        help="per-frame latency targets: the setting `audiotok stream --latency-ms` chooses for "
                             "each ('none' for none)")
    parser.add_argument("--stream-threads", type=threads("--stream-threads"), default=1, metavar="N",
                        help="onnxruntime threads per stream (as audiotok stream --threads)")
    parser.add_argument("--runs", type=integer("--runs", high=1000),
                        default=3, help="timed offline passes per thread count (best reported)")
    parser.add_argument("--audio", default=None, metavar="FILE",
                        help="measure on this file (its first --seconds) instead of synthetic speech")
    add_provider_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


@dataclass(frozen=True)
class OfflineResult:
    threads: int | None  # None: onnxruntime's default ("auto")
    rtf: float  # best pass / audio seconds
    median_rtf: float
    cpu_cores: float  # CPU seconds / wall seconds during the best pass
    peak_rss_mb: float
    load_s: float
    gmac_per_wall_second: float | None  # counted compute / best pass


@dataclass(frozen=True)
class StreamResult:
    chunk_ms: float
    lookahead_ms: float
    context_ms: float
    window_ms: float
    windows: int
    compute_ms: float  # median wall time of one window
    compute_p95_ms: float
    cores: float  # CPU seconds per second of audio: the share of a core the stream needs
    latency_ms: float  # chunk-end: lookahead + median window compute
    headroom: float  # chunk / p95 window compute
    keeps_up: bool  # headroom >= HEADROOM
    peak_rss_mb: float
    frame_p50_ms: float  # per frame: its wait for later audio + its window's compute, over every frame
    frame_p95_ms: float
    frame_max_ms: float
    agreement: float  # fraction of streamed frames whose unit equals the offline unit
    target_ms: float | None = None  # the --latency-ms target this setting was chosen for


@dataclass(frozen=True)
class Unreachable:
    target_ms: float
    reason: str  # what this device can do instead


def _targets(values: list[str]) -> list[float]:
    if values == ["none"]:
        return []
    return list(dict.fromkeys(latency_target(v) for v in values))


def _check(args: argparse.Namespace) -> list[tuple[float, float, float]]:
    if not (0 < args.seconds <= MAX_SECONDS):
        raise SettingsError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {args.seconds:g}")
    for value in args.threads or []:
        if value < 1:
            raise SettingsError(f"--threads must be at least 1, got {value}")
    if args.stream_threads < 1:
        raise SettingsError(f"--stream-threads must be at least 1, got {args.stream_threads}")
    if args.runs < 1:
        raise SettingsError(f"--runs must be at least 1, got {args.runs}")
    args.latency_ms = _targets(args.latency_ms)
    settings = [DEFAULT_STREAM]
    for text in args.stream:
        spec = stream_spec(text)
        if spec not in settings:
            settings.append(spec)
    return settings


def _audio(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    limit = int(args.seconds * SAMPLE_RATE)
    if args.audio is None:
        return speech_like(args.seconds), "synthetic speech-like audio"
    pieces, total = [], 0
    for block in file_blocks(args.audio):
        pieces.append(block[: limit - total])
        total += len(pieces[-1])
        if total >= limit:
            break
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if frame_count(len(audio)) < 2:
        raise AudioError(f"{args.audio}: too short to measure (under 2 frames)")
    return audio, args.audio


def _run_worker(spec: dict, folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(spec))
    try:
        done = subprocess.run([sys.executable, "-m", "audiotok.runtime.commands.bench_worker", str(path)],
                              capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AudiotokError(f"bench: the {name} measurement took over {WORKER_TIMEOUT_S} s; try fewer --seconds") from None
    if done.returncode != 0 or not done.stdout.strip():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise AudiotokError(f"bench: the {name} measurement failed ({lines[-1][:200] if lines else done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _offline(measured: dict, threads: int | None, seconds: float, gmac: float | None) -> OfflineResult:
    walls, cpus = measured["walls"], measured["cpus"]
    best = int(np.argmin(walls))
    return OfflineResult(threads, walls[best] / seconds, float(np.median(walls)) / seconds,
                         cpus[best] / walls[best], measured["peak_rss_mb"], measured["load_s"],
                         gmac * seconds / walls[best] if gmac else None)


def _stream(measured: dict, setting: tuple[float, float, float] | None, target: float | None = None) -> StreamResult:
    if setting is None:
        chosen = measured["chosen"]
        setting = (chosen["chunk_ms"], chosen["lookahead_ms"], chosen["context_ms"])
    chunk, lookahead, context = setting
    computes = np.asarray(measured["computes"]) * 1000
    if not len(computes):
        raise AudiotokError(f"bench: the input is too short for one {chunk:g} ms stream chunk; use more --seconds")
    median, p95 = float(np.median(computes)), float(np.percentile(computes, 95))
    headroom = chunk / p95
    frames = (frame_waits_ms(chunk, lookahead)[None, :] + computes[:, None]).ravel()
    return StreamResult(chunk, lookahead, context, chunk + lookahead + context, len(computes), median, p95,
                        measured["cpu_s"] / measured["audio_s"], lookahead + median, headroom, headroom >= HEADROOM,
                        measured["peak_rss_mb"], float(np.percentile(frames, 50)), float(np.percentile(frames, 95)),
                        float(frames.max()), measured["agreement"], target)


def recommend(offline: list[OfflineResult], streams: list[StreamResult], precision: str) -> str:
    """One line: what keeps up with 2x headroom here, or what to change."""
    parts = []
    fast = [r for r in offline if r.rtf * HEADROOM <= 1.0]
    if fast:
        pick = min(fast, key=lambda r: (r.threads or 1 << 30))
        parts.append(f"offline: --threads {pick.threads or 'auto'} runs {1 / pick.rtf:.1f}x faster than real time")
    ok = [s for s in streams if s.keeps_up]
    if ok:
        pick = ok[0] if ok[0] == streams[0] else min(ok, key=lambda s: s.frame_p95_ms)
        parts.append(f"stream: {pick.chunk_ms:g}:{pick.lookahead_ms:g}:{pick.context_ms:g} keeps up with "
                     f"{pick.headroom:.1f}x headroom, {pick.cores:.2f} of a core, ~{pick.frame_p95_ms:.0f} ms per-frame "
                     f"latency (p95)")
    if not fast or not ok:
        cheaper = ["the int8 bundle (audiotok export --precision int8)"] if precision != "int8" else []
        cheaper += ["a lower --layer", "a shorter context (e.g. --stream 640:80:320)"]
        what = "nothing measured" if not fast and not ok else ("no thread count" if not fast else "no stream setting")
        parts.append(f"{what} keeps up with {HEADROOM:g}x headroom here: try {', '.join(cheaper)}"
                     + (", or more --stream-threads" if not ok else ""))
    return "; ".join(parts)


def _print_tables(report: dict) -> None:
    print(f"{report['bundle']}: {report['encoder_type']} layer {report['layer']}, k={report['k']}, "
          f"{report['precision']}; {report['audio_seconds']:g} s of {report['audio']}; {report['cores']} cores; "
          f"load average {report['load_average'][0]:.2f} before, {report['load_average'][1]:.2f} after")
    print(f"compute: {report['gmac_per_second']:.3g} GMAC per audio second offline, "
          f"{report['stream_gmac_per_second']:.3g} for the default stream\n")
    print("offline (fresh process per thread count; warm-up, then best of --runs)")
    print("| threads | RTF | x real time | median RTF | CPU cores used | GMAC/s | peak RSS MB | load s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["offline"]:
        gmacs = f"{r['gmac_per_wall_second']:.1f}" if r["gmac_per_wall_second"] else "-"
        print(f"| {r['threads'] or 'auto'} | {r['rtf']:.3f} | {1 / r['rtf']:.1f} | {r['median_rtf']:.3f} | "
              f"{r['cpu_cores']:.2f} | {gmacs} | {r['peak_rss_mb']:.0f} | {r['load_s']:.2f} |")
    print(f"\nstream (threads {report['stream_threads']}; fresh process per setting)")
    print("| target ms | chunk:lookahead:context ms | window ms | compute ms (p95) | cores | per-frame p50 ms | "
          "p95 ms | max ms | chunk-end ms | agreement | headroom | keeps up |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in report["streams"]:
        target = f"{s['target_ms']:g}" if s["target_ms"] else "-"
        print(f"| {target} | {s['chunk_ms']:g}:{s['lookahead_ms']:g}:{s['context_ms']:g} | {s['window_ms']:g} | "
              f"{s['compute_ms']:.0f} ({s['compute_p95_ms']:.0f}) | {s['cores']:.3f} | {s['frame_p50_ms']:.0f} | "
              f"{s['frame_p95_ms']:.0f} | {s['frame_max_ms']:.0f} | {s['latency_ms']:.0f} | {s['agreement']:.1%} | "
              f"{s['headroom']:.1f}x | {'yes' if s['keeps_up'] else 'no'} |")
    for u in report["unreachable"]:
        print(f"| {u['target_ms']:g} | cannot: {u['reason']} |")
    print(f"\nrecommendation: {report['recommendation']}")


def run(args: argparse.Namespace) -> int:
    settings = _check(args)
    _, manifest = open_session(args.bundle, providers=args.provider)
    entry = manifest.stream_entry  # the bundle's default stream (with its attention cache) is measured first
    default = default_lengths(entry is not None, entry is not None and entry.kv is not None)
    settings = [default, *(s for s in settings if s != DEFAULT_STREAM and s != default)]
    audio, source = _audio(args)
    seconds = len(audio) / SAMPLE_RATE
    cores = available_cores()
    thread_counts = args.threads or ([None, 1] if cores > 1 else [None])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    jobs = ([("offline", t) for t in dict.fromkeys(thread_counts)] + [("stream", s) for s in settings]
            + [("target", t) for t in args.latency_ms])
    results: list[tuple[str, object, dict]] = []
    with tempfile.TemporaryDirectory(prefix="audiotok-bench-") as tmp:
        np.save(Path(tmp) / "audio.npy", audio)
        base = {"bundle": str(args.bundle), "audio": str(Path(tmp) / "audio.npy"), "providers": args.provider}
        for i, (mode, value) in enumerate(tqdm(jobs, desc="bench", unit="run", disable=None, file=sys.stderr)):
            spec = {**base, "mode": mode, "runs": args.runs, "budget_s": BUDGET_S}
            if mode == "offline":
                spec["threads"] = value
            elif mode == "stream":
                spec.update(threads=args.stream_threads, stream=dict(zip(("chunk_ms", "lookahead_ms", "context_ms"), value)))
            else:
                spec.update(mode="stream", threads=args.stream_threads, stream={"latency_ms": value})
            results.append((mode, value, _run_worker(spec, Path(tmp), f"{mode}-{i}")))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model = CostModel(args.bundle, manifest)
    frames = frame_count(len(audio))
    gmac = to_gmac(sum(model.macs(frames).values()) / seconds)
    offline = [_offline(m, v, seconds, gmac) for mode, v, m in results if mode == "offline"]
    streams = [_stream(m, v) for mode, v, m in results if mode == "stream"]
    streams += [_stream(m, None, v) for mode, v, m in results if mode == "target" and "unreachable" not in m]
    unreachable = [Unreachable(v, m["unreachable"]) for mode, v, m in results if mode == "target" and "unreachable" in m]
    auto = next((r for r in offline if r.threads is None), offline[0])
    report = {
        "bundle": str(args.bundle), "encoder_type": manifest.encoder_type, "layer": manifest.layer, "k": manifest.k,
        "precision": manifest.precision, "audio": source, "audio_seconds": round(seconds, 3), "cores": cores,
        "gmac_per_second": gmac,
        "stream_gmac_per_second": bundle_stream_cost(model, manifest, default)["gmac_per_second"],
        "rtf": auto.rtf, "threads": auto.threads, "stream": asdict(streams[0]), "stream_threads": args.stream_threads,
        "offline": [asdict(r) for r in offline], "streams": [asdict(s) for s in streams],
        "unreachable": [asdict(u) for u in unreachable],
        "recommendation": recommend(offline, streams, manifest.precision),
        "load_average": [load_before, load_after],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_tables(report)
    return 0
