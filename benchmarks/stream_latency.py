"""Streaming latency, CPU load and agreement with offline units, for several window settings.

Builds a HuBERT-base-size model with random weights (``HubertModel(HubertConfig())``: the same
compute as the real checkpoint), fits small k-means centroids on its layer-6 features and exports
two bundles with audiotok's own exporter: one without waveform normalization (HuBERT-base's
setting) and one with it (``do_normalize``, as wav2vec2-large and mHuBERT-147 use).
Then, for each chunk/lookahead/context setting, and for the setting ``--latency-ms`` chooses for
each ``--target`` (after its calibration on this machine):

* feeds speech to a stream on the sample clock (one 20 ms block every 20 ms, from a thread, as a
  microphone callback would) and measures, for every frame, the time from the arrival of the
  block holding its last sample to its unit being written and flushed (per-frame p50/p95/max:
  what a listener feels), the same for the last frame of each chunk only (chunk-end p95), and the
  process CPU time over wall time (cores used by the stream);
* counts the setting's arithmetic from the bundle's graph (GMAC per audio second, as
  `audiotok info` counts it): what decides whether a slower board (a Raspberry Pi) keeps up;
* streams the same speech as fast as possible through both bundles and reports the fraction of
  frames whose unit equals offline tokenization's (one pass over the whole input).

Last, the compute of one default-size window in the bundle versus plain torch + transformers
(the full model with ``output_hidden_states=True``, then nearest centroid), measured in this run.
``--checkpoint DIR`` runs the same on any local transformers checkpoint (e.g. mHuBERT-147).

Needs the [train] extra (torch, transformers, scikit-learn) to build the bundles; the streaming
itself runs on onnxruntime only. Export of a base-size model takes a minute or two; pass
``--workdir DIR`` to keep the bundles between runs.

Example (docs/streaming.md's latency table): python benchmarks/stream_latency.py --seconds 20 --workdir /tmp/stream-bench
--smoke runs the same on a tiny random HuBERT layout (layer 2), 3 s of speech, the default setting and one
target: the script's command line and table in seconds (the suite runs it), no number worth quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
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
from audiotok.runtime.cost import CostModel, bundle_stream_cost, stream_cost
from audiotok.runtime.constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from audiotok.runtime.errors import SettingsError
from audiotok.runtime.stream_target import frame_waits_ms
from audiotok.runtime.stream import (DEFAULT_CHUNK_MS, DEFAULT_CONTEXT_MS, DEFAULT_LOOKAHEAD_MS, Stream,
                                     StreamSettings)
from audiotok.runtime.tokenizer import Tokenizer

LAYER = 6
K = 100
BLOCK_MS = 20  # what the feeder delivers at a time, like a microphone callback
TORCH_REPEATS = 7
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "A speech tokenizer turns sound into a sequence of discrete units, one every twenty milliseconds.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Peter Piper picked a peck of pickled peppers; how many pickled peppers did Peter Piper pick?",
]
# (chunk, lookahead, context) in ms; the first is the default.
SETTINGS = [
    (DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, DEFAULT_CONTEXT_MS),
    (640, 80, 640),
    (320, 80, 1920),
    (240, 60, 960),
    (160, 60, 1920),
    (120, 60, 1920),
    (160, 60, 320),
]
TARGETS = [250.0, 400.0]  # --latency-ms targets measured by default
# --smoke: a 2-layer, 32-dim HuBERT layout cut at layer 2; 3 s of speech (150 frames, enough for k=100)
SMOKE_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
SMOKE_LAYER, SMOKE_SECONDS, SMOKE_TARGET = 2, 3.0, 400.0


@dataclass(frozen=True)
class Row:
    chunk_ms: int
    lookahead_ms: int
    context_ms: int
    chunks: int
    compute_ms: float  # median time to run one window, included in the latency
    cpu_ms: float  # median CPU time of one window: its compute on a core of its own
    p50_ms: float  # per frame: every frame's last sample handed over -> its unit written
    p95_ms: float
    max_ms: float
    chunk_end_p95_ms: float  # the last frame of each chunk only (what docs/streaming.md reported before)
    own_core_p50_ms: float  # per frame, with each window's CPU time as its compute: a core of its own
    own_core_p95_ms: float
    cpu_cores: float
    gmac_per_second: float  # counted arithmetic per audio second (CostModel)
    agreement_none: float  # bundle without waveform normalization (with its attention cache, as streams run)
    agreement_utterance: float  # bundle with waveform normalization (running statistics with the entry point)
    agreement_no_kv: float  # the bundle without normalization, the attention cache off (--no-kv-cache)
    gmac_no_kv: float  # counted arithmetic per audio second with the attention cache off
    agreement_recompute: float  # the bundle without normalization, every window recomputed (no entry point)
    gmac_recompute: float  # counted arithmetic per audio second when every window is recomputed
    target_ms: float | None = None  # the --latency-ms target this setting was chosen for


def speech(seconds: float, folder: Path) -> tuple[np.ndarray, str]:
    """``seconds`` of espeak-ng speech at 16 kHz (sentences repeated), or synthetic speech without it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        from audiotok.export.probe_audio import pseudo_speech

        return pseudo_speech(seconds, seed=0), "synthetic speech-like signal (espeak-ng not installed)"
    pieces = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"s{i}.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
        pieces.append(np.concatenate(list(file_blocks(wav))))
    one = np.concatenate(pieces)
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(one)))
    return np.tile(one, reps)[: int(seconds * SAMPLE_RATE)], "espeak-ng English sentences"


