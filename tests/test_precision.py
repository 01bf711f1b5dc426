"""fp32 / fp16 / int8 bundles, their measured agreement, --min-agreement, verify, provider fallback.

All on a tiny random-weight HuBERT (see conftest) with k=16 units trained on the espeak speech.
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli, write_wav

from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.constants import frame_count
from audiotok.runtime.tokenizer import Tokenizer

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_FLOOR = {"fp32": 0.999, "fp16": 0.98, "int8": 0.95}  # as documented in `audiotok export --help`
# Units against transformers' float32 hidden_states[L] + numpy argmin, computed in the test: docs/precision-and-speed.md's
# precision table gives the floors every export must meet (default --min-agreement), fp32 is exact.
# Measured on this tiny HuBERT (600 frames): fp32 1.0000, fp16 0.9983, int8 0.9867.
ORACLE_FLOOR = {"fp32": 1.0, "fp16": 0.98, "int8": 0.95}
# fp16 / fp32 file size on the tiny model, measured 0.501 (129,857 / 259,036 bytes): the fp32 file also holds
# the stream entry point's nodes (the attention cache's among them), which the fp16 graph does not have
FP16_SIZE = (0.48, 0.53)
INT8_SIZE = 0.66  # int8 / fp32 file size on the tiny model, measured 0.640 (149,619 / 233,911 bytes)
OFF_GRID = (8_000, 16_257, 25_919, 37_123, 47_001, 59_555)  # samples: none is 400 + 320 m; 12 s in all


@pytest.fixture(scope="module")
def tiny_units(hubert_units):
    """k=16 centroids trained by `audiotok train` on the espeak speech (conftest, shared with other modules)."""
    return hubert_units


@pytest.fixture(scope="module")
def bundles(hubert_bundles):
    """One bundle per precision, exported by `audiotok export` (conftest: built once per run, read-only here)."""
    return hubert_bundles


def _wavs(speech_dir):
    return sorted(speech_dir.glob("*.wav"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_loads_and_tokenizes(bundles, tiny_units, speech_dir, precision):
    tokenizer = Tokenizer(bundles[precision])
    k = len(np.load(tiny_units))
    for wav in _wavs(speech_dir):
        samples = np.concatenate(list(file_blocks(wav)))
        units = tokenizer.tokenize(wav)
        assert units.dtype == np.int64
        assert len(units) == frame_count(len(samples))
        assert units.min() >= 0 and units.max() < k


@pytest.mark.parametrize("precision", PRECISIONS)
def test_manifest_carries_precision_and_measured_agreement(bundles, speech_dir, precision):
    manifest = Tokenizer(bundles[precision]).manifest
    assert manifest.precision == precision
    agreement = manifest.agreement
    expected_frames = sum(frame_count(len(np.concatenate(list(file_blocks(w))))) for w in _wavs(speech_dir))
    assert agreement["reference"] == "torch fp32"
    assert agreement["frames"] == expected_frames  # parity audio defaults to the training audio
    assert 0 <= agreement["matching"] <= agreement["frames"]
    assert agreement["agreement"] == round(agreement["matching"] / agreement["frames"], 6)
    assert agreement["min_agreement"] == DEFAULT_FLOOR[precision]


@pytest.fixture(scope="module")
def reference_units(tiny_hubert, tiny_units, speech_16k, bundles):
    """Off-grid slices of the speech and transformers' units for them: the float32 model's
    hidden_states[L] with the checkpoint's own feature extractor, then argmin over the centroids."""
    import torch
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    layer = Tokenizer(bundles["fp32"]).manifest.layer
    model = AutoModel.from_pretrained(tiny_hubert).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(tiny_hubert)
    centroids = np.load(tiny_units).astype(np.float64)
    cases, start = [], 0
    for n in OFF_GRID:
        assert (n - 400) % 320 != 0
        samples = speech_16k[start:start + n]
        start += n
        with torch.no_grad():
            inputs = extractor(samples, sampling_rate=16_000, return_tensors="pt").input_values
            hidden = model(inputs, output_hidden_states=True).hidden_states[layer][0].numpy().astype(np.float64)
        distances = (hidden ** 2).sum(1)[:, None] - 2 * hidden @ centroids.T + (centroids ** 2).sum(1)[None]
        cases.append((samples, distances.argmin(1)))
    return cases


@pytest.mark.parametrize("precision", PRECISIONS)
def test_units_agree_with_transformers_float32(bundles, reference_units, precision):
    tokenizer = Tokenizer(bundles[precision])
    matching = frames = 0
    for samples, expected in reference_units:
        got = tokenizer.tokenize(samples, sample_rate=16_000)
        assert len(got) == len(expected) == frame_count(len(samples))
        matching += int((got == expected).sum())
        frames += len(got)
    assert frames > 550 and len(np.unique(np.concatenate([e for _, e in reference_units]))) > 3
    agreement = matching / frames
    print(f"{precision}: {agreement:.4f} of {frames} frames equal transformers float32")
    assert agreement >= ORACLE_FLOOR[precision], f"{precision}: {agreement:.4f} of {frames} frames"


