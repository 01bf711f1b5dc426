"""A bundle past ONNX's 2 GB limit, end to end: export time and peak, sizes per precision, tokenize RTF and peak.

For a checkpoint of XLS-R 1B's layout (``Wav2Vec2Config`` hidden 1280, 16 heads, feed-forward 5120,
36 of its 48 layers, layer-norm CNN, stable layer norm; random weights) cut at layer 35, as SeamlessM4T's unit
extractor reads it, and k-means centroids fitted by ``audiotok train``, each in its own process
under ``/usr/bin/time -v`` (peak RSS is that command's alone):

  export      fp32, fp16 and int8 bundles (--layout auto): wall time, peak RSS, bundle size, layout,
              and whether anything was written beside the bundle (it must not be)
  tokenize    each bundle on unseen speech (espeak-ng, about 12 s): real-time factor and peak RSS, against
              the acceptance bound 1.3 x bundle size + 600 MB
  parity      the fp32 bundle's units against transformers' ``hidden_states[35]`` + numpy argmin
              on every frame of the unseen speech

``--layout wide`` runs the same on a smaller model (3 very wide layers, 2.4 GB in float32; the slow
test's has a narrower feed-forward, 2.2 GB). Prints one JSON object; docs/bundle.md's figures come from it.

Example (about 75 minutes on 2 shared cores, 7.9 GB peak memory, 7.4 GB of files under --workdir):
  python benchmarks/large_bundle.py --workdir /work/tmp/large --layout xlsr-1b

``--smoke`` is ``--layout tiny --precision fp32 --bundle-layout container`` on 2 training and 1 unseen
utterance: the container layout forced on a small model, so the >2 GB code path (export, info, tokenize,
parity) runs in seconds (the suite runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from audiotok.runtime.audio.decode import file_blocks

SAMPLE_RATE = 16_000
LAYOUTS = {
    # SeamlessM4T's unit extractor: XLS-R 1B read at layer 35. The checkpoint keeps 36 of its 48 layers:
    # layers past 36 never change hidden_states[35], and with 35 the last hidden state would be the final
    # layer norm's output instead. k fits the few seconds of training speech (k-means needs k frames);
    # tests/test_large_bundle.py covers SeamlessM4T's 10,000 x 1280 vocabulary.
    "xlsr-1b": dict(config=dict(hidden_size=1280, num_hidden_layers=36, num_attention_heads=16,
                                intermediate_size=5120), layer=35, k=256),
    # few, very wide layers that still cross 2 GB in float32 (the slow test's, with feed-forward 14336)
    "wide": dict(config=dict(hidden_size=4096, num_hidden_layers=3, num_attention_heads=16,
                             intermediate_size=16384, num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=64), layer=3, k=64),
    # a minute's check that the script itself runs, on any machine
    "tiny": dict(config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                             conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
                 layer=2, k=16),
}
PRECISIONS = ("fp32", "fp16", "int8")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A speech tokenizer turns sound into a sequence of discrete units, one every twenty milliseconds.",
    "Peter Piper picked a peck of pickled peppers, how many pickled peppers did Peter Piper pick?",
    "Large encoders give the most used unit vocabularies, and their weights do not fit one protobuf.",
    "Every bundle is one file, and nothing beside it is ever read by the runtime.",
]


def build_checkpoint(folder: Path, config: dict, seed: int = 0) -> Path:
    """A random-weight wav2vec2 checkpoint of the layout's shape (layer-norm CNN, stable layer norm)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**config, feat_extract_norm="layer", do_stable_layer_norm=True))
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def speech(folder: Path, sentences: list[str], voices: tuple[str, ...]) -> Path:
    """espeak-ng utterances (one per sentence and voice) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(sentences):
        for voice in voices:
            path = folder / f"u{i}-{voice}.wav"
            if not path.exists():
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return folder


def timed(command: list[str]) -> dict:
    """Run ``command`` under /usr/bin/time -v: wall seconds, peak RSS (MB), stdout; fails loudly."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return {"seconds": round(wall, 1), "peak_mb": round(peak_kb / 1024), "stdout": result.stdout}


def audiotok(*args: object) -> list[str]:
    return [sys.executable, "-m", "audiotok", *map(str, args)]


