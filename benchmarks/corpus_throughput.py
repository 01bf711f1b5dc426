"""Corpus throughput: hours of audio per hour with --jobs 1 and --jobs N, next to plain torch + transformers.

What it measures, in one run on the same files:

* ``torch``: plain transformers HubertModel (layers past L dropped) + argmin over the centroids in
  torch, one process with torch's default threads: what one would write without audiotok;
* ``jobs=1``: ``audiotok tokenize`` in one process, onnxruntime's default threads (all cores);
* ``jobs=1 threads=1``: one worker with a single core (what each of N=cores workers gets);
* ``jobs=N``: N worker processes with ``cores // N`` threads each (what ``--jobs N`` does).

Wall time includes starting the workers and loading the model, as a user pays them. CPU seconds
per audio hour are printed too: on a machine shared with other work, wall-clock ratios understate
what the cores can do, and the CPU cost shows whether the work itself got more expensive. The model is
a HuBERT-base-size encoder with random weights (HubertConfig() defaults: 12 layers, 768 dims, the
same compute as facebook/hubert-base-ls960), exported once with audiotok's own train + export at
layer 6, k=100; nothing is downloaded. The audio is audiotok's pseudo-speech probe signal.

Usage: python benchmarks/corpus_throughput.py [--files 24] [--seconds 15] [--jobs 2] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotok.runtime.corpus.engine import WorkerSpec, available_cores, threads_per_job
from audiotok.runtime.corpus.listing import CorpusFile
from audiotok.runtime.corpus.local_engine import LocalEngine
from audiotok.runtime.corpus.worker import TokenizeWorker

LAYER, K = 6, 100
# --smoke: a 3-layer, 32-dim HuBERT layout cut at layer 2 with k=16, 2 files of 2 s, one round: the
# script's command line and report lines in seconds (the suite runs it), no number worth quoting.
SMOKE_CONFIG = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
SMOKE_LAYER, SMOKE_K = 2, 16
CHECKPOINT = "hubert-base-random"  # the folder under --workdir


def build_bundle(workdir: Path, smoke: bool = False) -> Path:
    """A HuBERT-base-size random checkpoint -> centroids (audiotok train) -> bundle (audiotok export)."""
    global LAYER, K, CHECKPOINT
    if smoke:
        LAYER, K, CHECKPOINT = SMOKE_LAYER, SMOKE_K, "hubert-tiny-random"
    bundle = workdir / ("hubert-tiny-random-l2-k16.onnx" if smoke else "hubert-base-random-l6-k100.onnx")
    if bundle.exists():
        return bundle
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from audiotok.export.probe_audio import pseudo_speech

    checkpoint = workdir / CHECKPOINT
    torch.manual_seed(0)
    HubertModel(HubertConfig(**(SMOKE_CONFIG if smoke else {}))).save_pretrained(checkpoint)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(checkpoint)
    train_audio = workdir / "train-audio"
    train_audio.mkdir(exist_ok=True)
    for i in range(4):
        sf.write(train_audio / f"t{i}.wav", pseudo_speech(3.0 if smoke else 15.0, seed=100 + i), 16_000)
    centroids = workdir / "centroids.npy"
    for command in (["train", "--model", checkpoint, "--layer", LAYER, "--k", K, "--n-init", "3", "-o", centroids,
                     "--cache", workdir / "features", train_audio],
                    ["export", "--model", checkpoint, "--centroids", centroids, "-o", bundle]):
        print("$ audiotok", *map(str, command), file=sys.stderr)
        if smoke:  # the same commands in this process, which has torch imported: two fresh interpreters'
            # imports would be most of a smoke's setup (nothing is timed before the bundle exists)
            from audiotok.runtime.commands.dispatcher import main as audiotok

            if audiotok(list(map(str, command))) != 0:
                raise SystemExit(f"audiotok {command[0]} failed")
        else:
            subprocess.run([sys.executable, "-m", "audiotok", *map(str, command)], check=True)
    return bundle


def make_corpus(workdir: Path, files: int, seconds: float) -> list[CorpusFile]:
    from audiotok.export.probe_audio import pseudo_speech

    folder = workdir / f"corpus-{files}x{seconds:g}s"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"f{i:04d}.wav"
        if not path.exists():
            sf.write(path, pseudo_speech(seconds, seed=i), 16_000, subtype="PCM_16")
        paths.append(CorpusFile(str(path)))
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def audiotok_run(bundle: Path, files: list[CorpusFile], jobs: int, threads: int | None) -> tuple[float, float, float]:
    """(audio s, wall s, CPU s) for the local engine, worker start-up and model load included."""
    spec = WorkerSpec(TokenizeWorker, {"bundle": str(bundle), "threads": threads})
    start, cpu = time.perf_counter(), cpu_seconds()
    audio = sum(result.seconds for result in LocalEngine(jobs).map(spec, files, ordered=False))
    return audio, time.perf_counter() - start, cpu_seconds() - cpu


def torch_run(workdir: Path, bundle: Path, files: list[CorpusFile]) -> tuple[float, float, float]:
    """The same files with plain transformers + torch argmin, one process, torch's default threads."""
    import torch
    from transformers import HubertModel

    start, cpu = time.perf_counter(), cpu_seconds()
    model = HubertModel.from_pretrained(workdir / CHECKPOINT).eval()
    model.encoder.layers = model.encoder.layers[:LAYER]  # hidden_states[L] needs only the first L layers
    centroids = torch.from_numpy(np.load(workdir / "centroids.npy"))
    c_sq = (centroids ** 2).sum(1)
    audio = 0.0
    with torch.inference_mode():
        for item in files:
            wave, rate = sf.read(item.path, dtype="float32")
            assert rate == 16_000
            hidden = model(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states[LAYER][0]
            units = (c_sq[None] - 2 * hidden @ centroids.T).argmin(1)
            audio += len(units) * 0.02
    return audio, time.perf_counter() - start, cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=15.0, help="per file (at most 30: one pass)")
    parser.add_argument("--jobs", type=int, default=available_cores(), help="N for the jobs=N run")
    parser.add_argument("--workdir", default=None, help="keep the bundle and audio here between runs")
    parser.add_argument("--skip-torch", action="store_true", help="leave out the torch + transformers run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; ratios use each configuration's best")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, 2 files x 2 s, one round: checks the script in seconds (the suite)")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.seconds, args.repeat = 2, 2.0, 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="audiotok-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(workdir, smoke=args.smoke)
    files = make_corpus(workdir, args.files, args.seconds)
    load = os.getloadavg()[0]
    print(f"{len(files)} files x {args.seconds:g} s, {available_cores()} cores, load average before: {load:.2f}")

    runs = [("jobs=1", 1, threads_per_job(1, None)), ("jobs=1 threads=1", 1, 1),
            (f"jobs={args.jobs}", args.jobs, threads_per_job(args.jobs, None))]
    results: dict[str, float] = {}

    def report(name: str, label: str, audio: float, wall: float, cpu: float) -> None:
        print(f"{label:32s} {audio / 3600:.3f} h in {wall:6.1f} s: {audio / wall:6.1f} h/h, "
              f"{cpu / (audio / 3600):7.0f} CPU s per audio hour")
        results[name] = max(results.get(name, 0.0), audio / wall)

    for _ in range(args.repeat):  # rounds interleave the configurations, so drifting load hits all of them
        if not args.skip_torch:
            report("torch", "torch + transformers", *torch_run(workdir, bundle, files))
        for name, jobs, threads in runs:
            report(name, f"{name} ({jobs} x {threads or 'default'} threads)", *audiotok_run(bundle, files, jobs, threads))
    if args.repeat > 1:
        print("\nbest of each: " + ", ".join(f"{k} {v:.1f} h/h" for k, v in results.items()))
    n = f"jobs={args.jobs}"
    print(f"\n{n} / jobs=1:            {results[n] / results['jobs=1']:.2f}x")
    print(f"{n} / jobs=1 threads=1:  {results[n] / results['jobs=1 threads=1']:.2f}x (per-worker scaling)")
    if "torch" in results:
        print(f"jobs=1 / torch:              {results['jobs=1'] / results['torch']:.2f}x")
        print(f"{n} / torch:              {results[n] / results['torch']:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f} (above {available_cores()} means other work shared the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