def random_hubert_base(workdir: Path, smoke: bool = False) -> Path:
    """A HuBERT-base-size checkpoint with random weights: the compute of the real one, no download
    (``smoke``: SMOKE_CONFIG's tiny layout instead)."""
    checkpoint = workdir / ("hubert-tiny-random" if smoke else "hubert-base-random")
    if not (checkpoint / "config.json").exists():
        import torch
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        torch.manual_seed(0)
        HubertModel(HubertConfig(**(SMOKE_CONFIG if smoke else {}))).save_pretrained(checkpoint)
        Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(checkpoint)
    return checkpoint


def build_bundles(checkpoint: Path, layer: int, workdir: Path, audio: np.ndarray) -> dict[str, Path]:
    """Centroids from the checkpoint's layer features, then a bundle without and one with normalization."""
    bundles = {norm: workdir / f"{checkpoint.name}-L{layer}-{norm}.onnx" for norm in ("none", "utterance")}
    if all(p.exists() for p in bundles.values()):
        return bundles
    import soundfile as sf

    from audiotok.export.bundle import ExportConfig, export_bundle
    from audiotok.models import load_encoder
    from audiotok.models.features import FeatureExtractor
    from audiotok.train.kmeans import KMeansConfig, fit_kmeans

    parity = workdir / "parity.wav"
    sf.write(parity, audio[: 10 * SAMPLE_RATE], SAMPLE_RATE)
    for norm, bundle in bundles.items():
        if bundle.exists():
            continue
        flag = "yes" if norm == "utterance" else "no"
        print(f"building {bundle.name} ...", file=sys.stderr)
        centroids = workdir / f"{checkpoint.name}-L{layer}-{norm}.npy"
        if not centroids.exists():  # kept between runs: a re-export (new audiotok) keeps the same units
            features = FeatureExtractor(load_encoder(str(checkpoint), layer, flag)).features([audio])
            np.save(centroids, fit_kmeans(features, KMeansConfig(k=K, n_init=1, max_iter=20)))
        export_bundle(ExportConfig(model=str(checkpoint), centroids=str(centroids), output=str(bundle),
                                   layer=layer, normalize=flag, min_agreement=0.99, audio=[str(parity)]))
    return bundles


