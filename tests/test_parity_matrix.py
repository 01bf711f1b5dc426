"""Exact parity on checkpoints and audio the rest of the suite never sees.

A covering design over random transformers checkpoints built here (not the cross product): HuBERT,
wav2vec2, WavLM (relative-position attention) and data2vec-audio (every family README names), in the base layout (group-norm CNN, post-LN transformer, raw waveform) and its
large layout (layer-norm CNN, pre-LN transformer, ``do_normalize``); conv_bias on and off; hidden
size 32 to 256, depth 2 to 6, 2 to 8 heads; cut at the first, a middle and the last layer; k from
20 to 500 fitted by ``audiotok train`` on generated speech. Each bundle tokenizes 13 other
utterances (several voices and rates) trimmed to lengths on and off the 320-sample grid, and must
give exactly the units of transformers' ``hidden_states[L]`` + numpy argmin, with hidden states
within ``HIDDEN_RTOL`` of transformers'. The bundle is the shipped graph (what `audiotok export`
writes, optimized, no ``features`` output); its hidden states are read from the same graph, whose
``features`` tensor (the units' input) the test declares an output of a second session.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import soxr
import torch
from conftest import run_cli, write_wav
from threadpoolctl import threadpool_limits
from transformers import AutoModel, Wav2Vec2FeatureExtractor

from audiotok.export.onnx_graph import FEATURES_NAME
from audiotok.runtime import Tokenizer
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.commands.dispatcher import main as audiotok_main
from audiotok.runtime.constants import frame_count
from audiotok.runtime.bundle.session import INPUT_NAME

RATE = 16_000
HIDDEN_RTOL = 1e-4  # per frame ||h_bundle - h_transformers|| / ||h_transformers||; fp32 measures ~1e-6

# Lengths of the 13 test files: on the frame grid (400 + 320 m samples) and off it by 1 to 319.
ON_GRID = [400, 720, 16_080, 32_080, 44_880]
OFF_GRID = [401, 719, 8_000, 16_257, 25_919, 37_123]
FULL = [None, None]  # the utterance as espeak-ng made it, resampled to 16 kHz: wherever it ends

WORDS = ["river", "seven", "garden", "yellow", "machine", "quietly", "north", "table", "listen", "bright",
         "window", "thunder", "paper", "morning", "silver", "forest", "number", "kitchen", "orange", "winter"]
VOICES = ["en", "en-us", "en-gb", "en-gb-scotland", "en-us-nyc", "en-029", "de", "fr-be", "es"]
SPEEDS = [120, 150, 175, 200, 230]


@dataclass(frozen=True)
class Case:
    """One checkpoint of the design."""

    kind: str  # "hubert", "wav2vec2", "wavlm" or "data2vec-audio"
    large: bool  # layer-norm CNN, pre-LN transformer, do_normalize (else the base layout)
    conv_bias: bool
    hidden: int
    depth: int
    heads: int
    layer: int
    k: int

    @property
    def id(self) -> str:
        layout = "large" if self.large else "base"
        bias = "bias" if self.conv_bias else "nobias"
        return f"{self.kind}-{layout}-{bias}-h{self.hidden}-d{self.depth}x{self.heads}-L{self.layer}-k{self.k}"


CASES = [  # every family x layout, conv_bias both ways, first / middle / last layer, sizes spread out
    Case("hubert", large=False, conv_bias=False, hidden=32, depth=2, heads=2, layer=1, k=20),
    Case("hubert", large=True, conv_bias=True, hidden=256, depth=4, heads=8, layer=2, k=100),
    Case("wav2vec2", large=True, conv_bias=True, hidden=64, depth=6, heads=4, layer=6, k=500),
    Case("wav2vec2", large=False, conv_bias=False, hidden=128, depth=3, heads=2, layer=1, k=50),
    Case("wavlm", large=True, conv_bias=False, hidden=64, depth=3, heads=4, layer=3, k=50),
    # data2vec-audio has one layout (layer-norm CNN, its own stack of positional convolutions, do_normalize)
    Case("data2vec-audio", large=True, conv_bias=True, hidden=32, depth=3, heads=2, layer=2, k=30),
]


def espeak(text: str, path: Path, voice: str, speed: int) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def sentence(i: int) -> str:
    rng = np.random.default_rng(1000 + i)
    return " ".join(rng.choice(WORDS, size=14 + i % 4)) + "."


@pytest.fixture(scope="module")
def training_speech(tmp_path_factory) -> Path:
    """About 70 s of generated speech in 11 utterances: what the centroids are fitted (and exports checked) on."""
    folder = tmp_path_factory.mktemp("matrix-train")
    for i in range(11):
        espeak(sentence(i), folder / f"train{i:02d}.wav", voice=VOICES[i % len(VOICES)],
               speed=SPEEDS[i % len(SPEEDS)])
    return folder


@pytest.fixture(scope="module")
def test_speech(tmp_path_factory) -> list[Path]:
    """13 other utterances, other voices and rates, at 16 kHz, trimmed to lengths on and off the grid."""
    folder = tmp_path_factory.mktemp("matrix-test")
    files = []
    for i, length in enumerate(ON_GRID + OFF_GRID + FULL):
        raw = espeak(sentence(100 + i), folder / f"raw{i:02d}.wav", voice=VOICES[(i * 4 + 1) % len(VOICES)],
                     speed=SPEEDS[(i * 3 + 2) % len(SPEEDS)])
        samples = np.concatenate(list(file_blocks(raw)))
        raw.unlink()
        if length is not None:
            assert len(samples) >= length, f"utterance {i} is too short for {length} samples"
            samples = samples[:length]
        files.append(write_wav(folder / f"test{i:02d}-{len(samples)}.wav", samples.astype(np.float32)))
    lengths = [sf.info(str(f)).frames for f in files]
    assert sum((n - 400) % 320 == 0 for n in lengths) >= 5 and sum((n - 400) % 320 != 0 for n in lengths) >= 8
    return files


def build_checkpoint(case: Case, folder: Path) -> Path:
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel, Wav2Vec2Config,
                              Wav2Vec2Model, WavLMConfig, WavLMModel)

    config_class, model_class = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
                                 "wavlm": (WavLMConfig, WavLMModel),
                                 "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel)}[case.kind]
    torch.manual_seed(sum(map(ord, case.id)))
    config = config_class(hidden_size=case.hidden, num_hidden_layers=case.depth, num_attention_heads=case.heads,
                          intermediate_size=2 * case.hidden, conv_dim=(32,) * 7, conv_bias=case.conv_bias,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                          feat_extract_norm="layer" if case.large else "group", do_stable_layer_norm=case.large)
    model_class(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=case.large, return_attention_mask=case.large).save_pretrained(folder)
    return folder


class PlainTransformers:
    """The reference a transformers user writes: feature extractor, hidden_states[L], numpy argmin."""

    def __init__(self, folder: Path, layer: int, centroids: np.ndarray) -> None:
        self.model = AutoModel.from_pretrained(folder).eval()
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
        self.layer = layer
        self.centroids = centroids.astype(np.float64)

    @torch.no_grad()
    def hidden(self, samples: np.ndarray) -> np.ndarray:
        inputs = self.extractor(samples, sampling_rate=RATE, return_tensors="pt").input_values
        return self.model(inputs, output_hidden_states=True).hidden_states[self.layer][0].numpy()

    def units(self, hidden: np.ndarray) -> np.ndarray:
        h = hidden.astype(np.float64)
        distances = (h * h).sum(1)[:, None] - 2 * h @ self.centroids.T + (self.centroids ** 2).sum(1)[None]
        return distances.argmin(1)


@dataclass(frozen=True)
class Built:
    case: Case
    checkpoint: Path
    centroids: np.ndarray
    shipped: Path  # what `audiotok export` writes: the graph users get (optimized, features dropped)
    tokenizer: Tokenizer  # of the shipped graph
    features: ort.InferenceSession  # the shipped graph with its ``features`` tensor declared an output
    hidden: dict = field(default_factory=dict, compare=False)  # path -> transformers' hidden_states[L], once per case

    def reference(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """transformers' hidden states and numpy-argmin units for ``path``, computed once per case."""
        if path not in self.hidden:
            if "plain" not in self.hidden:
                self.hidden["plain"] = PlainTransformers(self.checkpoint, self.case.layer, self.centroids)
            samples = sf.read(str(path), dtype="float32")[0]
            self.hidden[path] = self.hidden["plain"].hidden(samples)
        hidden = self.hidden[path]
        return hidden, self.hidden["plain"].units(hidden)


