"""The benchmark scripts whose numbers docs/ quotes, run in their smoke modes (tiny bundle, one
round, seconds): their command lines and output formats cannot rot unnoticed. Their default modes
(minutes to hours) are not run here."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO


def run_benchmark(name: str, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


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
