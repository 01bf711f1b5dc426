"""The bundle's stream entry point: CNN frames computed once and cached, running statistics.

Exact where the encoder's frames are local (logmel; a layer-norm CNN without waveform
normalization): streamed units equal offline units whenever the recomputing stream's do. For a
group-norm CNN (HuBERT-base layout) the first convolution's statistics come from everything heard
so far: every frame still comes out once, in order, and agreement with offline is measured. The
cache holds one window's frames whatever the stream's length, a bundle without the entry point
streams as before, and offline units do not change.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_bundles import manifest_of, replace_field, with_manifest

from audiotok.runtime import Tokenizer
from audiotok.runtime.stream import Stream, StreamSettings

RATE = 16_000
BLOCK = 320


def streamed(stream, samples: np.ndarray, block: int = BLOCK) -> np.ndarray:
    chunks = [c for i in range(0, len(samples), block) for c in stream.accept(samples[i:i + block])]
    chunks += stream.flush()
    starts = [c.frame for c in chunks]
    assert starts == list(np.cumsum([0] + [len(c.units) for c in chunks])[:-1]), "frames not once, in order"
    return np.concatenate([c.units for c in chunks])


@pytest.fixture(scope="module")
def layer_norm(wav2vec2_stream_bundles) -> Tokenizer:
    """The tiny wav2vec2 (wav2vec2-large's layer-norm CNN) exported without waveform normalization (conftest)."""
    tokenizer = Tokenizer(wav2vec2_stream_bundles["no"])
    assert tokenizer.manifest.normalization == "none"
    return tokenizer


@pytest.fixture(scope="module")
def group_norm(hubert_stream_bundle) -> Tokenizer:
    """The tiny HuBERT (group-norm CNN) at layer 2, 30 centroids drawn from its features (conftest)."""
    return Tokenizer(hubert_stream_bundle)


def test_logmel_bundles_stream_exactly_through_the_entry_point(logmel_bundle, speech_16k):
    tokenizer = Tokenizer(logmel_bundle)
    assert tokenizer.manifest.stream_entry.kind == "exact"
    offline = tokenizer.tokenize(speech_16k, sample_rate=RATE)
    for setting in [(160, 60, 320), (20, 0, 0), (640, 80, 640)]:
        stream = tokenizer.stream(settings=StreamSettings(*setting))
        assert stream._cached is not None
        assert np.array_equal(streamed(stream, speech_16k, 1111), offline)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_a_layer_norm_cnn_streams_offline_units_when_the_window_covers_the_input(layer_norm, speech_16k, kv_cache):
    """With the lookahead reaching the input's end, every window sees all of it: the attention cache then
    holds offline keys and values, and without it each window is the offline computation."""
    clip = speech_16k[: 4 * RATE]
    assert layer_norm.manifest.stream_entry.kind == "exact"
    offline = layer_norm.tokenize(clip, sample_rate=RATE)
    stream = layer_norm.stream(chunk_ms=200, lookahead_ms=4000, context_ms=4000, kv_cache=kv_cache)
    assert stream._cached.uses_kv is kv_cache
    assert np.array_equal(streamed(stream, clip), offline)


def test_a_layer_norm_cnn_caches_exactly_what_recomputing_gives(layer_norm, speech_16k):
    """Cached CNN frames are the frames each window would recompute: without the attention cache the
    units of every window are the same as recomputing it from its samples."""
    settings = StreamSettings(160, 60, 320)
    cached = streamed(layer_norm.stream(settings=settings, kv_cache=False), speech_16k)
    assert np.array_equal(cached, streamed(Stream(layer_norm.units_for_window, settings), speech_16k))


# Measured on conftest's tiny HuBERT (group-norm CNN) at layer 2, 30 centroids drawn from its features,
# conftest's ~18 s of speech (2026-12-02): running statistics without the attention cache 92.0% at
# 160/60/320 and 97.0% at 640/80/640, where recomputing each window gave 74.8% and 90.2%; with the
# attention cache 89.9% at 160/40/320, 93.5% at 240/60/1920 and 90.3% at 160/40/1920 (on this tiny
# model the cache agrees less than rerunning the window; on HuBERT-base's size more: docs/streaming.md).
# The floors are those less 3 points.
GROUP_NORM_FLOORS = {(160, 60, 320, False): 0.89, (640, 80, 640, False): 0.94,
                     (160, 40, 320, True): 0.87, (240, 60, 1920, True): 0.90, (160, 40, 1920, True): 0.87}


@pytest.mark.parametrize("setting", GROUP_NORM_FLOORS, ids=lambda s: "{}-{}-{}-kv{}".format(*s))
def test_a_group_norm_cnn_streams_every_frame_once_with_running_statistics(group_norm, speech_16k, setting):
    assert group_norm.manifest.stream_entry.kind == "running-stats"
    assert group_norm.manifest.stream_entry.kv is not None
    offline = group_norm.tokenize(speech_16k, sample_rate=RATE)
    *lengths, kv_cache = setting
    stream = group_norm.stream(settings=StreamSettings(*lengths), kv_cache=kv_cache)
    assert stream._cached.uses_kv is kv_cache
    units = streamed(stream, speech_16k, 333)
    assert len(units) == len(offline) and len(np.unique(offline)) > 5
    agreement = float((units == offline).mean())
    assert agreement >= GROUP_NORM_FLOORS[setting], f"{setting}: {agreement:.4f}"


def test_the_attention_cache_holds_the_context_whatever_the_length(group_norm, speech_16k):
    """Keys and values of at most context + chunk frames, and the CNN cache at most one window."""
    stream = group_norm.stream(chunk_ms=160, lookahead_ms=40, context_ms=640)
    audio = np.tile(speech_16k[: 3 * RATE], 10)  # 30 s
    held = []
    for i in range(0, len(audio), 1600):
        stream.accept(audio[i:i + 1600])
        held.append((stream._cached.kv.rows.shape[2], len(stream._cached.cache.frames)))
    kv, cnn = np.array(held).T
    assert kv.max() <= (640 + 160) // 20 and cnn.max() <= (640 + 160 + 40) // 20
    assert kv[len(kv) // 2:].max() == kv[:len(kv) // 2].max()  # flat, not growing with the stream


def test_the_stream_command_turns_the_attention_cache_off(group_norm, speech_16k, tmp_path):
    """`audiotok stream --no-kv-cache` streams as Tokenizer.stream(kv_cache=False), and its latency target
    chooses among the settings measured without the cache (none has the cached ladder's 1920 ms context);
    without the flag, the attention cache's. (On this tiny model both give the same units: its attention
    barely mixes frames, so the chosen setting is what tells them apart.)"""
    import re

    from conftest import run_cli, write_wav

    wav = write_wav(tmp_path / "clip.wav", speech_16k)
    for off in (False, True):
        result = run_cli("stream", group_norm.path, "--input", wav, "--latency-ms", "2000",
                         *(["--no-kv-cache"] if off else []))
        assert result.returncode == 0, result.stderr.decode()
        chosen = re.search(r"chunk/lookahead/context (\d+)/(\d+)/(\d+) ms", result.stderr.decode())
        chunk, lookahead, context = map(int, chosen.groups())
        assert (context == 1920) is not off, result.stderr.decode()
        expected = streamed(group_norm.stream(chunk_ms=chunk, lookahead_ms=lookahead, context_ms=context,
                                              kv_cache=not off), speech_16k)
        assert np.array_equal(np.array(result.stdout.decode().split(), dtype=np.int64), expected)


def test_the_cache_holds_one_window_whatever_the_length(logmel_bundle, speech_16k):
    tokenizer = Tokenizer(logmel_bundle)
    settings = StreamSettings(100, 40, 200)
    window = (100 + 40 + 200) // 20
    stream = tokenizer.stream(settings=settings)
    audio = np.tile(speech_16k[: 3 * RATE], 10)  # 30 s
    held = []
    for i in range(0, len(audio), 1600):
        stream.accept(audio[i:i + 1600])
        held.append(len(stream._cached.cache.frames))
    assert max(held) <= window and max(held[len(held) // 2:]) == max(held[:len(held) // 2])


def test_a_bundle_without_the_entry_point_streams_by_recomputing(logmel_bundle, speech_16k, tmp_path):
    import onnx

    model = onnx.load(str(logmel_bundle))
    old = with_manifest(model, replace_field(manifest_of(model), "stream", "null"), tmp_path / "old.onnx")
    tokenizer = Tokenizer(old)
    assert tokenizer.manifest.stream_entry is None
    stream = tokenizer.stream(chunk_ms=160, lookahead_ms=60, context_ms=320)
    assert stream._cached is None
    assert np.array_equal(streamed(stream, speech_16k[: 3 * RATE]),
                          Tokenizer(logmel_bundle).tokenize(speech_16k[: 3 * RATE], sample_rate=RATE))


def test_offline_units_ignore_the_running_statistics(group_norm, speech_16k):
    """With stream_on false (the default) the graph is the offline graph: statistics and skip passed in
    change nothing, and the units equal those of the inputs' defaults passed explicitly."""
    clip = np.ascontiguousarray(speech_16k[: 2 * RATE], np.float32)[None]
    base = group_norm.session.run(["units"], {"waveform": clip})[0]
    entry = group_norm.manifest.stream_entry
    off = {"stream_cache": np.zeros((1, 0, entry.frame_dim), np.float32), "stream_on": np.array(False),
           "stream_cnn_stats": np.full((3, entry.stats_channels), 5.0), "stream_skip": np.array(7, np.int64)}
    assert np.array_equal(group_norm.session.run(["units"], {"waveform": clip, **off})[0], base)
    on = group_norm.session.run(["units"], {"waveform": clip, **off, "stream_on": np.array(True)})[0]
    assert not np.array_equal(on, base)  # the statistics passed in are used when the stream asks for them
    kv = entry.kv
    empty = {"stream_context": np.zeros((1, 0, entry.frame_dim), np.float32),
             "stream_kv": np.zeros((kv.layers, 2, 0, kv.dim), np.float32)}
    assert np.array_equal(group_norm.session.run(["units"], {"waveform": clip, **empty})[0], base)
    keys = {"stream_kv": 10 * np.random.default_rng(0).standard_normal((kv.layers, 2, 100, kv.dim)).astype(np.float32)}
    assert not np.array_equal(group_norm.session.run(["units"], {"waveform": clip, **keys})[0], base)
    assert json.loads(manifest_of_session(group_norm))["stream"]["inputs"][0] == "stream_cache"


def manifest_of_session(tokenizer: Tokenizer) -> str:
    return tokenizer.session.get_modelmeta().custom_metadata_map["audiotok"]
