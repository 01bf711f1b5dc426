"""Training at scale: the sharded feature cache, resuming a killed run, out-of-core k-means."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import run_cli
from corpus_audio import write_corpus

FILES, SECONDS = 40, 15.0
FRAMES_PER_FILE = (int(SECONDS * 16_000) - 400) // 320 + 1  # 749
SHARDS = 20  # --shard-minutes 0.4: two 15 s files per shard
FAST_KMEANS = ["--model", "logmel", "--k", "16", "--seed", "3", "--n-init", "3", "--max-iter", "5",
               "--max-no-improvement", "10", "--shard-minutes", "0.4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_16k):
    folder = tmp_path_factory.mktemp("train-corpus")
    write_corpus(folder, speech_16k, files=FILES, seconds=SECONDS, seed=1)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """Out-of-core fit, never interrupted: the centroids a resumed run must reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted") / "units.npy"
    result = run_cli("train", *FAST_KMEANS, "--fit-memory-gb", "0", "-o", out, corpus)
    assert result.returncode == 0, result.stderr.decode()
    return out


def shard_files(cache, suffix):
    return sorted(cache.glob(f"*/shard-*.{suffix}"))


def test_killed_training_resumes_from_its_cache_with_the_same_centroids(corpus, uninterrupted, tmp_path):
    out, cache = tmp_path / "units.npy", tmp_path / "cache"
    command = [sys.executable, "-m", "audiotok", "train", *FAST_KMEANS, "--fit-memory-gb", "0", "-o", str(out),
               "--cache", str(cache), str(corpus)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and len(shard_files(cache, "json")) < 2:
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = shard_files(cache, "json")
    assert 2 <= len(done) < SHARDS, f"the kill did not land during extraction ({len(done)} shards)"
    assert not out.exists()
    # Damage one finished shard as a crash during its write would: it must be found and extracted again.
    damaged = done[0].with_suffix(".npy")
    damaged.write_bytes(damaged.read_bytes()[:200])
    kept = {p: p.stat().st_mtime_ns for p in (d.with_suffix(".npy") for d in done[1:])}

    resumed = run_cli(*command[3:], "--jobs", "2")  # the rest in two worker processes: same shards either way
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"{len(done) - 1} of {SHARDS} shards already in" in resumed.stderr.decode()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards are read, never recomputed
    assert len(shard_files(cache, "json")) == SHARDS
    assert np.array_equal(np.load(out), np.load(uninterrupted))
    ours, theirs = json.loads(out.with_suffix(".json").read_text()), json.loads(uninterrupted.with_suffix(".json").read_text())
    assert ours["fit"] == theirs["fit"] == "out-of-core"
    assert ours["frames"] == theirs["frames"] == FILES * FRAMES_PER_FILE
    assert ours["inertia"] == theirs["inertia"] and ours["files"] == FILES


def test_cache_is_float16_shards_shared_across_k_and_fit_modes(corpus, uninterrupted, tmp_path):
    cache = uninterrupted.parent / "audiotok-features"  # the default: beside the centroids
    (folder,) = [f for f in cache.iterdir() if json.loads((f / "key.json").read_text())["max_hours"] is None]
    shards = [np.load(p, mmap_mode="r") for p in sorted(folder.glob("shard-*.npy"))]
    assert len(shards) == SHARDS and all(s.dtype == np.float16 and s.shape[1] == 80 for s in shards)
    index = json.loads((folder / "shard-00000.json").read_text())
    assert [f["rows"] for f in index["files"]] == [FRAMES_PER_FILE] * 2 and index["errors"] == []

    in_memory = uninterrupted.parent / "in-memory.npy"
    result = run_cli("train", *FAST_KMEANS, "-o", in_memory, corpus)  # default --fit-memory-gb: fits in memory
    assert result.returncode == 0, result.stderr.decode()
    assert f"{SHARDS} of {SHARDS} shards already in" in result.stderr.decode()  # extracted once, fitted twice
    side_mem = json.loads(in_memory.with_suffix(".json").read_text())
    side_ooc = json.loads(uninterrupted.with_suffix(".json").read_text())
    assert side_mem["fit"] == "in-memory" and side_mem["frames"] == side_ooc["frames"]
    # Out of core is the same algorithm on a stream: its fit must be about as good as the in-memory one.
    assert side_ooc["inertia"] < 1.1 * side_mem["inertia"]
    assert side_ooc["clusters_used"] == 16


def test_percent_and_max_hours_get_their_own_cache(corpus, uninterrupted, tmp_path):
    out, cache = tmp_path / "units.npy", uninterrupted.parent / "audiotok-features"
    before = set(cache.iterdir())
    args = ["train", *FAST_KMEANS, "--percent", "50", "--max-hours", "0.05", "--cache", cache, "-o", out, corpus]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()
    assert "shards already in" not in result.stderr.decode() and len(set(cache.iterdir()) - before) == 1
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["hours"] == pytest.approx(0.05, abs=1e-6)  # 9000 frames read, the last file cut short
    assert 0.45 * 9000 < side["frames"] < 0.55 * 9000
    again = run_cli(*args)
    assert "7 of 7 shards already in" in again.stderr.decode()  # 13 files planned, two per shard, the last cut
    assert json.loads(out.with_suffix(".json").read_text())["frames"] == side["frames"]
