"""Runtime units equal the plain transformers path: hidden_states[L], then numpy argmin.

The reference here never touches audiotok's torch code: it runs the checkpoint exactly as a user of
transformers would (feature extractor, ``output_hidden_states=True``) and takes the nearest
centroid with numpy (the centroids, drawn from features in conftest, only pick the vocabulary). Lengths cover the shortest input (400 samples), one pass (1 s, 7.3 s) and the
windowed path (31 s), where the reference runs the same windows the runtime documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, Wav2Vec2FeatureExtractor

from audiotok.runtime import Tokenizer
from audiotok.runtime.constants import frame_count
from audiotok.runtime.windowing import OFFLINE_POLICY
from audiotok.runtime.windowing import plan_windows

LENGTHS = {"400 samples": 400, "1 s": 16_000, "7.3 s": 116_800, "31 s": 496_000}


class PlainTransformers:
    """The reference: transformers' own feature extractor and hidden_states[L]."""

    def __init__(self, folder, layer):
        self.model = AutoModel.from_pretrained(folder).eval()
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
        self.layer = layer

    @torch.no_grad()
    def hidden(self, samples: np.ndarray) -> np.ndarray:
        inputs = self.extractor(samples, sampling_rate=16_000, return_tensors="pt").input_values
        return self.model(inputs, output_hidden_states=True).hidden_states[self.layer][0].numpy()

    def units(self, samples: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Whole input in one pass, or the runtime's documented windows for inputs over 30 s."""
        pieces = []
        for w in plan_windows(OFFLINE_POLICY, len(samples)):
            h = self.hidden(samples[w.sample_start:w.sample_stop])
            d = (centroids ** 2).sum(1)[None] - 2 * h @ centroids.T
            pieces.append(d.argmin(1)[w.emit_start - w.start:w.emit_stop - w.start])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def long_speech(speech: np.ndarray, n: int) -> np.ndarray:
    return np.tile(speech, -(-n // len(speech)))[:n]


@pytest.fixture(scope="module", params=[("tiny_hubert", "hubert_stream_bundle"),
                                        ("tiny_wav2vec2", "wav2vec2_stream_bundles")], ids=["hubert-L2", "wav2vec2-L2"])
def case(request):
    """conftest's shared layer-2 bundles of the tiny checkpoints (HuBERT: 30 centroids, wav2vec2 with waveform
    normalization: 100, drawn from their features) and the centroids file each was exported from."""
    folder = request.getfixturevalue(request.param[0])
    bundle = request.getfixturevalue(request.param[1])
    bundle = bundle if isinstance(bundle, Path) else bundle["yes"]
    centroids = np.load(bundle.with_name("centroids.npy")).astype(np.float32)
    return PlainTransformers(folder, 2), centroids, Tokenizer(bundle)


@pytest.mark.parametrize("length", LENGTHS.values(), ids=LENGTHS.keys())
def test_runtime_units_equal_transformers_hidden_states(case, speech_16k, length):
    reference, centroids, tokenizer = case
    samples = long_speech(speech_16k, length)
    expected = reference.units(samples, centroids)
    got = tokenizer.tokenize(samples, sample_rate=16_000)
    assert got.dtype == np.int64
    assert len(got) == len(expected) == frame_count(length)
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {len(got)} frames differ"
    if len(got) > 40:  # the comparison is between real unit sequences, not constants
        assert len(np.unique(got)) > 3


def test_windowed_long_input_stays_close_to_one_full_pass(case, speech_16k):
    """Windows change a transformer's context; with 3 s of it on each side, units barely move."""
    reference, centroids, tokenizer = case
    samples = long_speech(speech_16k, LENGTHS["31 s"])
    h = reference.hidden(samples)
    full = ((centroids ** 2).sum(1)[None] - 2 * h @ centroids.T).argmin(1)
    got = tokenizer.tokenize(samples, sample_rate=16_000)
    assert (got == full).mean() >= 0.95


def test_bundle_manifest_describes_the_encoder(case):
    _, centroids, tokenizer = case
    m = tokenizer.manifest
    assert (m.k, m.dim) == centroids.shape
    assert m.layer == 2 and m.encoder_type in ("hubert", "wav2vec2")
    assert m.normalization == ("utterance" if m.encoder_type == "wav2vec2" else "none")
    assert m.agreement["agreement"] >= 0.999 and m.agreement["frames"] > 0
    assert (m.sample_rate, m.hop, m.receptive_field) == (16_000, 320, 400)
