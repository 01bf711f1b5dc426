"""A node lost mid-run: a two-node Ray cluster on this machine, one node SIGKILLed while tokenize runs.

Ray Data restarts the lost actor on the surviving node and re-runs the blocks it held, so the run
completes with every file exactly once, as docs/errors.md promises. The kill waits on an observable state
(an actor process on the worker node), not on timing; a failed job fails the test.
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
    # Cluster() records the head's address in Ray's default folder whatever temp_dir says, and fails
    # where that folder is absent (a fresh machine, or one whose /tmp was cleaned)
    Path("/tmp/ray").mkdir(exist_ok=True)
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
    return [json.loads(line)["path"] for line in out.read_text().splitlines()] if out.exists() else []


def actor_on(node, timeout_s: float, run: subprocess.Popen) -> int:
    """The pid of the tokenizing actor on ``node`` once Ray has placed one there (its process title
    names the actor class), while ``run`` is still running: the observable state the kill waits on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the run ended before an actor reached the worker node: {run.stderr.read()!r}"
        for pid in process_tree(node.all_processes["raylet"][0].process.pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"_ActorWorker" in title:
                return pid
        time.sleep(0.005)
    raise AssertionError(f"no tokenizing actor on the worker node within {timeout_s} s")


def test_a_node_killed_mid_run_loses_no_file_and_repeats_none(two_nodes, logmel_bundle, speech_16k, tmp_path):
    """docs/errors.md: after a lost node every file is recorded exactly once. The worker node is killed while
    the run is under way and an actor on it holds work (it is placed there to take blocks); the run
    must still succeed, with each file once."""
    cluster, worker = two_nodes
    corpus = tmp_path / "corpus"
    expected = sorted(str(p) for p in write_corpus(corpus, speech_16k, files=30, seconds=3.0, seed=7))
    out = tmp_path / "units.jsonl"
    args = ["tokenize", logmel_bundle, corpus, "--format", "jsonl", "-o", out, "--engine", "ray",
            "--ray-address", cluster.address, "--jobs", "2"]
    run = subprocess.Popen([sys.executable, "-m", "audiotok", *map(str, args)], stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL)
    actor_on(worker, 120, run)
    assert run.poll() is None and len(records(out)) < len(expected)  # the node is lost mid-run
    for pid in process_tree(worker.all_processes["raylet"][0].process.pid):  # the whole node, workers included
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = run.communicate(timeout=180)
    err = err.decode()
    assert run.returncode == 0 and err.count("audiotok: error") == 0 and "Traceback" not in err, err
    done = records(out)
    assert len(done) == len(set(done)), f"files recorded twice: {sorted(p for p in done if done.count(p) > 1)}"
    assert sorted(done) == expected, f"{len(expected) - len(set(done))} files missing"
