"""Encoder adapters: frame grid, layer cut and normalization match what transformers defines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, Wav2Vec2FeatureExtractor

from audiotok.models import load_encoder
from audiotok.models.base import utterance_normalize
from audiotok.runtime.constants import frame_count


@pytest.mark.parametrize("n", [400, 719, 720, 1_040, 16_000, 116_800])
def test_logmel_frame_count_matches_the_hubert_cnn(n, tiny_hubert):
    x = torch.randn(1, n)
    logmel = load_encoder("logmel")
    hubert = AutoModel.from_pretrained(tiny_hubert).eval()
    with torch.no_grad():
        assert logmel(x).shape == (1, frame_count(n), 80)
        assert hubert(x).last_hidden_state.shape[1] == frame_count(n) == (n - 400) // 320 + 1


def test_logmel_frames_depend_only_on_their_own_400_samples():
    x = torch.randn(1, 16_000)
    y = x.clone()
    y[0, 8_000:] = 0.0  # frames ending before sample 8000 must not change
    logmel = load_encoder("logmel")
    with torch.no_grad():
        a, b = logmel(x)[0], logmel(y)[0]
    untouched = (8_000 - 400) // 320 + 1
    assert torch.equal(a[:untouched], b[:untouched]) and not torch.equal(a, b)
    assert torch.isfinite(logmel(torch.zeros(1, 800))).all()  # digital silence has a floor, not -inf


@pytest.mark.parametrize("fixture", ["tiny_hubert", "tiny_wav2vec2"])
def test_cut_encoder_equals_hidden_states_at_every_layer(request, fixture):
    folder = request.getfixturevalue(fixture)
    full = AutoModel.from_pretrained(folder).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    speech = np.random.default_rng(3).standard_normal(24_000).astype(np.float32) * 0.2
    inputs = extractor(speech, sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        hidden = full(inputs, output_hidden_states=True).hidden_states
        for layer in range(len(hidden)):
            encoder = load_encoder(str(folder), layer)
            assert encoder.spec.layer == layer and encoder.spec.num_layers == 3
            assert len(encoder.model.encoder.layers) == layer  # later layers are never computed
            got = encoder(torch.from_numpy(speech)[None])
            assert torch.allclose(got, hidden[layer], atol=1e-5), layer


def test_utterance_normalize_matches_the_feature_extractor():
    x = np.random.default_rng(0).standard_normal(20_000).astype(np.float32) * 0.3 + 0.05
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=16_000).input_values[0]
    got = utterance_normalize(torch.from_numpy(x)[None])[0].numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_normalization_follows_the_checkpoint(tiny_hubert, tiny_wav2vec2):
    assert load_encoder(str(tiny_hubert), 1).spec.normalization == "none"
    assert load_encoder(str(tiny_wav2vec2), 1).spec.normalization == "utterance"
    assert load_encoder(str(tiny_hubert), 1, normalize="yes").spec.normalization == "utterance"
