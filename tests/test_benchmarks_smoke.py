"""The benchmark scripts whose numbers README quotes, run in their smoke modes (tiny bundle, one
round, seconds): their command lines and output formats cannot rot unnoticed, and each report's
structure and invariants are checked (one row per setting, numbers in range, counts that add up).
Their default modes (minutes to hours) are not run here.

Most of a smoke run's cost is fixed: importing torch + transformers (about 7 CPU s per process) and
one dynamo ONNX export (10-20 CPU s), whatever the model's size. Where a script documents reusing
another's --workdir, the tests do the same (speed.py -> pass_memory.py, stream_latency.py ->
stream_running_stats.py), so each tiny model is exported once; either test alone builds its own.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

# One thread per process: the suite runs two workers on two cores, and on a busy machine OpenMP's
# spinning threads made one k=8 MiniBatchKMeans fit take 19 s instead of 5 s.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NUMBER = r"-?\d+(?:\.\d+)?"
PERTURB = ("noise:20", "noise:10", "speed:0.9", "speed:1.1", "shift:160")  # benchmarks/unit_quality.py's


def run_benchmark(name: str, *args, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env={**os.environ, **(env or {})})


def table_cells(lines: list[str], header: str) -> list[list[str]]:
    """The rows of the markdown table whose header line is ``header``: its cells, as many as the header's."""
    start = lines.index(header)
    assert re.fullmatch(r"\|(-+:?\|)+", lines[start + 1]), lines[start + 1]
    assert lines[start + 1].count("|") == header.count("|"), lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
        assert len(rows[-1]) == header.count("|") - 1, line
    return rows


def markdown_table(lines: list[str], header: str) -> list[dict[str, str]]:
    """The same rows as {column: cell}."""
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert len(set(columns)) == len(columns), header
    return [dict(zip(columns, cells)) for cells in table_cells(lines, header)]


def num(cell: str) -> float:
    assert re.fullmatch(NUMBER, cell), cell
    return float(cell)