@pytest.fixture(scope="module")
def build(training_speech, tmp_path_factory):
    """Builds each case once: checkpoint, centroids fitted by `audiotok train`, `audiotok export` (fp32)."""
    done: dict[Case, Built] = {}

    def make(case: Case) -> Built:
        if case not in done:
            folder = tmp_path_factory.mktemp(case.id)
            checkpoint = build_checkpoint(case, folder / "checkpoint")
            centroids = folder / "units.npy"
            with threadpool_limits(limits=1, user_api="blas"):  # k-means++ on tiny matrices: threads only contend
                code = audiotok_main(["train", "--model", str(checkpoint), "--layer", str(case.layer), "--k",
                                      str(case.k), "--n-init", "2", "--max-iter", "30", "-o", str(centroids),
                                      str(training_speech)])
            assert code == 0
            shipped = folder / "shipped.onnx"
            assert audiotok_main(["export", "--model", str(checkpoint), "--centroids", str(centroids),
                                  "-o", str(shipped)]) == 0
            done[case] = Built(case, checkpoint, np.load(centroids), shipped, Tokenizer(shipped),
                               features_session(shipped))
        return done[case]

    return make


def features_session(bundle: Path) -> ort.InferenceSession:
    """The shipped graph as written, with the tensor its units are computed from (``features``: the cut
    layer's hidden states; export drops it from the outputs, its nodes stay) declared an output."""
    model = onnx.load(str(bundle))
    assert FEATURES_NAME not in [o.name for o in model.graph.output]
    assert any(FEATURES_NAME in node.output for node in model.graph.node)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(FEATURES_NAME))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only, as the runtime's sessions
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_units_and_hidden_states_equal_transformers(build, case, test_speech):
    """The bundle `audiotok export` writes (no features output, onnxruntime's fusions saved) gives
    exactly transformers' units on every file, on and off the frame grid, from hidden states within
    HIDDEN_RTOL of transformers'."""
    built = build(case)
    manifest = built.tokenizer.manifest
    assert (manifest.layer, manifest.k, manifest.dim, manifest.precision) == (case.layer, case.k, case.hidden, "fp32")
    assert manifest.encoder_type == case.kind
    assert manifest.normalization == ("utterance" if case.large else "none")
    assert FEATURES_NAME not in [o.name for o in built.tokenizer.session.get_outputs()]
    differing, worst, frames = [], 0.0, 0
    for path in test_speech:
        samples = sf.read(str(path), dtype="float32")[0]
        hidden, expected = built.reference(path)
        got = built.tokenizer.tokenize(path)
        assert len(got) == len(expected) == frame_count(len(samples)), path.name
        if not np.array_equal(got, expected):
            differing.append(f"{path.name}: {(got != expected).sum()} of {len(got)} frames")
        (features,) = built.features.run([FEATURES_NAME], {INPUT_NAME: samples[None]})
        diff = np.linalg.norm(features[0].astype(np.float64) - hidden, axis=1)
        worst = max(worst, float((diff / np.linalg.norm(hidden.astype(np.float64), axis=1)).max()))
        frames += len(got)
    assert not differing, f"{case.id}: units differ from transformers on " + "; ".join(differing)
    assert worst < HIDDEN_RTOL, f"{case.id}: hidden-state relative error {worst:.2e}"
    assert frames > 1_000 and len(np.unique(built.tokenizer.tokenize(test_speech[-1]))) > 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shipped_graph_holds_the_transformer_fusions(build, case):
    """Every layer's residual Add + LayerNorm is one SkipLayerNormalization in the graph users get, as
    the manifest records (docs/speed.md): the fusion silently matched nothing while its shape inference
    failed on the stream entry point's If."""
    built = build(case)
    fused = Tokenizer(built.shipped).manifest.provenance["optimizations"]["fused"]
    in_graph = sum(node.op_type == "SkipLayerNormalization" for node in onnx.load(str(built.shipped)).graph.node)
    assert in_graph == fused.get("SkipLayerNormalization", 0) >= case.layer, (in_graph, fused)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_export_check_reports_error_and_margin_on_a_minute(build, case):
    """The export's own check: at least 60 s of the training audio, hidden-state error and margin recorded."""
    a = Tokenizer(build(case).shipped).manifest.agreement
    assert a["frames"] >= frame_count(60 * RATE) and a["matching"] == a["frames"] and a["agreement"] == 1.0
    assert 0.0 <= a["max_hidden_relative_error"] < HIDDEN_RTOL
    assert 0.0 < a["min_margin"] and 0.0 < a["min_relative_margin"] < 1.0
    assert all(isinstance(v, (int, float, str)) for v in a.values())


