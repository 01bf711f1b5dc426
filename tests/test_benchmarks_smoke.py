"""The benchmark scripts whose numbers README quotes, run in their smoke modes (tiny bundle, one
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
