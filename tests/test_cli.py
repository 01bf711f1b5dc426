"""train -> export -> tokenize through the command line, on generated speech, with the logmel encoder."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from conftest import run_cli, write_wav

from audiotok.runtime import Tokenizer, dedup
from audiotok.runtime.commands.dispatcher import COMMANDS
from audiotok.runtime.constants import frame_count


def test_train_writes_centroids_and_sidecar(logmel_units):
    centroids = np.load(logmel_units)
    assert centroids.dtype == np.float32 and centroids.shape == (16, 80)
    side = json.loads(logmel_units.with_suffix(".json").read_text())
    assert side["encoder"]["name"] == "logmel" and side["layer"] == 0 and side["k"] == 16
    assert side["frames"] > 500 and 0 < side["hours"] < 0.01
    assert 1 <= side["clusters_used"] <= 16 and 1.0 < side["perplexity"] <= 16.0
    assert side["kmeans"]["batch_size"] == 10_000 and side["kmeans"]["n_init"] == 20
    assert side["kmeans"]["max_no_improvement"] == 100 and side["kmeans"]["reassignment_ratio"] == 0.0
    assert side["inertia"] > 0 and "scikit-learn" in side["versions"]


def test_training_is_reproducible_with_a_seed(speech_dir, logmel_units, tmp_path):
    again = tmp_path / "again.npy"
    assert run_cli("train", "--model", "logmel", "--k", "16", "-o", again, speech_dir).returncode == 0
    assert np.array_equal(np.load(again), np.load(logmel_units))


def test_tokenize_txt_has_one_line_per_file_with_one_unit_per_frame(logmel_bundle, speech_dir):
    files = sorted(speech_dir.glob("*.wav"))
    result = run_cli("tokenize", logmel_bundle, *files)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(files)
    tok = Tokenizer(logmel_bundle)
    for line, path in zip(lines, files):
        name, ids = line.split("\t")
        assert name == str(path)
        units = np.array(ids.split(), dtype=np.int64)
        assert np.array_equal(units, tok.tokenize(path))
        info = sf.info(path)
        assert len(units) == frame_count(round(info.frames * 16_000 / info.samplerate))
        assert units.min() >= 0 and units.max() < 16


def test_tokenize_jsonl_dedup_and_output_file(logmel_bundle, speech_dir, tmp_path):
    path = sorted(speech_dir.glob("*.wav"))[0]
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, path, "--format", "jsonl", "--dedup", "-o", out)
    assert result.returncode == 0 and result.stdout == b""
    record = json.loads(out.read_text())
    units = Tokenizer(logmel_bundle).tokenize(path)
    collapsed, durations = dedup(units)
    assert record["path"] == str(path) and record["frames"] == len(units)
    assert record["units"] == collapsed.tolist() and record["durations"] == durations.tolist()
    assert sum(record["durations"]) == record["frames"]
    assert all(a != b for a, b in zip(record["units"], record["units"][1:]))
    assert abs(record["seconds"] - len(units) * 0.02) < 0.01


def test_info_prints_the_manifest(logmel_bundle, logmel_units):
    result = run_cli("info", logmel_bundle)
    assert result.returncode == 0
    manifest = json.loads(result.stdout)
    assert manifest["k"] == 16 and manifest["layer"] == 0 and manifest["encoder"] == "logmel"
    assert manifest["hop"] == 320 and manifest["receptive_field"] == 400 and manifest["sample_rate"] == 16_000
    assert manifest["precision"] == "fp32" and manifest["normalization"] == "none"
    assert manifest["agreement"]["agreement"] == 1.0
    assert manifest["provenance"]["training"]["frames"] > 0
    import hashlib
    assert manifest["centroids_sha256"] == hashlib.sha256(np.load(logmel_units).astype("<f4").tobytes()).hexdigest()


def test_file_and_array_inputs_agree_across_formats_rates_and_channels(logmel_bundle, speech_16k, tmp_path):
    tok = Tokenizer(logmel_bundle)
    speech = speech_16k[:80_000]
    base = tok.tokenize(speech, sample_rate=16_000)
    assert len(base) == frame_count(80_000)
    stereo_int16 = (np.stack([speech, speech], axis=1) * 32767).astype(np.int16)
    from_int16 = tok.tokenize(stereo_int16, sample_rate=16_000)
    assert (from_int16 == base).mean() > 0.97  # 16-bit quantisation moves a few near-ties
    for fmt in ("wav", "flac", "ogg", "mp3"):
        path = tmp_path / f"s.{fmt}"
        sf.write(path, speech, 16_000)
        units = tok.tokenize(path)
        assert abs(len(units) - len(base)) <= (3 if fmt == "mp3" else 0), fmt  # mp3 adds codec padding
    resampled = tmp_path / "s44.wav"
    import soxr
    sf.write(resampled, soxr.resample(speech, 16_000, 44_100), 44_100, subtype="FLOAT")
    units44 = tok.tokenize(resampled)
    assert abs(len(units44) - len(base)) <= 1
    assert np.array_equal(units44, tok.tokenize(sf.read(resampled, dtype="float32")[0], sample_rate=44_100))


def test_short_audio_gives_zero_units(logmel_bundle, tmp_path):
    short = write_wav(tmp_path / "short.wav", np.full(399, 0.1, np.float32))
    result = run_cli("tokenize", logmel_bundle, short, "--format", "jsonl")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["units"] == [] and json.loads(result.stdout)["frames"] == 0
    exactly = write_wav(tmp_path / "400.wav", np.full(400, 0.1, np.float32))
    assert len(Tokenizer(logmel_bundle).tokenize(exactly)) == 1


def test_python_dash_m_and_help(logmel_bundle):
    top = run_cli("--help")
    listed = [line.split()[0] for line in top.stdout.decode().splitlines() if line.startswith("  ") and line.split()]
    assert top.returncode == 0 and set(COMMANDS) <= set(listed)
    for cmd in ("tokenize", "info", "train", "export"):
        res = run_cli(cmd, "--help")
        assert res.returncode == 0 and b"usage: audiotok " + cmd.encode() in res.stdout
    unknown = run_cli("frobnicate")
    assert unknown.returncode == 2 and b"unknown command" in unknown.stderr
