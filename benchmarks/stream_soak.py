"""Soak test of `audiotok stream --input -`: hours of PCM through one real process, as fast as it goes.

A feeder thread writes s16le speech (espeak-ng sentences, looped) to the child's stdin; a reader
thread parses its jsonl chunks, checking that frames are contiguous and counting them; the main
thread samples the child's resident memory (VmRSS from /proc) every --sample-seconds. Reported:
RSS at the first emitted chunk and at the end (and the peak), frames against the offline count
for the same number of samples (``frame_count(n)``, what `audiotok tokenize` gives), wall time
and how many times faster than real time the stream ran. Memory that grows with the audio (a
buffer never trimmed, a list of every chunk) shows as end RSS well above start RSS.

Bundles are cheap on purpose, so two hours go quickly: the built-in log-mel encoder and a tiny
random HuBERT-layout model (group-norm CNN + post-LN transformer, hidden size 32, 3 layers), each
with k=50 centroids fitted on the same speech. ``--bundle`` soaks any other bundle instead.
Building needs the [train] extra; the stream itself runs on onnxruntime only. Linux only (/proc).

Example: python benchmarks/stream_soak.py --hours 2 --workdir /tmp/soak --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.constants import SAMPLE_RATE, frame_count

FEED_SECONDS = 10.0  # audio written to the child per write
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "A speech tokenizer turns sound into a sequence of discrete units, one every twenty milliseconds.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Peter Piper picked a peck of pickled peppers; how many pickled peppers did Peter Piper pick?",
]
TINY_HUBERT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                   feat_extract_norm="group")


@dataclass(frozen=True)
class Soak:
    bundle: str
    audio_hours: float
    wall_s: float
    realtime_x: float  # audio seconds per wall second
    frames: int
    offline_frames: int
    chunks: int
    rss_start_mb: float  # at the first emitted chunk: model loaded, stream running
    rss_end_mb: float  # the last sample before stdin closed
    rss_peak_mb: float
    rss_growth_pct: float
    rss_by_quarter_mb: list[float]  # the last sample within each quarter of the audio: flat means no leak
    samples: int  # RSS samples taken
    exit_code: int
    stderr: str


def speech_loop(folder: Path) -> np.ndarray:
    """About 25 s of espeak-ng speech at 16 kHz as int16 (noise-like chirps without espeak-ng)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        t = np.arange(25 * SAMPLE_RATE) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(t)) * t)
    else:
        pieces = []
        for i, text in enumerate(SENTENCES):
            wav = folder / f"s{i}.wav"
            subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
            pieces.append(np.concatenate(list(file_blocks(wav))))
        audio = np.concatenate(pieces)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def cli(*args: str | Path) -> None:
    result = subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"audiotok {args[0]} failed: {result.stderr.strip()}")