def test_long_file_in_one_pass_on_request(build, test_speech, tmp_path):
    """`--max-pass-seconds 150`: a 135 s file gives the units of one transformers pass over all of it."""
    built = build(CASES[0])  # the smallest checkpoint: a 135 s attention matrix stays small
    speech = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in test_speech])
    samples = np.tile(speech, -(-135 * RATE // len(speech)))[:135 * RATE + 123]
    path = write_wav(tmp_path / "long.wav", samples)
    reference = PlainTransformers(built.checkpoint, CASES[0].layer, built.centroids)
    expected = reference.units(reference.hidden(samples))
    result = run_cli("tokenize", built.shipped, path, "--max-pass-seconds", "150")
    assert result.returncode == 0, result.stderr.decode()
    got = np.array(result.stdout.decode().split("\t")[1].split(), dtype=np.int64)
    assert len(got) == frame_count(len(samples)) and np.array_equal(got, expected), \
        f"{(got != expected).sum()} of {len(got)} frames differ"
    in_library = Tokenizer(built.shipped, max_pass_seconds=150).tokenize(samples, sample_rate=RATE)
    assert np.array_equal(in_library, expected)


@pytest.mark.parametrize("rate, subtype", [(22_050, "PCM_16"), (44_100, "PCM_24"), (8_000, "FLOAT"),
                                           (48_000, "PCM_16"), (16_000, "PCM_16")])
@pytest.mark.parametrize("seconds", [0.0251, 3.00007, 11.3])
def test_audio_path_gives_the_encoder_what_a_transformers_user_gives_it(tmp_path, rate, subtype, seconds):
    """Decoding in blocks and streaming resampling give exactly ``soundfile.read`` + ``soxr.resample``:
    every sample, the resampler's tail and the decoder's last block included, int PCM scaled alike."""
    n = int(seconds * rate)
    x = (np.random.default_rng(n).standard_normal(n) * 0.2).clip(-1, 1).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, rate, subtype=subtype)
    decoded = sf.read(str(path), dtype="float32")[0]
    expected = decoded if rate == RATE else soxr.resample(decoded, rate, RATE, quality="HQ")
    got = np.concatenate(list(file_blocks(path)))
    assert got.dtype == np.float32 and len(got) == len(expected)
    assert np.array_equal(got, expected)


def test_export_prints_one_line_for_every_family(build, training_speech, tmp_path):
    """Library chatter (transformers saying WavLM keeps its own attention, exporter progress) stays out of
    the user's terminal: a successful export prints exactly its one summary line."""
    case = next(c for c in CASES if c.kind == "wavlm")
    built = build(case)
    result = run_cli("export", "--model", built.checkpoint, "--centroids", built.checkpoint.parent / "units.npy",
                     "-o", tmp_path / "b.onnx", "--audio", training_speech)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"audiotok: wrote {tmp_path / 'b.onnx'}: "), lines


