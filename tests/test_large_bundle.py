"""Encoders of any size: a bundle past ONNX's 2 GB limit is one file whose units equal transformers',
and a SeamlessM4T-size vocabulary (10,000 centroids of width 1280) exports, tokenizes and is counted.

The 2 GB model has XLS-R 1B's layout (layer-norm CNN, stable layer norm) but three very wide layers
(hidden 4096, feed-forward 14336: 2.2 GB in float32), so that it crosses the limit, just, with little
arithmetic per frame; its audio is short for the same reason, and its weights keep torch's default
initialization (transformers' own pass over 2.2 GB of weights would double the cost of making it).
Every byte of it is written, read back and loaded several times, so it is no larger than
the limit needs. benchmarks/large_bundle.py runs the real XLS-R 1B shape (docs/bundle.md has its figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY, run_cli
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from audiotok.runtime.bundle.container import check_container
from audiotok.runtime.constants import SAMPLE_RATE, frame_count, samples_for_frames

WIDE = dict(hidden_size=4096, num_hidden_layers=3, num_attention_heads=16, intermediate_size=14336,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=64, conv_dim=(32,) * 7)
WIDE_LAYER = 3
LIMIT_BYTES = 2**31  # what one protobuf cannot hold
RSS_SLACK_MB = 600  # the acceptance bound: tokenize's peak RSS under 1.3 x bundle size + 600 MB
MIN_RELATIVE_MARGIN = 1e-4  # 25x float32's rounding of ||c||^2 - 2 h.c (about 4e-6 of ||h||^2 at width 4096)
SEEDS = 50
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def _checkpoint(folder: Path, config: dict, seed: int, *, torch_init: bool = False) -> Wav2Vec2Model:
    """A random-weight checkpoint; ``torch_init``: torch's default initialization of each layer only,
    without transformers' second pass over every weight (a few CPU-seconds per GB)."""
    torch.manual_seed(seed)
    with mock.patch.object(Wav2Vec2Model, "_init_weights", lambda self, module: None) if torch_init else nullcontext():
        model = Wav2Vec2Model(Wav2Vec2Config(**config, feat_extract_norm="layer", do_stable_layer_norm=True)).eval()
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return model


