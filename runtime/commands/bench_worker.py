"""One `audiotok bench` measurement, alone in a fresh process; prints one JSON line.

Each measurement runs in its own process so that nothing left by another (a thread pool still
spinning, a grown allocator arena, warm caches for other shapes) changes its time: the path is
timed as it runs when a user runs it. ``python -m audiotok.runtime.commands.bench_worker SPEC.json``.

Offline: load the bundle, tokenize the input once to warm up, then time up to ``runs`` passes
(stopping early after ``budget_s``); report every pass, CPU time, and the process's peak RSS.
Stream: feed the input through a :class:`~audiotok.runtime.stream.Stream` in 20 ms blocks as fast
as it takes them, time each window, and count the process CPU time per second of audio the
emitted chunks cover: the share of a core the stream needs to keep up live. The emitted units are
compared with one offline pass over the same input (agreement). With ``latency_ms`` the settings
are first chosen for that target as `audiotok stream --latency-ms` chooses them (calibration
included); a target out of reach is reported as ``unreachable`` with its one-line reason.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from ..constants import FRAME_SECONDS, SAMPLE_RATE
from ..errors import SettingsError
from ..tokenizer import Tokenizer

BLOCK_MS = 20  # what a microphone callback delivers at a time
MIN_STREAM_WINDOWS = 6  # timed windows at least, after the warm-up window


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; getrusage where /proc is missing)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def offline(tokenizer: Tokenizer, audio: np.ndarray, runs: int, budget_s: float) -> dict:
    tokenizer.tokenize(audio, sample_rate=SAMPLE_RATE)  # warm-up: allocations and kernel choices
    walls, cpus, started = [], [], time.perf_counter()
    while len(walls) < runs and (not walls or time.perf_counter() - started < budget_s):
        wall, cpu = time.perf_counter(), time.process_time()
        tokenizer.tokenize(audio, sample_rate=SAMPLE_RATE)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"walls": walls, "cpus": cpus}


def stream(tokenizer: Tokenizer, audio: np.ndarray, settings: dict, budget_s: float) -> dict:
    chosen = {}
    if "latency_ms" in settings:
        try:
            prediction = tokenizer.settings_for_latency(settings["latency_ms"])
        except SettingsError as exc:
            return {"unreachable": str(exc)}
        s = prediction.settings
        settings = {"chunk_ms": s.chunk_ms, "lookahead_ms": s.lookahead_ms, "context_ms": s.context_ms}
        chosen = {"chosen": settings, "predicted_p95_ms": prediction.p95_ms}
    live = tokenizer.stream(chunk_ms=settings["chunk_ms"], lookahead_ms=settings["lookahead_ms"],
                            context_ms=settings["context_ms"])
    block = SAMPLE_RATE * BLOCK_MS // 1000
    computes: list[float] = []
    units: list[np.ndarray] = []
    frames = 0
    cpu0 = wall0 = None
    for lo in range(0, len(audio), block):
        t = time.perf_counter()
        chunks = live.accept(audio[lo:lo + block])
        if not chunks:
            continue
        units.extend(c.units for c in chunks)
        if cpu0 is None:  # the first window warms up; timing starts after it
            cpu0, wall0 = time.process_time(), time.perf_counter()
            continue
        computes.append((time.perf_counter() - t) / len(chunks))
        frames += sum(len(c.units) for c in chunks)
        if len(computes) >= MIN_STREAM_WINDOWS and time.perf_counter() - wall0 > budget_s:
            break
    if not computes:
        return {"computes": [], "cpu_s": 0.0, "audio_s": 0.0, **chosen}
    cpu_s = time.process_time() - cpu0
    streamed = np.concatenate(units)
    offline = tokenizer.tokenize(audio, sample_rate=SAMPLE_RATE)[: len(streamed)]
    return {"computes": computes, "cpu_s": cpu_s, "audio_s": frames * FRAME_SECONDS,
            "agreement": float(np.mean(streamed == offline)), **chosen}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    audio = np.load(spec["audio"])
    started = time.perf_counter()
    tokenizer = Tokenizer(spec["bundle"], providers=spec.get("providers"), threads=spec["threads"])
    result = {"load_s": time.perf_counter() - started}
    if spec["mode"] == "offline":
        result.update(offline(tokenizer, audio, spec["runs"], spec["budget_s"]))
    else:
        result.update(stream(tokenizer, audio, spec["stream"], spec["budget_s"]))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