def test_fp32_is_exact_and_int8_reports_what_it_quantized(bundles):
    assert Tokenizer(bundles["fp32"]).manifest.agreement["agreement"] == 1.0
    int8 = Tokenizer(bundles["int8"]).manifest.provenance["int8"]
    assert "linear" in int8["quantized"]
    assert int8["nodes"]["linear"] == 3 * 6 + 1  # q, k, v, out, ffn1, ffn2 per layer + feature projection
    for group, would_have in int8["kept_fp32"].items():  # rejected only because it measurably hurt
        assert group in ("pos_conv", "cnn") and group not in int8["quantized"]
        assert 0.0 <= would_have < 1.0


def test_variants_are_smaller_and_keep_centroid_distances_fp32(bundles, tiny_units):
    from audiotok.runtime.bundle.centroids import extract_centroids

    sizes = {p: bundles[p].stat().st_size for p in PRECISIONS}
    # docs/precision-and-speed.md: fp16 is "half the size", int8 at most 35% of fp32 (31.8% measured on HuBERT-base, where
    # the transformer's weights are nearly all of the file). In this 32-dim model the parts every
    # precision keeps float32 (centroids, the int8 CNN, the graph itself) weigh as much as the weights:
    # measured fp16 0.501 and int8 0.640 of fp32 (before the attention cache's nodes); the bounds sit about two
    # points around that.
    assert FP16_SIZE[0] <= sizes["fp16"] / sizes["fp32"] <= FP16_SIZE[1]
    assert sizes["int8"] / sizes["fp32"] <= INT8_SIZE
    trained = np.load(tiny_units).astype(np.float32)
    for precision in PRECISIONS:  # distances use the exact fp32 centroids in every precision
        recovered = extract_centroids(bundles[precision], Tokenizer(bundles[precision]).manifest)
        assert recovered.dtype == np.float32
        assert np.array_equal(recovered, trained), precision


def test_fp16_on_the_cpu_provider_alone_keeps_its_weights_fp16(bundles, speech_dir):
    """Only an fp16 bundle on the CPU provider alone runs its weights' Casts per call (the fusion
    that would hold a float32 copy of every weight is off, the order runs each Cast just before its
    reader); fp32 and int8 sessions, and fp16 with a GPU provider first, are made as before."""
    from audiotok.runtime.bundle.session import FP16_WEIGHT_FUSION, fp16_on_cpu

    for precision in PRECISIONS:
        options = ort.SessionOptions()
        extra = fp16_on_cpu(bundles[precision], options, ["CPUExecutionProvider"])
        if precision == "fp16":
            assert extra == {"disabled_optimizers": [FP16_WEIGHT_FUSION]}
            assert options.execution_order == ort.ExecutionOrder.PRIORITY_BASED
        else:
            assert extra == {} and options.execution_order == ort.ExecutionOrder.DEFAULT, precision
    options = ort.SessionOptions()
    assert fp16_on_cpu(bundles["fp16"], options, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == {}
    assert options.execution_order == ort.ExecutionOrder.DEFAULT
    units = Tokenizer(bundles["fp16"]).tokenize(_wavs(speech_dir)[0])  # the session made that way runs
    assert len(units) and units.dtype == np.int64


def test_min_agreement_refuses_and_writes_nothing(bundles, tiny_hubert, tiny_units, tmp_path):
    measured = Tokenizer(bundles["int8"]).manifest.agreement["agreement"]
    assert measured < 1.0, "int8 rounding is expected to move at least one frame of the tiny model"
    out = tmp_path / "refused.onnx"
    result = run_cli("export", "--model", tiny_hubert, "--centroids", tiny_units, "--precision", "int8",
                     "--min-agreement", f"{(measured + 1.0) / 2:.7f}", "-o", out)
    stderr = result.stderr.decode()
    lines = [line for line in stderr.splitlines() if line.startswith("audiotok:")]
    assert result.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("audiotok: error: the int8 bundle's units equal torch's on")
    assert "nothing was written" in lines[0] and "--precision fp32" in lines[0]
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_min_agreement_outside_zero_one_is_refused(tiny_units, tmp_path):
    result = run_cli("export", "--model", "logmel", "--centroids", tiny_units, "--min-agreement", "99.9",
                     "-o", tmp_path / "x.onnx")
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1] == (
        "audiotok: error: --min-agreement is a fraction of frames in [0, 1], got 99.9")
    assert list(tmp_path.iterdir()) == []


def _absent_provider() -> str:
    available = ort.get_available_providers()
    aliases = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
               "coreml": "CoreMLExecutionProvider", "rocm": "ROCMExecutionProvider"}
    return next(short for short, full in aliases.items() if full not in available)


