"""The stream, corpus and unit-quality benchmark scripts, in their smoke modes (see
test_benchmarks_smoke.py): command lines and report formats that cannot rot unnoticed."""

from __future__ import annotations

import json
import math
import re

import pytest

from benchmark_runs import NUMBER, ONE_THREAD, PERTURB, markdown_table, num, percent, run_benchmark, table_cells


@pytest.fixture(scope="module")
def stream_workdir(tmp_path_factory):
    """benchmarks/stream_latency.py --smoke's tiny model and bundles; stream_running_stats.py reuses them."""
    return tmp_path_factory.mktemp("stream-work")


def test_stream_soak_smoke(logmel_bundle, tmp_path):
    """docs/streaming.md's soak command, shortened: one line per bundle in the documented shape, and JSON."""
    out = tmp_path / "soak.json"
    result = run_benchmark("stream_soak.py", "--smoke", "--bundle", logmel_bundle, "--workdir", tmp_path,
                           "--json", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    pattern = (rf"{logmel_bundle.name}: 0\.01 h in \d+ s \([\d.]+x real time\); frames (\d+) \(offline (\d+), equal\); "
               r"RSS [\d.]+ MB at the first chunk, [\d.]+ MB at the end \([+-][\d.]+%\), peak [\d.]+ MB over \d+ "
               r"samples; by quarter of the audio [\d.]+ / [\d.]+ / [\d.]+ / [\d.]+ MB; exit 0")
    match = re.fullmatch(pattern, lines[0])
    assert match and match.group(1) == match.group(2) == str((18 * 16_000 - 400) // 320 + 1), lines[0]
    assert lines[1].startswith("load average before ")
    (report,) = json.loads(out.read_text())["results"]
    assert report["frames"] == report["offline_frames"] and report["exit_code"] == 0
    assert report["bundle"] == logmel_bundle.name and report["audio_hours"] == 0.005


def test_corpus_throughput_smoke(tmp_path):
    """docs/corpus.md's throughput command on a tiny model: the four configurations, then the ratios."""
    result = run_benchmark("corpus_throughput.py", "--smoke", "--jobs", "2", "--workdir", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line]
    assert re.fullmatch(r"2 files x 2 s, \d+ cores, load average before: [\d.]+", lines[0]), lines[0]
    labels = [r"torch \+ transformers", r"jobs=1 \(1 x \w+ threads\)", r"jobs=1 threads=1 \(1 x 1 threads\)",
              r"jobs=2 \(2 x \w+ threads\)"]
    for label, line in zip(labels, lines[1:5]):
        assert re.fullmatch(rf"{label} +0\.001 h in +[\d.]+ s: +[\d.]+ h/h, +\d+ CPU s per audio hour", line), line
    ratios = ["jobs=2 / jobs=1:", "jobs=2 / jobs=1 threads=1:", "jobs=1 / torch:", "jobs=2 / torch:"]
    for prefix, line in zip(ratios, lines[5:9]):
        assert line.startswith(prefix) and re.search(r" [\d.]+x", line), line
    assert lines[9].startswith("load average after: ") and len(lines) == 10


def test_stream_latency_smoke(stream_workdir, tmp_path):
    """docs/streaming.md's latency-table command on a tiny model: the default setting and one --latency-ms target."""
    out = tmp_path / "stream.json"
    result = run_benchmark("stream_latency.py", "--smoke", "--workdir", stream_workdir, "--json", out, cwd=tmp_path,
                           env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    first = r"tiny HuBERT layout \(random weights, --smoke\) cut at layer 2, k=100; 3 s of "
    assert re.match(first, lines[0]), lines[0]
    header = next(line for line in lines if line.startswith("| setting |"))
    rows = markdown_table(lines, header)
    assert [r["setting"] for r in rows] == ["default", "`--latency-ms 400`"], rows
    # the tiny bundle has the stream entry point and its attention cache: runtime/stream.py's DEFAULT_* lengths
    assert [rows[0][c] for c in ("chunk ms", "lookahead ms", "context ms")] == ["240", "60", "1920"]
    frames = (3 * 16_000 - 400) // 320 + 1
    for row in rows:
        assert int(row["chunk ms"]) % 20 == 0 and int(row["lookahead ms"]) % 20 == 0, row
        assert 0 <= num(row["per-frame p50 ms"]) <= num(row["p95 ms"]) <= num(row["max ms"]), row
        assert 0 <= num(row["own core: per-frame p50 ms"]) <= num(row["own core: p95 ms"]), row
        assert num(row["window compute ms"]) >= 0 and num(row["chunk-end p95 ms"]) >= 0, row
        assert num(row["CPU cores"]) > 0 and num(row["GMAC per audio s"]) >= 0, row
        for column in ("agreement (no norm)", "agreement (waveform norm)", "agreement, no attention cache",
                       "agreement, windows recomputed"):
            percent(row[column])
        # the attention cache runs the transformer on chunk + lookahead only: never more arithmetic
        assert num(row["GMAC per audio s"]) <= num(row["GMAC per audio s, no attention cache"]) \
            <= num(row["GMAC per audio s, recomputed"]), row
        # a frame waits at least for the rest of its chunk's audio and the lookahead: per-frame latency
        # can never be below half a chunk plus the lookahead at the median
        assert num(row["per-frame p50 ms"]) >= int(row["chunk ms"]) / 2 + int(row["lookahead ms"]) - 20, row
    window = re.fullmatch(rf"One 2220 ms window: bundle ({NUMBER}) ms, plain torch \+ transformers ({NUMBER}) ms "
                          rf"\(({NUMBER})x\)", lines[-1])
    assert window and all(float(v) > 0 for v in window.groups()), lines[-1]
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == len(rows) and saved["torch"]["window_ms"] == 240 + 60 + 1920
    for r in saved["rows"]:
        assert r["chunks"] == math.ceil(frames * 20 / r["chunk_ms"]), r
        for key in ("agreement_none", "agreement_utterance", "agreement_no_kv", "agreement_recompute"):
            assert 0 <= r[key] <= 1, r
    assert [r["target_ms"] for r in saved["rows"]] == [None, 400.0]


def test_stream_running_stats_smoke(stream_workdir, tmp_path):
    """The running-statistics simulation on stream_latency.py's tiny model: one row per setting."""
    result = run_benchmark("stream_running_stats.py", "--smoke", "--workdir", stream_workdir, cwd=tmp_path,
                           env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    frames = (3 * 16_000 - 400) // 320 + 1
    assert re.fullmatch(rf"tiny HuBERT layout \(--smoke\) \(random weights\), layer 2; 3 s of .+; {frames} frames",
                        lines[0]), lines[0]
    header = ("| chunk / lookahead / context ms | agreement: per-window statistics (today) | running statistics, CNN "
              "cached | GMAC per audio s: today | CNN cached |")
    rows = markdown_table(lines, header)
    assert [r["chunk / lookahead / context ms"] for r in rows] == ["640 / 80 / 640", "320 / 80 / 640"]
    for row in rows:
        percent(row["agreement: per-window statistics (today)"]), percent(row["running statistics, CNN cached"])
        assert 0 <= num(row["CNN cached"]) <= num(row["GMAC per audio s: today"]), row  # caching only removes work
    assert len(lines) == 2 + 2 + len(rows), result.stdout


def test_unit_quality_smoke(tmp_path):
    """docs/evaluating-units.md's unit-quality tables for the logmel row: quality, stability, and logmel's exact stream."""
    result = run_benchmark("unit_quality.py", "--smoke", "--work", tmp_path, cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"2 held-out espeak-ng utterances, [\d.]+ s; bundles trained on 4 others", lines[0]), lines[0]
    quality_header = ("| bundle | PNMI | phone purity | cluster purity | bit/s (dedup) | units used | "
                      + " | ".join(f"UED {p}" for p in PERTURB) + " |")
    (quality,) = markdown_table(lines, quality_header)
    assert quality["bundle"] == "logmel k=16"
    for column in ("PNMI", "phone purity", "cluster purity"):
        assert 0 <= num(quality[column]) <= 1, (column, quality)
    bitrate, dedup = map(int, re.fullmatch(r"(\d+) \((\d+)\)", quality["bit/s (dedup)"]).groups())
    used, k = map(int, quality["units used"].split("/"))
    assert k == 16 and 1 <= used <= k
    # entropy <= log2(units used) bits per unit: at most 50 units/s (dedup: fewer runs than frames)
    assert 0 < bitrate <= 50 * math.log2(used) + 0.5 and 0 < dedup <= 50 * math.log2(used) + 0.5, quality
    assert all(num(quality[f"UED {p}"]) >= 0 for p in PERTURB), quality
    (compared,) = table_cells(lines, "| bundle | int8 PNMI | fp32 vs int8: agreement | UED | "
                                     "offline vs stream 640:80:640: agreement | UED |")
    # logmel: nothing to quantize; its stream windows give exactly the offline frames
    assert compared == ["logmel k=16", "n/a", "n/a", "n/a", "100.00%", "0.000"], compared
