"""Running a benchmarks/ script in its smoke mode and reading the markdown tables it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import _ZYGOTE, REPO

# One thread per process: the suite runs two workers on two cores, and on a busy machine OpenMP's
# spinning threads made one k=8 MiniBatchKMeans fit take 19 s instead of 5 s.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NUMBER = r"-?\d+(?:\.\d+)?"
PERTURB = ("noise:20", "noise:10", "speed:0.9", "speed:1.1", "shift:160")  # benchmarks/unit_quality.py's


# The scripts whose own process imports torch + transformers for its setup (checkpoints, features, exports,
# the plain-torch reference): run_benchmark forks them from the torch zygote.
TORCH_SCRIPTS = ("speed.py", "pass_memory.py", "large_bundle.py", "kmeans_backends.py", "corpus_throughput.py",
                 "stream_latency.py", "stream_running_stats.py")


def run_benchmark(name: str, *args, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python benchmarks/NAME ARGS``, its output as text.

    A script of TORCH_SCRIPTS forks from the worker's torch zygote (tests/torch_zygote.py): its own
    process, command line, folder, environment and exit status, without the 7 CPU-seconds a fresh
    interpreter spends importing torch + transformers first. What the script starts itself (timed
    workers, CLI commands) are fresh interpreters, as outside the suite. The zygote imported torch with
    one OpenMP thread, ``ONE_THREAD``: a smoke's numbers are checked for their form, not their values.
    The others (onnxruntime and CLI commands only) would gain nothing and run as plain subprocesses.
    """
    script, environment = str(REPO / "benchmarks" / name), {**os.environ, **(env or {})}
    if name not in TORCH_SCRIPTS:
        return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                              timeout=600, env=environment)
    result = _ZYGOTE.run(list(map(str, args)), input=None, cwd=cwd, timeout=600, script=script, env=environment)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                       result.stderr.decode(errors="backslashreplace"))


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
