"""A node lost mid-run: a two-node Ray cluster on this machine, one node SIGKILLed while tokenize runs.

Ray Data restarts the lost actor on the surviving node and re-runs the blocks it held, so the run
completes with every file exactly once; were the cluster unable to recover, the run would stop
with one line and the same command would finish it (the resumable jsonl keeps what was done).
Either way: no traceback, no file twice, and a second run leaves the output complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster  # the [distributed] extra, part of the [test] extra

from conftest import run_cli
from corpus_audio import write_corpus

NODE_MEMORY = 100 * 2**20  # object store per node: the results are small


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc (the node's raylet, its agents and its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


@pytest.fixture
def two_nodes():
    """A head node and a worker node, one CPU each, in their own short temp folder (socket paths are short)."""
    temp = tempfile.mkdtemp(prefix="rayn", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=1, object_store_memory=NODE_MEMORY, include_dashboard=False, temp_dir=temp))
    worker = cluster.add_node(num_cpus=1, object_store_memory=NODE_MEMORY)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def records(out: Path) -> list[str]:
    return [json.loads(line)["path"] for line in out.read_text().splitlines()]


def test_a_node_killed_mid_run_loses_no_file_and_repeats_none(two_nodes, logmel_bundle, speech_16k, tmp_path):
    cluster, worker = two_nodes
    corpus = tmp_path / "corpus"
    expected = sorted(str(p) for p in write_corpus(corpus, speech_16k, files=30, seconds=3.0, seed=7))
    out = tmp_path / "units.jsonl"
    args = ["tokenize", logmel_bundle, corpus, "--format", "jsonl", "-o", out, "--engine", "ray",
            "--ray-address", cluster.address, "--jobs", "2"]
    run = subprocess.Popen([sys.executable, "-m", "audiotok", *map(str, args)], stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0):  # records are arriving: the run is under way
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read().decode()
        time.sleep(0.01)
    assert len(records(out)) < len(expected)
    for pid in process_tree(worker.all_processes["raylet"][0].process.pid):  # the whole node, workers included
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = run.communicate(timeout=180)
    err = err.decode()
    assert "Traceback" not in err
    assert run.returncode == 0 or (run.returncode == 1 and err.strip().splitlines()[-1].startswith(
        "audiotok: error: the Ray job failed")), err
    done = records(out)
    assert len(done) == len(set(done)) and set(done) <= set(expected)  # never a file twice
    if run.returncode == 0:
        assert sorted(done) == expected, err

    again = run_cli(*args)  # the same command completes it
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(records(out)) == expected
