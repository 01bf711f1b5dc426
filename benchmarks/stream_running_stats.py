"""What reusing the CNN across stream windows would buy: agreement with offline units, in torch.

Today a stream recomputes every window from its samples (runtime/windowing.py). HuBERT-base's
first convolution is followed by a group norm over the window's whole length, so its CNN outputs
depend on the window and cannot be reused; that costs compute (the CNN is about 45% of the
encoder to layer 6, recomputed (context + chunk + lookahead) / chunk times) and agreement (short
windows give noisy statistics).

This simulates the alternative with the checkpoint's own modules, before any export work:
the first convolution's statistics come from **everything heard so far** (a running mean and
variance of its outputs up to the window's end), each frame's CNN output is computed **once**,
when its audio arrives, and cached; the transformer still runs on context + chunk + lookahead.
For each setting it prints the agreement with offline units (one pass over the input) of

* per-window statistics, recomputed: what `audiotok stream` does today (same arithmetic as the bundle);
* running statistics with the cached CNN: the design a stream entry point in the bundle would export.

It uses the model, centroids and bundle benchmarks/stream_latency.py builds (pass the same
--workdir), and prints each setting's arithmetic counted from that bundle's graph (GMAC per audio
second): recomputing every window, and with the CNN run once per frame.

Example: python benchmarks/stream_running_stats.py --workdir /tmp/stream-bench --seconds 20
--smoke runs two settings on stream_latency.py --smoke's tiny model and 3 s of speech (built in --workdir
unless that run left them there): the script's command line and table in seconds (the suite runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from stream_latency import LAYER, SMOKE_LAYER, SMOKE_SECONDS, build_bundles, random_hubert_base, speech

SETTINGS = [(640, 80, 640), (320, 80, 640), (240, 80, 480), (160, 80, 320), (160, 60, 320), (120, 60, 240),
            (160, 80, 640), (160, 60, 640), (120, 60, 640)]
CONV0_HOP = 5  # samples per output of the first convolution (kernel 10, stride 5)
CONV0_PER_FRAME = 64  # its outputs per 320-sample frame
CONV0_FIELD = 79  # its outputs one frame's 400 samples cover
SMOKE_SETTINGS = SETTINGS[:2]


class Simulation:
    """The checkpoint cut at ``layer``, run window by window with per-window or running statistics."""

    def __init__(self, checkpoint: Path, centroids: np.ndarray, layer: int, audio: np.ndarray) -> None:
        from transformers import HubertModel

        self.model = HubertModel.from_pretrained(checkpoint).eval()
        self.model.encoder.layers = self.model.encoder.layers[:layer]
        self.centroids = torch.from_numpy(centroids)
        self.audio = torch.from_numpy(audio)[None]
        self.convs = self.model.feature_extractor.conv_layers
        with torch.no_grad():
            self.conv0 = self.convs[0].conv(self.audio[:, None])  # local: each output sees 10 samples
            self.offline = self._units(self.model(self.audio).last_hidden_state)

    def _units(self, hidden: torch.Tensor) -> np.ndarray:
        return (self.centroids.pow(2).sum(1) - 2 * hidden[0] @ self.centroids.T).argmin(-1).numpy()

    def _cnn(self, first: int, stop: int, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """CNN outputs of frames [first, stop) normalised with the given statistics, ``[1, 512, frames]``."""
        norm = self.convs[0].layer_norm
        h = self.conv0[:, :, first * CONV0_PER_FRAME:(stop - 1) * CONV0_PER_FRAME + CONV0_FIELD]
        h = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight[None, :, None] + norm.bias[None, :, None]
        h = self.convs[0].activation(h)
        for layer in self.convs[1:]:
            h = layer(h)
        return h

    def _windows(self, setting: tuple[int, int, int]):
        chunk, lookahead, context = (ms // 20 for ms in setting)
        frames = len(self.offline)
        for w in range(-(-frames // chunk)):
            emit_start, emit_stop = w * chunk, min((w + 1) * chunk, frames)
            yield max(0, emit_start - context), emit_start, emit_stop, min(emit_stop + lookahead, frames)

    def per_window(self, setting: tuple[int, int, int]) -> float:
        units = []
        with torch.no_grad():
            for start, emit_start, emit_stop, stop in self._windows(setting):
                samples = self.audio[:, start * 320:(stop - 1) * 320 + 400]
                units.append(self._units(self.model(samples).last_hidden_state)[emit_start - start:emit_stop - start])
        return float(np.mean(np.concatenate(units) == self.offline))

    def running(self, setting: tuple[int, int, int]) -> float:
        units, cache = [], torch.zeros(1, self.convs[-1].conv.out_channels, 0)
        with torch.no_grad():
            for start, emit_start, emit_stop, stop in self._windows(setting):
                if stop > cache.shape[-1]:
                    heard = self.conv0[:, :, :(stop - 1) * CONV0_PER_FRAME + CONV0_FIELD]
                    mean, var = heard.mean(-1, keepdim=True), heard.var(-1, unbiased=False, keepdim=True)
                    cache = torch.cat([cache, self._cnn(cache.shape[-1], stop, mean, var)], -1)
                projected = self.model.feature_projection(cache[:, :, start:stop].transpose(1, 2))
                hidden = self.model.encoder(projected).last_hidden_state
                units.append(self._units(hidden)[emit_start - start:emit_stop - start])
        return float(np.mean(np.concatenate(units) == self.offline))


def costs(bundle: Path):
    """GMAC per audio second of a setting, counted from the bundle's graph: (today, CNN cached)."""
    from audiotok.runtime.cost import CostModel
    from audiotok.runtime.bundle.session import open_session

    _, manifest = open_session(bundle)
    model = CostModel(bundle, manifest)

    def per_second(setting: tuple[int, int, int]) -> tuple[float, float]:
        chunk_s, window = setting[0] / 1000, sum(setting) // 20
        stages = model.macs(window)
        today = sum(stages.values()) / chunk_s
        cnn_once = stages["cnn"] * setting[0] / sum(setting)  # the CNN of the chunk's new frames only
        return today / 1e9, (today - stages["cnn"] / chunk_s + cnn_once / chunk_s) / 1e9

    return per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--setting", action="append", default=None, metavar="C:L:X",
                        help="chunk:lookahead:context in ms; repeat (default: a built-in list)")
    parser.add_argument("--workdir", default=None,
                        help="where benchmarks/stream_latency.py keeps its model (required, except with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"stream_latency.py --smoke's tiny model at layer {SMOKE_LAYER}, {SMOKE_SECONDS:g} s, "
                             f"{len(SMOKE_SETTINGS)} settings unless given: checks the script in seconds (the suite)")
    args = parser.parse_args()
    if args.workdir is None and not args.smoke:
        parser.error("--workdir is required (the folder of a benchmarks/stream_latency.py run)")
    torch.set_num_threads(1)
    layer = SMOKE_LAYER if args.smoke else LAYER
    if args.smoke:
        args.seconds, args.setting = SMOKE_SECONDS, args.setting or [":".join(map(str, s)) for s in SMOKE_SETTINGS]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="audiotok-running-stats-"))
    checkpoint = workdir / ("hubert-tiny-random" if args.smoke else "hubert-base-random")
    centroids = workdir / f"{checkpoint.name}-L{layer}-none.npy"
    with tempfile.TemporaryDirectory() as tmp:
        audio, source = speech(args.seconds, Path(tmp))
    if args.smoke and not centroids.exists():  # what stream_latency.py --smoke builds
        build_bundles(random_hubert_base(workdir, smoke=True), layer, workdir, audio)
    if not centroids.exists():
        print(f"run benchmarks/stream_latency.py --workdir {workdir} first (it fits {centroids.name})", file=sys.stderr)
        return 1
    sim = Simulation(random_hubert_base(workdir, smoke=args.smoke), np.load(centroids), layer, audio)
    size = "tiny HuBERT layout (--smoke)" if args.smoke else "HuBERT-base size"
    print(f"{size} (random weights), layer {layer}; {args.seconds:g} s of {source}; {len(sim.offline)} frames\n")
    cost = costs(workdir / f"{checkpoint.name}-L{layer}-none.onnx")
    print("| chunk / lookahead / context ms | agreement: per-window statistics (today) | running statistics, CNN "
          "cached | GMAC per audio s: today | CNN cached |")
    print("|---|---:|---:|---:|---:|")
    for setting in [tuple(int(v) for v in text.split(":")) for text in args.setting] if args.setting else SETTINGS:
        today, cached = cost(setting)
        print(f"| {' / '.join(map(str, setting))} | {sim.per_window(setting):.1%} | {sim.running(setting):.1%} | "
              f"{today:.1f} | {cached:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