def percent(cell: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", cell)
    assert match and 0 <= float(match.group(1)) <= 100, cell
    return float(match.group(1)) / 100


@pytest.fixture(scope="module")
def speed_workdir(tmp_path_factory):
    """benchmarks/speed.py --smoke's tiny model, bundles and inputs; pass_memory.py --smoke reuses them."""
    return tmp_path_factory.mktemp("speed-work")


@pytest.fixture(scope="module")
def stream_workdir(tmp_path_factory):
    """benchmarks/stream_latency.py --smoke's tiny model and bundles; stream_running_stats.py reuses them."""
    return tmp_path_factory.mktemp("stream-work")


def test_stream_soak_smoke(logmel_bundle, tmp_path):
    """README's soak command, shortened: one line per bundle in the documented shape, and JSON."""
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
    """README's throughput command on a tiny model: the four configurations, then the ratios."""
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


def test_speed_smoke(speed_workdir, tmp_path):
    """README's speed-table command on a tiny model: one row per path, ratios against the torch rows."""
    import onnxruntime as ort

    out = tmp_path / "speed.json"
    result = run_benchmark("speed.py", "--smoke", "--threads", "1", "--no-what-if", "--workdir", speed_workdir,
                           "--json", out, cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = ("| layer | input | path | RTF | x torch cut | x torch full | x torch cut, best runs "
              "| x torch cut, CPU time | load s | peak RSS MB | file MB | agreement |")
    assert lines[0] == header, lines[0]
    rows = markdown_table(lines, header)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert [r["path"] for r in rows] == ["torch full", "torch cut", "fp32", "int8"] + (["fp16"] if cuda else [])
    for row in rows:
        assert row["layer"] == "2" and row["input"] == "2 s", row
        for column in ("RTF", "x torch cut", "x torch full", "x torch cut, best runs", "x torch cut, CPU time",
                       "peak RSS MB", "file MB"):
            assert num(row[column]) > 0, (column, row)
        assert num(row["load s"]) >= 0 and 0 <= num(row["agreement"]) <= 1, row
    by_path = {r["path"]: r for r in rows}
    cut, full = by_path["torch cut"], by_path["torch full"]
    assert cut["x torch cut"] == cut["x torch cut, best runs"] == cut["x torch cut, CPU time"] == "1.00"
    assert full["x torch full"] == "1.00" and cut["agreement"] == "1.0000"  # the reference against itself
    # fp32 bundles equal torch (export's floor is 99.9% of frames); 99 of the 100 frames leaves room for one tie
    assert num(by_path["fp32"]["agreement"]) >= 0.99, by_path["fp32"]
    assert lines[len(rows) + 2] == ""
    assert re.fullmatch(r"\d+ CPUs, threads=1, rounds=1; load average [\d.]+ before and [\d.]+ after \(\d+ s\): "
                        r"a load above the thread count means other processes competed for the CPUs\.",
                        lines[len(rows) + 3]), lines[len(rows) + 3]
    assert len(lines) == len(rows) + 4
    saved = json.loads(out.read_text())
    assert [r["path"] for r in saved] == [r["path"] for r in rows]
    assert all(len(r["times"]) == len(r["cpu_times"]) == 1 for r in saved)  # one round
    for r, row in zip(saved, rows):
        assert f"{r['agreement']:.4f}" == row["agreement"] and f"{r['median_s'] / r['seconds']:.3f}" == row["RTF"]
    sizes = {r["path"]: r["file_mb"] for r in saved}  # unrounded: the table's 0.1 MB steps are coarse here
    assert sizes["int8"] < sizes["fp32"] and sizes["torch full"] == sizes["torch cut"], sizes


def test_pass_memory_smoke(speed_workdir, tmp_path):
    """README's pass-memory command on speed.py's tiny model: one 32 s row, past the 30 s pass limit."""
    result = run_benchmark("pass_memory.py", "--smoke", "--threads", "1", "--workdir", speed_workdir, cwd=tmp_path,
                           env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = ("| input | bundle, one pass: peak (+pass), time | bundle, 30 s windows | plain transformers, one pass "
              "| windowed = one pass |")
    (row,) = markdown_table(lines, header)
    assert lines[0] == header and row["input"] == "32 s", row
    for column in list(row)[1:4]:  # peak >= the memory the pass added, both >= 0; a time > 0
        match = re.fullmatch(r"([\d.]+) GiB \(\+([\d.]+)\), ([\d.]+) s", row[column])
        assert match, (column, row[column])
        peak, added, seconds = map(float, match.groups())
        assert peak > 0 and 0 <= added <= peak and seconds > 0, (column, row[column])
    percent(row["windowed = one pass"])
    assert lines[3] == "" and re.fullmatch(r"load average after the run: \[.*\]; MemAvailable [\d.]+ GiB", lines[4])
    assert len(lines) == 5, result.stdout


def test_stream_latency_smoke(stream_workdir, tmp_path):
    """README's streaming-table command on a tiny model: the default setting and one --latency-ms target."""
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
    assert [rows[0][c] for c in ("chunk ms", "lookahead ms", "context ms")] == ["640", "80", "640"]
    frames = (3 * 16_000 - 400) // 320 + 1
    for row in rows:
        assert int(row["chunk ms"]) % 20 == 0 and int(row["lookahead ms"]) % 20 == 0, row
        assert 0 <= num(row["per-frame p50 ms"]) <= num(row["p95 ms"]) <= num(row["max ms"]), row
        assert num(row["window compute ms"]) >= 0 and num(row["chunk-end p95 ms"]) >= 0, row
        assert num(row["CPU cores"]) > 0 and num(row["GMAC per audio s"]) >= 0, row
        percent(row["agreement (no norm)"]), percent(row["agreement (per-window norm)"])
    window = re.fullmatch(rf"One 1360 ms window: bundle ({NUMBER}) ms, plain torch \+ transformers ({NUMBER}) ms "
                          rf"\(({NUMBER})x\)", lines[-1])
    assert window and all(float(v) > 0 for v in window.groups()), lines[-1]
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == len(rows) and saved["torch"]["window_ms"] == 1360
    for r in saved["rows"]:
        assert r["chunks"] == math.ceil(frames * 20 / r["chunk_ms"]), r
        assert 0 <= r["agreement_none"] <= 1 and 0 <= r["agreement_utterance"] <= 1, r
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


def test_kmeans_backends_smoke(tmp_path):
    """The backends benchmark on logmel features of synthetic speech: one row per backend at k=8."""
    out = tmp_path / "kmeans.json"
    result = run_benchmark("kmeans_backends.py", "--smoke", "--json", out, cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = "| k | backend | fit time (s) | peak RSS (MiB) | inertia / frame | clusters used | unit perplexity |"
    assert lines[0] == header
    rows = markdown_table(lines, header)
    assert [(r["k"], r["backend"]) for r in rows] == [("8", "sklearn"), ("8", "faiss")]
    for row in rows:
        assert num(row["fit time (s)"]) > 0 and num(row["peak RSS (MiB)"]) > 0 and num(row["inertia / frame"]) > 0
        used = int(row["clusters used"])
        assert 1 <= used <= 8 and 1 <= num(row["unit perplexity"]) <= used + 0.05, row  # perplexity <= clusters used
    assert lines[4] == "" and lines[5].startswith("load average after the run: ") and len(lines) == 6
    saved = json.loads(out.read_text())
    frames = 2 * ((3 * 16_000 - 400) // 320 + 1)  # two 3 s files
    assert saved["frames"] == frames and saved["dim"] == 80, saved
    for r in saved["results"]:
        assert r["inertia"] / frames == pytest.approx(r["mean_squared_distance"]), r
        assert 1 <= r["perplexity"] <= r["clusters_used"] <= 8


def test_unit_quality_smoke(tmp_path):
    """README's unit-quality tables for the logmel row: quality, stability, and logmel's exact stream."""
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


def test_large_bundle_smoke(tmp_path):
    """The >2 GB benchmark with the container layout forced on a tiny model: export, info, tokenize, parity."""
    result = run_benchmark("large_bundle.py", "--smoke", "--workdir", tmp_path, cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert (report["layout"], report["layer"], report["k"]) == ("tiny", 2, 16) and set(report) == {
        "layout", "layer", "k", "unseen_audio_seconds", "train", "fp32"}
    assert report["train"]["seconds"] > 0 and report["train"]["peak_mb"] > 0
    entry = report["fp32"]
    assert entry["layout"] == "container" and entry["beside_bundle"] == [], entry
    assert entry["agreement_at_export"] >= 0.999  # export's fp32 floor
    frames = (round(report["unseen_audio_seconds"] * 16_000) - 400) // 320 + 1  # one unseen utterance
    assert entry["units_equal_transformers"] == f"{frames}/{frames}", entry
    assert 0 < entry["tokenize_peak_mb"] <= entry["tokenize_bound_mb"], entry
    assert entry["tokenize_rtf"] == round(entry["tokenize_seconds"] / report["unseen_audio_seconds"], 3)
    assert entry["export_seconds"] > 0 and entry["export_peak_mb"] > 0 and entry["bundle_mb"] >= 0