class AttentionCacheWindows:
    """What a stream with the attention cache computes, written with transformers' own modules: each
    window runs the first L layers on its chunk + lookahead frames, each layer also seeing the inputs
    its context frames had when they were emitted (so their keys and values are those of that time).
    The CNN frames are the stream's own (running statistics are tested elsewhere); everything after
    them is transformers' code, with its own attention."""

    def __init__(self, folder: Path, layer: int) -> None:
        self.model = AutoModel.from_pretrained(folder).eval()
        self.layer = layer

    @torch.no_grad()
    def _final_norm_in_hidden_states(self) -> bool:
        """Whether transformers' ``hidden_states[layer]`` is after a pre-norm encoder's final norm (its last
        hidden state is; whether the last entry of ``hidden_states`` is has changed between versions)."""
        if self.layer != self.model.config.num_hidden_layers:
            return False
        out = self.model(torch.randn(1, 8000, generator=torch.Generator().manual_seed(0)), output_hidden_states=True)
        return torch.allclose(out.hidden_states[self.layer], out.last_hidden_state)

    @torch.no_grad()
    def hidden(self, frames: np.ndarray, chunk: int, lookahead: int, context: int) -> np.ndarray:
        encoder = self.model.encoder
        pre_norm = "StableLayerNorm" in type(encoder).__name__
        reach = sum(m.padding[0] for m in encoder.pos_conv_embed.modules() if isinstance(m, torch.nn.Conv1d))
        layers = encoder.layers[:self.layer]
        cnn = torch.from_numpy(frames)[None]
        total = cnn.shape[1]
        emitted_inputs: list[dict[int, torch.Tensor]] = [{} for _ in layers]
        out = np.zeros((total, self.model.config.hidden_size), np.float32)
        for first in range(0, total, chunk):
            stop, start, emit = min(first + chunk + lookahead, total), max(0, first - context), min(first + chunk, total)
            low = max(start, first - reach)
            projected = self.model.feature_projection(cnn[:, low:stop])
            projected = projected[0] if isinstance(projected, tuple) else projected
            h = projected[:, first - low:] + encoder.pos_conv_embed(projected)[:, first - low:]
            if not pre_norm:
                h = encoder.layer_norm(h)
            for i, layer in enumerate(layers):
                past = [emitted_inputs[i][f] for f in range(start, first)]
                for j, f in enumerate(range(first, emit)):
                    emitted_inputs[i][f] = h[0, j]
                both = torch.cat([torch.stack(past)[None], h], 1) if past else h
                result = layer(both)
                h = (result[0] if isinstance(result, tuple) else result)[:, len(past):]
            if pre_norm and self._final_norm_in_hidden_states():
                h = encoder.layer_norm(h)
            out[first:emit] = h[0, :emit - first].numpy()
        return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_stream_attention_cache_equals_transformers_windows(build, case, test_speech):
    """The shipped bundle's stream with its attention cache gives, on every frame, the units of the same
    windows computed with transformers' layers (AttentionCacheWindows); WavLM (relative-position
    attention) has no attention cache and streams every frame once through the CNN cache alone."""
    from audiotok.runtime.stream import StreamSettings

    built = build(case)
    tokenizer = Tokenizer(built.shipped)
    entry = tokenizer.manifest.stream_entry
    samples = sf.read(str(test_speech[-1]), dtype="float32")[0]
    chunk, lookahead, context = 8, 3, 32  # frames: 160 / 60 / 640 ms
    stream = tokenizer.stream(settings=StreamSettings(chunk * 20, lookahead * 20, context * 20))
    assert stream._cached.uses_kv is (case.kind != "wavlm")
    frames: dict[int, np.ndarray] = {}
    extend = stream._cached.cache.extend

    def record(first: int, new: np.ndarray) -> None:
        for i, frame in enumerate(new):
            frames.setdefault(first + i, frame.copy())
        extend(first, new)

    stream._cached.cache.extend = record
    chunks = [c for i in range(0, len(samples), 1234) for c in stream.accept(samples[i:i + 1234])] + stream.flush()
    assert [c.frame for c in chunks] == list(np.cumsum([0] + [len(c.units) for c in chunks])[:-1])
    got = np.concatenate([c.units for c in chunks])
    assert len(got) == frame_count(len(samples))
    if case.kind == "wavlm":
        assert entry.kv is None
        return
    assert (entry.kv.layers, entry.kv.dim) == (case.layer, case.hidden)
    cnn = np.stack([frames[i] for i in range(len(got))])
    hidden = AttentionCacheWindows(built.checkpoint, case.layer).hidden(cnn, chunk, lookahead, context)
    h = hidden.astype(np.float64)
    c = built.centroids.astype(np.float64)
    expected = ((h * h).sum(1)[:, None] - 2 * h @ c.T + (c ** 2).sum(1)[None]).argmin(1)
    assert np.array_equal(got, expected), f"{case.id}: {(got != expected).sum()} of {len(got)} frames differ"
    assert len(np.unique(got)) > 3