@torch.no_grad()
def _hidden(model: Wav2Vec2Model, folder: Path, layer: int, audio: np.ndarray) -> np.ndarray:
    """transformers' own path: its feature extractor, then ``hidden_states[layer]``."""
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(folder)(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return model(inputs.input_values, output_hidden_states=True).hidden_states[layer][0].numpy()


def _argmin(hidden: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((centroids ** 2).sum(1)[None] - 2 * hidden @ centroids.T).argmin(1)


def _separated_centroids(features: np.ndarray, hidden: np.ndarray, k: int = 16) -> np.ndarray:
    """k of ``features`` as centroids, the first draw whose nearest and second-nearest squared distances
    differ by at least MIN_RELATIVE_MARGIN x ||h||^2 for every frame h of ``hidden``. The graph computes
    ``||c||^2 - 2 h.c`` in float32, whose rounding scales with ||h||^2; a random-weight encoder this wide
    puts its frames close together (spread 27 around norms of 54), so some draws leave frames whose
    unit float summation order decides. The test is about the bundle's arithmetic, not about ties."""
    h = hidden.astype(np.float64)
    for seed in range(SEEDS):
        centroids = features[np.random.default_rng(seed).choice(len(features), k, replace=False)].astype(np.float32)
        squared = np.sort(((h[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        if ((squared[:, 1] - squared[:, 0]) / (h * h).sum(1)).min() > MIN_RELATIVE_MARGIN:
            return centroids
    raise AssertionError(f"no draw of {k} centroids in {SEEDS} separates every frame by {MIN_RELATIVE_MARGIN}")


def _units(stdout: bytes) -> np.ndarray:
    return np.array(stdout.decode().split("\t")[1].split(), dtype=np.int64)


@pytest.fixture(scope="module")
def clips(speech_16k, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A 1 s clip the export checks parity on, and 2 s of other speech it has never seen."""
    folder = tmp_path_factory.mktemp("large-audio")
    # float WAVs: what the runtime reads is exactly what the reference is given (PCM16 would round it)
    sf.write(folder / "seen.wav", speech_16k[:SAMPLE_RATE], SAMPLE_RATE, subtype="FLOAT")
    unseen = speech_16k[-2 * SAMPLE_RATE - 123:]
    sf.write(folder / "unseen.wav", unseen, SAMPLE_RATE, subtype="FLOAT")
    return folder / "seen.wav", folder / "unseen.wav", unseen


def test_ten_thousand_centroids_of_width_1280_export_tokenize_and_are_counted(clips, tmp_path):
    """SeamlessM4T's vocabulary size, in a container: units as transformers + numpy give them, and
    info's compute count holds the nearest-centroid step at exactly frames x k x dim."""
    k, dim = 10_000, 1280
    folder = tmp_path / "w1280"
    model = _checkpoint(folder, {**TINY, "hidden_size": dim, "num_attention_heads": 16, "num_hidden_layers": 1}, 5)
    seen, unseen_path, unseen = clips
    centroids = np.random.default_rng(0).standard_normal((k, dim)).astype(np.float32)
    np.save(tmp_path / "c.npy", centroids)
    bundle = tmp_path / "b.onnx"
    result = run_cli("export", "--model", folder, "--layer", 1, "--centroids", tmp_path / "c.npy", "--audio", seen,
                     "--layout", "container", "-o", bundle)
    assert result.returncode == 0, result.stderr.decode()
    tokens = run_cli("tokenize", bundle, unseen_path)
    assert tokens.returncode == 0, tokens.stderr.decode()
    np.testing.assert_array_equal(_units(tokens.stdout), _argmin(_hidden(model, folder, 1, unseen), centroids))
    described = run_cli("info", bundle, "--centroids", tmp_path / "back.npy")
    assert described.returncode == 0, described.stderr.decode()
    compute = json.loads(described.stdout)["compute"]
    frames = frame_count(30 * SAMPLE_RATE)
    expected = float(f"{frames * k * dim / (samples_for_frames(frames) / SAMPLE_RATE) / 1e9:.4g}")
    assert compute["stages_gmac_per_second"]["nearest_centroid"] == expected
    assert np.array_equal(np.load(tmp_path / "back.npy"), centroids)


def test_a_bundle_past_two_gigabytes_is_one_file_with_transformers_units(clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    checkpoint = folder / "checkpoint"
    seen, unseen_path, unseen = clips
    model = _checkpoint(checkpoint, WIDE, 7, torch_init=True)
    features = _hidden(model, checkpoint, WIDE_LAYER, sf.read(seen, dtype="float32")[0])
    hidden = _hidden(model, checkpoint, WIDE_LAYER, unseen)
    del model
    centroids = _separated_centroids(features, hidden)
    expected = _argmin(hidden, centroids)
    np.save(folder / "c.npy", centroids)
    out = folder / "bundle"
    out.mkdir()
    bundle = out / "units.onnx"
    result = run_cli("export", "--model", checkpoint, "--layer", WIDE_LAYER, "--centroids", folder / "c.npy",
                     "--audio", seen, "-o", bundle)
    assert result.returncode == 0, result.stderr.decode()
    assert [p.name for p in out.iterdir()] == ["units.onnx"]  # nothing written beside it
    size = bundle.stat().st_size
    assert size > LIMIT_BYTES and check_container(bundle).tensors
    tokens = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "audiotok", "tokenize",
                             str(bundle), str(unseen_path)], capture_output=True, timeout=600)
    assert tokens.returncode == 0, tokens.stderr.decode()
    np.testing.assert_array_equal(_units(tokens.stdout), expected)
    peak_mb = int(tokens.stderr.decode().strip().splitlines()[-1]) / 1024
    assert peak_mb < 1.3 * size / 2**20 + RSS_SLACK_MB, (peak_mb, size / 2**20)