def test_tokenize_falls_back_to_cpu_with_a_warning(bundles, speech_dir):
    wav = _wavs(speech_dir)[0]
    provider = _absent_provider()
    plain = run_cli("tokenize", bundles["int8"], wav, "--threads", "1")
    fallback = run_cli("tokenize", bundles["int8"], wav, "--provider", provider, "--threads", "1")
    assert plain.returncode == 0 and fallback.returncode == 0, fallback.stderr.decode()
    assert fallback.stdout == plain.stdout and plain.stdout.strip()
    warning = fallback.stderr.decode().strip()
    assert warning.startswith(f"audiotok: warning: execution provider '{provider}' is not available")
    assert warning.endswith("falling back to CPU")


def test_tokenizer_api_falls_back_to_cpu(bundles, speech_dir, caplog):
    """As a library the fallback is a warning record on the "audiotok" logger, for the caller to route."""
    wav = _wavs(speech_dir)[1]
    expected = Tokenizer(bundles["fp32"]).tokenize(wav)
    caplog.clear()
    tokenizer = Tokenizer(bundles["fp32"], providers=[_absent_provider(), "cpu"], threads=2)
    records = [r for r in caplog.records if r.name == "audiotok" and r.levelname == "WARNING"]
    assert len(records) == 1 and records[0].getMessage().endswith("falling back to CPU")
    assert tokenizer.providers == ["CPUExecutionProvider"]
    assert np.array_equal(tokenizer.tokenize(wav), expected)


def test_verify_prints_agreement_per_file_and_in_total(bundles, tiny_hubert, speech_dir):
    result = run_cli("verify", bundles["fp32"], "--model", tiny_hubert, speech_dir)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().strip().splitlines()
    wavs = _wavs(speech_dir)
    frames = [frame_count(len(np.concatenate(list(file_blocks(w))))) for w in wavs]
    assert [line.split("\t") for line in lines[:-1]] == [
        [str(w), f"{n}/{n}", "100.0000%"] for w, n in zip(wavs, frames)]
    assert lines[-1].startswith(f"agreement 100.0000% of {sum(frames)} frames in {len(wavs)} files "
                                f"(fp32 bundle on CPUExecutionProvider vs torch fp32")


def test_verify_runs_long_files_in_one_pass_where_memory_allows(bundles, tiny_hubert, speech_16k, tmp_path):
    """A 40 s file is over the runtime's 30 s default; verify compares it in one pass on both sides."""
    wav = write_wav(tmp_path / "long.wav", np.tile(speech_16k, 3)[: 40 * 16_000 + 77])
    result = run_cli("verify", bundles["fp32"], "--model", tiny_hubert, wav)
    assert result.returncode == 0, result.stderr.decode()
    limit = float(re.search(r"files up to (\S+) s run in one pass", result.stderr.decode()).group(1))
    assert limit >= 40  # two attention heads of 32 dims: far more than 40 s fits
    n = frame_count(40 * 16_000 + 77)
    assert result.stdout.decode().splitlines()[0] == f"{wav}\t{n}/{n}\t100.0000%"
    bad = run_cli("verify", bundles["fp32"], "--model", tiny_hubert, "--max-pass-seconds", "-1", wav)
    assert bad.returncode == 1 and bad.stderr.decode().strip().splitlines() == [
        "audiotok: error: --max-pass-seconds must be at least 0.025 s (one frame's 400-sample receptive field), "
        "got -1"]


def test_verify_fails_below_its_min_agreement(bundles, tiny_hubert, speech_dir):
    result = run_cli("verify", bundles["int8"], "--model", tiny_hubert, "--provider", _absent_provider(),
                     "--min-agreement", "1.0", speech_dir)
    out = result.stdout.decode().strip().splitlines()
    total = out[-1]
    assert total.startswith("agreement ") and "(int8 bundle on CPUExecutionProvider" in total
    fraction = float(total.split()[1].rstrip("%")) / 100
    assert fraction < 1.0
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1] == (
        f"audiotok: error: agreement {fraction:.4%} is below --min-agreement 100.0000%")


def test_verify_refuses_other_encoders_and_other_centroids(bundles, tiny_hubert, speech_dir, tmp_path):
    wav = _wavs(speech_dir)[0]
    result = run_cli("verify", bundles["int8"], "--model", "logmel", wav)
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1] == (
        f"audiotok: error: {bundles['int8']} was exported from {tiny_hubert} (hubert), not from --model logmel")
    other = tmp_path / "other.npy"
    np.save(other, np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32))
    result = run_cli("verify", bundles["int8"], "--model", tiny_hubert, "--centroids", other, wav)
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1].startswith(
        f"audiotok: error: --centroids {other} are not the ones this bundle was exported with")