def reference_units(checkpoint: Path, layer: int, centroids: np.ndarray, files: list[Path]) -> dict[str, np.ndarray]:
    """transformers' hidden_states[layer] + numpy argmin of the squared distance, per file."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    model = Wav2Vec2Model.from_pretrained(checkpoint).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
    units = {}
    with torch.no_grad():
        for path in files:
            audio = np.concatenate(list(file_blocks(path)))
            inputs = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            hidden = model(inputs.input_values, output_hidden_states=True).hidden_states[layer][0].double().numpy()
            c = centroids.astype(np.float64)
            units[path.name] = ((hidden ** 2).sum(1)[:, None] - 2 * hidden @ c.T + (c * c).sum(1)[None]).argmin(1)
    return units


def tokenized(stdout: str) -> dict[str, np.ndarray]:
    rows = (line.split("\t") for line in stdout.splitlines() if "\t" in line)
    return {Path(name).name: np.array(text.split(), dtype=np.int64) for name, text in rows}


def run(workdir: Path, layout: str, precisions: tuple[str, ...], bundle_layout: str = "auto",
        smoke: bool = False) -> dict:
    """``bundle_layout``: export's --layout (auto: plain ONNX below 2 GB, the container above);
    ``smoke``: 2 training and 1 unseen utterance, one voice."""
    spec = LAYOUTS[layout]
    checkpoint = build_checkpoint(workdir / f"{layout}-checkpoint", spec["config"])
    train = speech(workdir / "train", SENTENCES[:2 if smoke else 4], ("en",) if smoke else ("en", "en-us"))
    unseen = speech(workdir / "unseen", SENTENCES[4:5 if smoke else None], ("en-gb",) if smoke else ("en-gb", "en"))
    unseen_files = sorted(unseen.glob("*.wav"))
    audio_seconds = sum(sum(len(b) for b in file_blocks(p)) for p in unseen_files) / SAMPLE_RATE
    centroids_path = workdir / f"{layout}-k{spec['k']}.npy"
    report: dict = {"layout": layout, "layer": spec["layer"], "k": spec["k"], "unseen_audio_seconds": audio_seconds}
    if not centroids_path.exists():
        report["train"] = {k: v for k, v in timed(audiotok("train", "--model", checkpoint, "--layer", spec["layer"],
                                                          "--k", spec["k"], "-o", centroids_path, train)).items()
                           if k != "stdout"}
    for precision in precisions:
        folder = workdir / f"{layout}-{precision}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        bundle = folder / "units.onnx"
        export = timed(audiotok("export", "--model", checkpoint, "--centroids", centroids_path, "--precision",
                                precision, "--audio", train, "--layout", bundle_layout, "-o", bundle))
        info = json.loads(subprocess.run(audiotok("info", bundle, "--no-compute"), capture_output=True,
                                         text=True, check=True).stdout)
        size = bundle.stat().st_size
        fp32_bundle = workdir / f"{layout}-fp32" / "units.onnx"  # the float32 weights the peak is measured against
        tokenize = timed(audiotok("tokenize", bundle, *unseen_files, "--threads", "2"))
        entry = {"export_seconds": export["seconds"], "export_peak_mb": export["peak_mb"],
                 "export_peak_x_fp32_bundle": (round(export["peak_mb"] / (fp32_bundle.stat().st_size / 2**20), 2)
                                               if fp32_bundle.exists() else None),
                 "bundle_mb": round(size / 2**20), "layout": info["layout"],
                 "beside_bundle": sorted(p.name for p in folder.iterdir() if p != bundle),
                 "agreement_at_export": info["agreement"]["agreement"],
                 "tokenize_seconds": tokenize["seconds"], "tokenize_rtf": round(tokenize["seconds"] / audio_seconds, 3),
                 "tokenize_peak_mb": tokenize["peak_mb"],
                 "tokenize_bound_mb": round(1.3 * size / 2**20 + 600)}
        if precision == "fp32":
            expected = reference_units(checkpoint, spec["layer"], np.load(centroids_path), unseen_files)
            got = tokenized(tokenize["stdout"])
            frames = sum(len(u) for u in expected.values())
            equal = sum(int((got[name] == units).sum()) for name, units in expected.items()
                        if got[name].shape == units.shape)
            entry["units_equal_transformers"] = f"{equal}/{frames}"
        report[precision] = entry
        print(json.dumps({precision: entry}), file=sys.stderr, flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="checkpoint, audio and bundles go here (required, except with --smoke)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="xlsr-1b")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--bundle-layout", choices=("auto", "onnx", "container"), default="auto",
                        help="audiotok export --layout (container: the >2 GB layout at any size)")
    parser.add_argument("--smoke", action="store_true",
                        help="--layout tiny --precision fp32 --bundle-layout container: checks the script in seconds "
                             "(the suite)")
    args = parser.parse_args()
    if args.workdir is None and not args.smoke:
        parser.error("--workdir is required")
    if args.smoke:
        args.layout, args.precision, args.bundle_layout = "tiny", ["fp32"], "container"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="audiotok-large-bundle-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(workdir, args.layout, tuple(args.precision), args.bundle_layout, args.smoke), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