def build_bundles(workdir: Path, speech: np.ndarray) -> list[Path]:
    """log-mel and tiny-HuBERT bundles, k=50, trained on ``speech`` (kept in ``workdir`` between runs)."""
    import soundfile as sf

    data = workdir / "speech"
    data.mkdir(parents=True, exist_ok=True)
    sf.write(data / "speech.wav", speech, SAMPLE_RATE)
    bundles = []
    for name in ("logmel", "tiny-hubert"):
        bundle = workdir / f"{name}.onnx"
        if not bundle.exists():
            model = "logmel"
            if name == "tiny-hubert":
                import torch
                from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

                model = str(workdir / "tiny-hubert")
                torch.manual_seed(0)
                HubertModel(HubertConfig(**TINY_HUBERT)).save_pretrained(model)
                Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(model)
            centroids = workdir / f"{name}.npy"
            layer = [] if name == "logmel" else ["--layer", "2"]
            cli("train", "--model", model, *layer, "--k", "50", "-o", centroids, data)
            cli("export", "--model", model, *layer, "--centroids", centroids, "-o", bundle)
        bundles.append(bundle)
    return bundles


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def soak(bundle: Path, speech: np.ndarray, hours: float, sample_seconds: float) -> Soak:
    total = int(hours * 3600 * SAMPLE_RATE)
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "stream", str(bundle), "--input", "-",
                             "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    counts = {"frames": 0, "chunks": 0, "broken": "", "sent": 0}
    first_chunk = threading.Event()

    def feed() -> None:
        step = int(FEED_SECONDS * SAMPLE_RATE)
        reps = -(-step // len(speech)) + 1
        loop = np.tile(speech, reps)
        sent, offset = 0, 0
        try:
            while sent < total:
                n = min(step, total - sent)
                proc.stdin.write(loop[offset:offset + n].tobytes())
                sent += n
                counts["sent"] = sent
                offset = (offset + n) % len(speech)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    def read() -> None:
        for line in proc.stdout:
            record = json.loads(line)
            if record["frame"] != counts["frames"] and not counts["broken"]:
                counts["broken"] = f"chunk at frame {record['frame']} after {counts['frames']} frames"
            counts["frames"] += record["frames"]
            counts["chunks"] += 1
            first_chunk.set()

    started = time.monotonic()
    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    while not first_chunk.wait(0.5):
        if proc.poll() is not None:
            raise SystemExit(f"{bundle.name}: stream exited {proc.returncode} before its first chunk: "
                             f"{proc.stderr.read().decode().strip()}")
    timeline = [(counts["sent"], rss_mb(proc.pid))]  # (samples fed so far, RSS)
    while proc.poll() is None and threads[0].is_alive():
        time.sleep(sample_seconds)
        value = rss_mb(proc.pid)
        if value is not None:
            timeline.append((counts["sent"], value))
    threads[0].join()
    err = proc.stderr.read().decode()  # the reader thread drains stdout meanwhile
    proc.wait()
    threads[1].join()
    wall = time.monotonic() - started
    values = [v for _, v in timeline if v is not None]
    quarters = [[v for fed, v in timeline if v is not None and fed <= total * q / 4] for q in (1, 2, 3, 4)]
    if counts["broken"]:
        err += f"\nframes not contiguous: {counts['broken']}"
    return Soak(bundle=bundle.name, audio_hours=total / SAMPLE_RATE / 3600, wall_s=round(wall, 1),
                realtime_x=round(total / SAMPLE_RATE / wall, 1), frames=counts["frames"],
                offline_frames=frame_count(total), chunks=counts["chunks"], rss_start_mb=round(values[0], 1),
                rss_end_mb=round(values[-1], 1), rss_peak_mb=round(max(values), 1),
                rss_growth_pct=round(100 * (values[-1] - values[0]) / values[0], 2),
                rss_by_quarter_mb=[round(q[-1], 1) if q else float("nan") for q in quarters], samples=len(values),
                exit_code=proc.returncode, stderr=err.strip()[-500:])


SMOKE_HOURS = 0.005  # 18 s of audio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.0, help="audio streamed per bundle")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--bundle", action="append", type=Path, default=None,
                        help="soak this bundle instead of building log-mel and tiny-HuBERT ones (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep built bundles here between runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--smoke", action="store_true",
                        help="18 s of audio, RSS every 0.2 s: checks the script runs and reports, in seconds (the suite)")
    args = parser.parse_args()
    if args.smoke:
        args.hours, args.sample_seconds = SMOKE_HOURS, 0.2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="audiotok-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    speech = speech_loop(workdir)
    bundles = args.bundle or build_bundles(workdir, speech)
    load = os.getloadavg()
    results = []
    for bundle in bundles:
        result = soak(bundle, speech, args.hours, args.sample_seconds)
        results.append(result)
        print(f"{result.bundle}: {result.audio_hours:.2f} h in {result.wall_s:.0f} s ({result.realtime_x}x real "
              f"time); frames {result.frames} (offline {result.offline_frames}, "
              f"{'equal' if result.frames == result.offline_frames else 'DIFFERENT'}); RSS {result.rss_start_mb} MB "
              f"at the first chunk, {result.rss_end_mb} MB at the end ({result.rss_growth_pct:+.2f}%), peak "
              f"{result.rss_peak_mb} MB over {result.samples} samples; by quarter of the audio "
              f"{' / '.join(map(str, result.rss_by_quarter_mb))} MB; exit {result.exit_code}", flush=True)
        if result.stderr:
            print(f"  stderr: {result.stderr}", flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after {load_after[0]:.2f} "
          f"{load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results], "loadavg_before": load,
                                         "loadavg_after": load_after}, indent=2) + "\n")
    ok = all(r.exit_code == 0 and r.frames == r.offline_frames for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