def realtime(tokenizer: Tokenizer, settings: StreamSettings,
             audio: np.ndarray) -> tuple[list[float], list[float], list[float], list[float], float]:
    """Feed ``audio`` on the sample clock; latency (s) of every frame and of each chunk's last frame,
    compute (s) and CPU time (s) per window, and cores used."""
    block = SAMPLE_RATE * BLOCK_MS // 1000
    arrivals: list[float] = []
    blocks: queue.Queue = queue.Queue()

    def feeder(start: float) -> None:
        for i, lo in enumerate(range(0, len(audio), block)):
            hi = min(lo + block, len(audio))
            delay = start + hi / SAMPLE_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            arrivals.append(time.perf_counter())
            blocks.put(audio[lo:hi])
        blocks.put(None)

    stream = tokenizer.stream(settings=settings)  # through the bundle's stream entry point when it has one
    frames: list[float] = []  # every frame: its last sample handed over -> its unit written
    ends: list[float] = []  # the last frame of each chunk only
    computes: list[float] = []  # wall time of each accept() that ran a window
    cpu_times: list[float] = []  # its CPU time: the same on a core the stream has to itself
    sink = open(os.devnull, "w")

    def arrival(frame: int) -> float:
        """When the block holding frame ``frame``'s last sample was handed over."""
        last_sample = frame * HOP_SAMPLES + RECEPTIVE_FIELD_SAMPLES  # exclusive
        return arrivals[min((last_sample - 1) // block, len(arrivals) - 1)]

    def emit(chunks) -> None:
        for chunk in chunks:
            sink.write(" ".join(map(str, chunk.units.tolist())) + "\n")
            sink.flush()
            done = time.perf_counter()
            frames.extend(done - arrival(f) for f in range(chunk.frame, chunk.stop))
            ends.append(done - arrival(chunk.stop - 1))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    thread = threading.Thread(target=feeder, args=(wall0,), daemon=True)
    thread.start()
    while (piece := blocks.get()) is not None:
        t, c = time.perf_counter(), time.process_time()
        chunks = stream.accept(piece)
        if chunks:
            computes.append((time.perf_counter() - t) / len(chunks))
            cpu_times.append((time.process_time() - c) / len(chunks))
        emit(chunks)
    emit(stream.flush())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    thread.join()
    sink.close()
    return frames, ends, computes, cpu_times, cpu / wall


def agreement(tokenizer: Tokenizer, settings: StreamSettings, audio: np.ndarray, offline: np.ndarray, *,
              recompute: bool = False, kv_cache: bool = True) -> float:
    """Streamed units equal to offline's; ``recompute``: every window from its samples (no entry point);
    ``kv_cache`` False: the entry point without its attention cache."""
    stream = (Stream(tokenizer.units_for_window, settings) if recompute
              else tokenizer.stream(settings=settings, kv_cache=kv_cache))
    step = SAMPLE_RATE * BLOCK_MS // 1000
    chunks = [c for lo in range(0, len(audio), step) for c in stream.accept(audio[lo:lo + step])]
    units = np.concatenate([c.units for c in chunks + stream.flush()])
    assert len(units) == len(offline)
    return float((units == offline).mean())


def torch_ratio(bundle: Path, checkpoint: Path, layer: int, audio: np.ndarray,
                threads: int | None) -> dict[str, float]:
    """Median compute of one default window: the bundle vs plain torch + transformers, same samples."""
    import torch
    from transformers import AutoModel

    window = audio[: (DEFAULT_CONTEXT_MS + DEFAULT_CHUNK_MS + DEFAULT_LOOKAHEAD_MS) * SAMPLE_RATE // 1000]
    tokenizer = Tokenizer(bundle, threads=threads)
    model = AutoModel.from_pretrained(checkpoint).eval()
    centroids = torch.from_numpy(np.load(bundle.with_suffix(".npy")))
    if threads:
        torch.set_num_threads(threads)
    x = torch.from_numpy(window)[None]

    def plain() -> None:
        with torch.no_grad():
            hidden = model(x, output_hidden_states=True).hidden_states[layer]
            torch.cdist(hidden[0], centroids).argmin(-1)

    def bundle() -> None:
        tokenizer.units_for_window(window)

    runs: dict = {bundle: [], plain: []}
    for fn in runs:
        fn()  # warm up
    for _ in range(TORCH_REPEATS):  # alternate, so that load from other processes hits both alike
        for fn, times in runs.items():
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    onnx_s, torch_s = (float(np.median(times)) for times in runs.values())
    return {"window_ms": len(window) * 1000 // SAMPLE_RATE, "onnxruntime_ms": round(onnx_s * 1000, 1),
            "torch_ms": round(torch_s * 1000, 1), "speedup": round(torch_s / onnx_s, 2)}


def parse_setting(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected CHUNK:LOOKAHEAD:CONTEXT in ms, got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio streamed per setting")
    parser.add_argument("--setting", type=parse_setting, action="append", default=None,
                        help="CHUNK:LOOKAHEAD:CONTEXT in ms; repeat (default: a built-in list)")
    parser.add_argument("--checkpoint", default=None,
                        help="a local transformers checkpoint folder (default: random-weight HuBERT-base)")
    parser.add_argument("--target", type=float, action="append", default=None,
                        help="a --latency-ms target: measure the setting chosen for it; repeat (default: "
                             + ", ".join(f"{t:g}" for t in TARGETS) + ")")
    parser.add_argument("--layer", type=int, default=LAYER, help="hidden_states index to cut at")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per stream")
    parser.add_argument("--workdir", default=None, help="keep the model and bundles here between runs")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch + transformers comparison")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny random HuBERT layout at layer {SMOKE_LAYER}, {SMOKE_SECONDS:g} s, the default setting "
                             f"and --target {SMOKE_TARGET:g} unless given: checks the script in seconds (the suite); "
                             "overrides --seconds, --layer and --checkpoint")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.layer, args.checkpoint = SMOKE_SECONDS, SMOKE_LAYER, None
        args.setting, args.target = args.setting or [SETTINGS[0]], args.target or [SMOKE_TARGET]
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="audiotok-stream-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        audio, source = speech(args.seconds, Path(tmp))
        checkpoint = Path(args.checkpoint) if args.checkpoint else random_hubert_base(workdir, args.smoke)
        bundles = build_bundles(checkpoint, args.layer, workdir, audio)
        tokenizers = {norm: Tokenizer(path, threads=args.threads) for norm, path in bundles.items()}
        offline = {norm: tok.tokenize(audio, SAMPLE_RATE) for norm, tok in tokenizers.items()}
        manifest = tokenizers["none"].manifest
        cost = CostModel(bundles["none"], manifest)
        cached = manifest.stream is not None
        rows = []
        chosen, refused = [], []
        for target in args.target or TARGETS:
            try:
                chosen.append((tokenizers["none"].settings_for_latency(target).settings, target))
            except SettingsError as exc:  # out of reach on this machine (now): reported under the table
                refused.append(str(exc))
        plain = [(StreamSettings(*setting), None) for setting in dict.fromkeys(args.setting or SETTINGS)]
        for settings, target in plain + chosen:
            chunk, lookahead, context = (int(v) for v in (settings.chunk_ms, settings.lookahead_ms, settings.context_ms))
            frames, ends, computes, cpu_times, cores = realtime(tokenizers["none"], settings, audio)
            ms = np.asarray(frames) * 1000
            cpu_ms = float(np.median(cpu_times)) * 1000
            own = (frame_waits_ms(chunk, lookahead)[None, :] + np.asarray(cpu_times)[:, None] * 1000).ravel()
            rows.append(Row(chunk, lookahead, context, len(ends), round(float(np.median(computes)) * 1000, 1),
                            round(cpu_ms, 1),
                            round(float(np.percentile(ms, 50)), 1),
                            round(float(np.percentile(ms, 95)), 1), round(float(ms.max()), 1),
                            round(float(np.percentile(np.asarray(ends) * 1000, 95)), 1),
                            round(float(np.percentile(own, 50)), 1), round(float(np.percentile(own, 95)), 1),
                            round(cores, 3),
                            bundle_stream_cost(cost, manifest, (chunk, lookahead, context))["gmac_per_second"],
                            round(agreement(tokenizers["none"], settings, audio, offline["none"]), 4),
                            round(agreement(tokenizers["utterance"], settings, audio, offline["utterance"]), 4),
                            round(agreement(tokenizers["none"], settings, audio, offline["none"], kv_cache=False), 4),
                            stream_cost(cost, chunk, lookahead, context, cached=cached)["gmac_per_second"],
                            round(agreement(tokenizers["none"], settings, audio, offline["none"], recompute=True), 4),
                            stream_cost(cost, chunk, lookahead, context)["gmac_per_second"], target))
            print(rows[-1], file=sys.stderr)
        ratio = None if args.no_torch else torch_ratio(bundles["none"], checkpoint, args.layer, audio, args.threads)

    model = args.checkpoint or ("tiny HuBERT layout (random weights, --smoke)" if args.smoke
                                else "HuBERT-base-size (random weights)")
    print(f"{model} cut at layer {args.layer}, k={K}; {args.seconds:g} s of {source} "
          f"per setting, fed in {BLOCK_MS} ms blocks on the sample clock; onnxruntime threads={args.threads}; "
          f"{os.cpu_count()} CPUs; load average {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after\n")
    print("| setting | chunk ms | lookahead ms | context ms | window compute ms | window CPU ms | per-frame p50 ms | "
          "p95 ms | max ms | chunk-end p95 ms | own core: per-frame p50 ms | own core: p95 ms | CPU cores | GMAC per audio s | "
          "agreement (no norm) | agreement (waveform norm) | agreement, no attention cache | "
          "GMAC per audio s, no attention cache | agreement, windows recomputed | GMAC per audio s, recomputed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        name = f"`--latency-ms {r.target_ms:g}`" if r.target_ms else ("default" if i == 0 else "")
        print(f"| {name} | {r.chunk_ms} | {r.lookahead_ms} | {r.context_ms} | {r.compute_ms:.0f} | {r.cpu_ms:.0f} | "
              f"{r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.max_ms:.0f} | {r.chunk_end_p95_ms:.0f} | {r.own_core_p50_ms:.0f} | "
              f"{r.own_core_p95_ms:.0f} | {r.cpu_cores:.2f} | {r.gmac_per_second:.1f} | "
              f"{r.agreement_none:.1%} | {r.agreement_utterance:.1%} | {r.agreement_no_kv:.1%} | "
              f"{r.gmac_no_kv:.1f} | {r.agreement_recompute:.1%} | {r.gmac_recompute:.1f} |")
    for reason in refused:
        print(f"\nrefused: {reason}")
    if ratio:
        print(f"\nOne {ratio['window_ms']} ms window: bundle {ratio['onnxruntime_ms']} ms, plain torch + transformers "
              f"{ratio['torch_ms']} ms ({ratio['speedup']}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows], "torch": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
