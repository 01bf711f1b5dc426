"""The speed and memory benchmark scripts whose numbers docs/ quotes, run in their smoke modes (tiny bundle, one
round, seconds): their command lines and output formats cannot rot unnoticed, and each report's
structure and invariants are checked (one row per setting, numbers in range, counts that add up).
Their default modes (minutes to hours) are not run here.

Most of a smoke run's cost is fixed: importing torch + transformers (about 7 CPU s per process) and
one dynamo ONNX export (10-20 CPU s), whatever the model's size. A script that imports torch itself
forks from the worker's torch zygote (benchmark_runs.run_benchmark), so only the processes it starts
pay the import. Where a script documents reusing another's --workdir, the tests do the same
(speed.py -> pass_memory.py, stream_latency.py -> stream_running_stats.py), so each tiny model is
exported once; either test alone builds its own.
"""

from __future__ import annotations

import json
import re

import pytest

from benchmark_runs import ONE_THREAD, markdown_table, num, percent, run_benchmark


@pytest.fixture(scope="module")
def speed_workdir(tmp_path_factory):
    """benchmarks/speed.py --smoke's tiny model, bundles and inputs; pass_memory.py --smoke reuses them."""
    return tmp_path_factory.mktemp("speed-work")


def test_speed_smoke(speed_workdir, tmp_path):
    """docs/precision-and-speed.md's speed-table command on a tiny model: one row per path, ratios against the torch rows."""
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
    """docs/long-inputs-and-exact-units.md's pass-memory command on speed.py's tiny model: one 32 s row, past the 30 s pass limit."""
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
