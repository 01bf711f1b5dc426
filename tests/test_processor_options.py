"""Processor options (channel, silence trim, last-frame padding), faiss k-means, frame caps, and their bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.constants import frame_count
from audiotok.runtime.audio.preprocess import Preprocess, padded_length, prepared_blocks, trim_bounds
from audiotok.runtime.stream import Stream, StreamSettings
from audiotok.runtime.windowing import OFFLINE_POLICY, Windower
from audiotok.train.faiss_kmeans import default_niter
from conftest import error_line, run_cli, write_wav


def frames_padded(n: int) -> int:
    """Frames of audioTokenizer's rule, by brute force: grow n until (n - 400) % 320 == 0."""
    m = n
    while (m - 400) % 320:
        m += 1
    return frame_count(m)


def test_padded_length_is_the_next_length_on_the_frame_grid():
    for n in range(0, 2_000):
        m = padded_length(n)
        assert m >= n and (m - 400) % 320 == 0 and m - n < 320
    assert [frames_padded(n) for n in (0, 80, 81, 400, 401, 720, 721)] == [0, 0, 1, 1, 2, 2, 3]


def framed_trim(y: np.ndarray, top_db: float) -> tuple[int, int]:
    """librosa.effects.trim's bounds written with explicit frames (2048 every 512, centred, zero-padded)."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y.astype(np.float64), 1024), 2048)[::512]
    power = np.mean(frames[:1 + len(y) // 512] ** 2, axis=1)
    db = 10 * np.log10(np.maximum(1e-10, power)) - 10 * np.log10(max(1e-10, power.max()))
    loud = np.flatnonzero(db > -top_db)
    return loud[0] * 512, min(len(y), (loud[-1] + 1) * 512)


@pytest.mark.parametrize("block", [1_000, 512, 7, 100_000])
def test_trim_bounds_match_librosas_rule_whatever_the_block_size(block):
    rng = np.random.default_rng(block)
    for _ in range(5):
        y = np.concatenate([1e-4 * rng.standard_normal(rng.integers(0, 9000)),
                            rng.standard_normal(rng.integers(1, 20000)) * 0.5,
                            1e-3 * rng.standard_normal(rng.integers(0, 9000))]).astype(np.float32)
        blocks = [y[i:i + block] for i in range(0, len(y), block)]
        for top_db in (10, 30, 60):
            assert trim_bounds(blocks, top_db) == framed_trim(y, top_db)


def _fake_units(samples: np.ndarray) -> np.ndarray:
    """One unit per frame: 1 where the frame saw any non-zero sample, 0 where it saw only zeros."""
    n = frame_count(len(samples))
    return np.array([int(np.any(samples[320 * i:320 * i + 400])) for i in range(n)], np.int64)


@pytest.mark.parametrize("seconds", [0.9, 31.3])  # one pass, and windowed
def test_pad_rule_offline_and_stream_give_the_padded_frame_count(seconds):
    n = int(seconds * 16_000) + 123
    audio = np.full(n, 0.5, np.float32)
    _, blocks = prepared_blocks(lambda: iter([audio[:5000], audio[5000:]]), Preprocess(pad_last_frame=True))
    windower = Windower(OFFLINE_POLICY, _fake_units)
    pieces = [u for b in blocks for _, u in windower.push(b)] + [u for _, u in windower.finish()]
    offline = np.concatenate(pieces)
    assert len(offline) == frames_padded(n) == frame_count(n) + 1
    assert offline.all()  # the padded frame holds the input's last samples, not only zeros
    stream = Stream(_fake_units, StreamSettings(chunk_ms=640, lookahead_ms=80, context_ms=640, pad_last_frame=True))
    chunks = [c for i in range(0, n, 1234) for c in stream.accept(audio[i:i + 1234])] + stream.flush()
    assert np.concatenate([c.units for c in chunks]).tolist() == offline.tolist()


def test_channel_picks_one_channel_of_a_file(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (16_000, 2)).astype(np.float32)
    path = write_wav(tmp_path / "s.wav", stereo)
    for channel in (0, 1):
        np.testing.assert_array_equal(np.concatenate(list(file_blocks(path, channel=channel))), stereo[:, channel])
    np.testing.assert_allclose(np.concatenate(list(file_blocks(path))), stereo.mean(axis=1), atol=1e-7)



def _one_error_line(result) -> str:
    assert result.returncode == 1, result.stderr.decode()
    return error_line(result)


@pytest.mark.parametrize("value", ["-3", "abc", "nan"])
def test_bad_trim_silence_is_one_line_and_writes_nothing(value, speech_dir, logmel_bundle, tmp_path):
    out = tmp_path / "u.npy"
    line = _one_error_line(run_cli("train", "--k", "4", "-o", out, speech_dir, f"--trim-silence={value}"))
    assert "--trim-silence" in line and value in line
    assert not out.exists() and not (tmp_path / "audiotok-features").exists()
    line = _one_error_line(run_cli("tokenize", logmel_bundle, speech_dir, f"--trim-silence={value}",
                                   "-o", tmp_path / "u.txt"))
    assert "--trim-silence" in line
    assert not (tmp_path / "u.txt").exists()


def test_channel_beyond_a_file_fails_that_file_only(logmel_bundle, speech_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    speech, rate = sf.read(str(speech_dir / "utt0.wav"))
    write_wav(corpus / "a-mono.wav", speech.astype(np.float32), rate)
    write_wav(corpus / "b-stereo.wav", np.stack([speech, speech[::-1]], axis=1).astype(np.float32), rate)
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, corpus, "--channel", "1", "--format", "jsonl", "-o", out)
    line = _one_error_line(result)
    assert "1 of 2 files failed" in line
    warning = [w for w in result.stderr.decode().splitlines() if "a-mono.wav" in w]
    assert len(warning) == 1 and "has 1 channel" in warning[0] and "--channel 1" in warning[0]
    records = [json.loads(r) for r in out.read_text().splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in records] == ["b-stereo.wav"]
    mono = write_wav(tmp_path / "reversed.wav", speech[::-1].astype(np.float32), rate)  # channel 1 alone
    reversed_units = run_cli("tokenize", logmel_bundle, mono)
    assert reversed_units.stdout.decode().split("\t")[1].split() == list(map(str, records[0]["units"]))
    mixed = run_cli("tokenize", logmel_bundle, corpus / "b-stereo.wav")  # the default mixes: other units
    assert mixed.stdout.decode().split("\t")[1].split() != list(map(str, records[0]["units"]))
    line = _one_error_line(run_cli("tokenize", logmel_bundle, corpus, "--channel", "left"))
    assert "--channel" in line and "'left'" in line


def test_stream_takes_the_channel_from_a_file_and_from_stdin(logmel_bundle, speech_dir, tmp_path):
    """logmel frames see only their own samples, so streamed units equal offline ones: channel 1 alone."""
    speech, rate = sf.read(str(speech_dir / "utt2.wav"))
    stereo = np.stack([speech, speech[::-1]], axis=1).astype(np.float32)
    path = write_wav(tmp_path / "stereo.wav", stereo, rate)
    mono = write_wav(tmp_path / "right.wav", stereo[:, 1].copy(), rate)
    expected = run_cli("tokenize", logmel_bundle, mono).stdout.decode().split("\t")[1].split()
    from_file = run_cli("stream", logmel_bundle, "--input", path, "--channel", "1")
    assert from_file.returncode == 0, from_file.stderr.decode()
    assert from_file.stdout.decode().split() == expected
    pcm = (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()
    right16 = write_wav(tmp_path / "right16.wav", (np.frombuffer(pcm, "<i2").reshape(-1, 2)[:, 1] / 32768)
                        .astype(np.float32), rate)
    from_stdin = run_cli("stream", logmel_bundle, "--input", "-", "--channels", "2", "--channel", "1",
                         "--rate", str(rate), input=pcm)
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    assert from_stdin.stdout.decode().split() == \
        run_cli("tokenize", logmel_bundle, right16).stdout.decode().split("\t")[1].split()
    line = _one_error_line(run_cli("stream", logmel_bundle, "--input", "-", "--channels", "2", "--channel", "2",
                                   input=pcm))
    assert "--channel 2" in line


def test_faiss_missing_names_the_extra(speech_dir, tmp_path):
    hide = tmp_path / "nofaiss"
    hide.mkdir()
    (hide / "faiss.py").write_text("raise ImportError('No module named faiss')\n")
    out = tmp_path / "u.npy"
    env = {"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    for extra in (["--kmeans", "faiss"], ["--write-faiss-index"]):
        line = _one_error_line(run_cli("train", "--k", "4", "-o", out, speech_dir, *extra, env=env))
        assert "audiotok[faiss]" in line
        assert not out.exists() and not (tmp_path / "audiotok-features").exists()


def test_feature_norm_contradicting_the_sidecar_is_refused(logmel_units, tmp_path):
    out = tmp_path / "b.onnx"
    line = _one_error_line(run_cli("export", "--centroids", logmel_units, "--feature-norm", "l2", "-o", out))
    assert "--feature-norm l2" in line and "'none'" in line
    assert not out.exists() and not list(tmp_path.iterdir())


def test_faiss_defaults_follow_audiotokenizer():
    assert default_niter(100_000, 768, 100) == 50  # 20 + 20 + 10 for dim >= 512
    assert default_niter(100_000, 768, 1000) == 60
    assert default_niter(100_000, 32, 8) == 30  # clipped below
    assert default_niter(3_000_000, 1024, 10_000) == 80


def test_faiss_train_with_caps_pads_through_export_and_tokenize(speech_dir, tmp_path):
    """train --kmeans faiss --pad-last-frame with frame caps; export takes the frame rule from the sidecar."""
    out = tmp_path / "units.npy"
    result = run_cli("train", "--model", "logmel", "--k", "6", "-o", out, speech_dir, "--kmeans", "faiss",
                     "--max-frames-file", "120", "--max-frames-total", "300", "--pad-last-frame",
                     "--write-faiss-index", "--faiss-nredo", "2")
    assert result.returncode == 0, result.stderr.decode()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["frames"] == 4 * 120  # every fixture file has more than 120 frames
    assert (sidecar["max_frames_file"], sidecar["max_frames_total"], sidecar["kmeans"]["nredo"]) == (120, 300, 2)
    assert sidecar["faiss_index"] == "units.kmeans_faiss.index" and (tmp_path / sidecar["faiss_index"]).is_file()
    bundle = tmp_path / "units.onnx"
    result = run_cli("export", "--centroids", out, "-o", bundle)
    assert result.returncode == 0, result.stderr.decode()
    info = run_cli("info", bundle)
    assert json.loads(info.stdout)["frame_rule"] == "pad" and "frame rule pad" in info.stderr.decode()
    result = run_cli("tokenize", bundle, speech_dir, "--format", "jsonl")
    for record in map(json.loads, result.stdout.decode().splitlines()):
        n = sum(len(b) for b in file_blocks(record["path"]))
        assert record["frames"] == frames_padded(n)
    verify = run_cli("verify", bundle, speech_dir, "--model", "logmel", "--min-agreement", "1")
    assert verify.returncode == 0, verify.stderr.decode()


def test_trim_silence_at_tokenize_time_reports_the_offset(logmel_bundle, speech_dir, tmp_path):
    speech, rate = sf.read(str(speech_dir / "utt1.wav"))
    lead = np.zeros(int(1.5 * rate))
    path = write_wav(tmp_path / "late.wav", np.concatenate([lead, speech, lead]).astype(np.float32), rate)
    plain = json.loads(run_cli("tokenize", logmel_bundle, path, "--format", "jsonl").stdout)
    trimmed = json.loads(run_cli("tokenize", logmel_bundle, path, "--format", "jsonl", "--trim-silence", "30").stdout)
    assert "offset" not in plain
    start, stop = framed_trim(np.concatenate(list(file_blocks(path))), 30)
    assert trimmed["offset_samples"] == start and 1.3 < trimmed["offset"] < 2.0
    assert trimmed["offset"] == round(start / 16_000, 4)
    assert trimmed["frames"] == frame_count(stop - start) < plain["frames"] - 2 * 1.3 * 50


def test_evaluate_sees_the_audio_tokenize_sees(logmel_bundle, speech_dir, tmp_path):
    """evaluate's units come from the same channel choice and trim as tokenize's, frame for frame."""
    speech, rate = sf.read(str(speech_dir / "utt1.wav"))
    lead = np.zeros(int(1.5 * rate))
    left = np.concatenate([lead, speech, lead])
    stereo = np.stack([np.zeros_like(left), left], axis=1).astype(np.float32)  # the speech only on channel 1
    path = write_wav(tmp_path / "stereo.wav", stereo, rate)
    for options in (["--channel", "1"], ["--channel", "1", "--trim-silence", "30"], ["--channel", "mean"]):
        tokenized = json.loads(run_cli("tokenize", logmel_bundle, path, "--format", "jsonl", *options).stdout)
        result = run_cli("evaluate", logmel_bundle, path, "--json", *options)
        assert result.returncode == 0, result.stderr.decode()
        stats = json.loads(result.stdout)["stats"]
        assert stats["frames"] == tokenized["frames"], options
        assert stats["units_used"] == len(set(tokenized["units"])), options
