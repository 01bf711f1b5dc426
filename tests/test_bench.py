"""`audiotok bench`: one JSON object whose numbers hang together, and one-line errors on bad input."""

from __future__ import annotations

import json

import pytest

from audiotok.runtime.stream import CNN_CACHE_DEFAULTS
from audiotok.runtime.stream_target import CACHED_LADDER
from conftest import run_cli


@pytest.fixture(scope="module")
def bench_report(logmel_bundle):
    result = run_cli("bench", logmel_bundle, "--seconds", "30", "--runs", "2", "--threads", "1", "2",
                     "--stream", "320:80:320", "240:60:960", "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_json_holds_offline_rtf_per_thread_count_and_the_default_stream(bench_report, logmel_bundle):
    report = bench_report
    assert [r["threads"] for r in report["offline"]] == [1, 2]
    assert report["rtf"] == report["offline"][0]["rtf"] and report["threads"] == 1  # no auto: the first asked
    for row in report["offline"]:
        assert 0 < row["rtf"] <= row["median_rtf"] and row["peak_rss_mb"] > 10
        assert row["gmac_per_wall_second"] == pytest.approx(report["gmac_per_second"] / row["rtf"], rel=1e-3)
    # the default setting is measured first and is what "stream" holds; a repeated setting runs once
    # then one row per default --latency-ms target, on the ladder's setting chosen for it
    settings = [(s["chunk_ms"], s["lookahead_ms"], s["context_ms"]) for s in report["streams"]]
    # logmel has a stream entry point and no attention cache (no transformer): its defaults are those
    assert settings[:2] == [CNN_CACHE_DEFAULTS, (320, 80, 320)]
    assert [s["target_ms"] for s in report["streams"]] == [None, None, 250, 400] and not report["unreachable"]
    assert all(setting in CACHED_LADDER for setting in settings[2:])  # logmel has a stream entry point
    stream = report["stream"]
    window = sum(CNN_CACHE_DEFAULTS)
    assert stream == report["streams"][0] and stream["window_ms"] == window and stream["cores"] > 0
    assert stream["latency_ms"] == pytest.approx(CNN_CACHE_DEFAULTS[1] + stream["compute_ms"])
    for s in report["streams"]:
        assert s["keeps_up"] == (s["headroom"] >= 2.0)
        assert s["headroom"] == pytest.approx(s["chunk_ms"] / s["compute_p95_ms"])
        # the first frame of a chunk waits for the rest of it and the lookahead, then for its window
        first_wait = s["chunk_ms"] - 20 + max(s["lookahead_ms"], 20)
        assert s["frame_max_ms"] >= first_wait + s["compute_ms"] >= s["frame_p50_ms"] > s["lookahead_ms"]
        assert s["agreement"] == 1.0  # logmel: every frame sees only its own samples
    info = json.loads(run_cli("info", logmel_bundle).stdout)["compute"]
    assert report["gmac_per_second"] == pytest.approx(info["gmac_per_second"], rel=1e-3)  # same 30 s count
    assert report["stream_gmac_per_second"] == pytest.approx(info["stream"]["gmac_per_second"], rel=1e-3)
    assert report["audio_seconds"] == 30 and report["recommendation"]


def test_tables_and_a_recommendation_line_on_a_file(logmel_bundle, speech_dir):
    wav = sorted(speech_dir.glob("*.wav"))[0]
    result = run_cli("bench", logmel_bundle, "--audio", wav, "--runs", "1", "--threads", "1")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert f"of {wav}" in out and "| 240:60:960 | 1260 |" in out
    assert out.strip().splitlines()[-1].startswith("recommendation: offline: --threads 1 runs")


@pytest.mark.parametrize("args, needle", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--stream", "640:80"], "is not CHUNK:LOOKAHEAD:CONTEXT"),
    (["--stream", "fast"], "is not CHUNK:LOOKAHEAD:CONTEXT"),
    (["--stream", "650:80:640"], "not a whole number of 20 ms frames"),
    (["--seconds", "0"], "--seconds must be in"),
    (["--stream-threads", "0"], "--stream-threads must be at least 1"),
    (["--latency-ms", "0"], "--latency-ms must be positive, got 0"),
    (["--latency-ms", "250", "abc"], "--latency-ms must be a number of milliseconds, got 'abc'"),
])
def test_bad_settings_are_one_line(logmel_bundle, args, needle):
    result = run_cli("bench", logmel_bundle, *args)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("audiotok: error:"), lines
    assert needle in lines[0] and not result.stdout


def test_a_file_that_is_not_a_bundle_is_one_line(tmp_path, speech_dir):
    for path in [tmp_path / "notes.onnx", sorted(speech_dir.glob("*.wav"))[0], tmp_path / "missing.onnx"]:
        if path.suffix == ".onnx" and path.name == "notes.onnx":
            path.write_text("not a model")
        result = run_cli("bench", path)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("audiotok: error:"), lines
        assert str(path) in lines[0]


def test_audio_too_short_is_one_line(logmel_bundle, tmp_path):
    import numpy as np

    from conftest import write_wav

    wav = write_wav(tmp_path / "blip.wav", np.zeros(500, np.float32))
    result = run_cli("bench", logmel_bundle, "--audio", wav)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and lines == [f"audiotok: error: {wav}: too short to measure (under 2 frames)"]
