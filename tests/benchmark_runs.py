"""Running a benchmarks/ script in its smoke mode and reading the markdown tables it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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
