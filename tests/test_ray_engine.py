"""The Ray engine gives the local engine's results: a local Ray cluster, joined by the CLI with --ray-address."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray  # the [distributed] extra, part of the [test] extra

from audiotok.runtime import Tokenizer

from conftest import run_cli
from corpus_audio import write_corpus


@pytest.fixture(scope="module")
def cluster():
    """One local Ray (2 CPUs) for the module: starting Ray takes seconds, so the tests share it."""
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_16k):
    folder = tmp_path_factory.mktemp("ray-corpus")
    write_corpus(folder, speech_16k, files=8, seconds=6.0, seed=2)
    (folder / "corrupt.flac").write_bytes(b"fLaC but not really")
    return folder


def test_ray_tokenize_gives_the_same_records(cluster, corpus, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, corpus, "--format", "jsonl", "-o", out, "--engine", "ray",
                     "--ray-address", cluster, "--jobs", "2")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err  # the corrupt file fails alone
    assert err.strip().splitlines()[-1].startswith("audiotok: error: 1 of 9 files failed")
    assert "2 actors" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    tok = Tokenizer(logmel_bundle)
    expected = {str(p): tok.tokenize(p).tolist() for p in sorted(corpus.rglob("*.wav"))}
    assert len(records) == len(expected)
    assert {r["path"]: r["units"] for r in records} == expected
    assert json.loads((tmp_path / "units.errors.jsonl").read_text())["path"] == str(corpus / "corrupt.flac")


def test_ray_feature_extraction_caches_the_same_shards(cluster, corpus, tmp_path):
    args = ["--model", "logmel", "--k", "8", "--n-init", "2", "--max-iter", "3", "--shard-minutes", "0.15"]
    local = run_cli("train", *args, "-o", tmp_path / "local" / "units.npy", corpus)
    assert local.returncode == 0, local.stderr.decode()
    distributed = run_cli("train", *args, "-o", tmp_path / "ray" / "units.npy", corpus, "--engine", "ray",
                          "--ray-address", cluster)
    assert distributed.returncode == 0, distributed.stderr.decode()
    local_shards = sorted((tmp_path / "local").glob("audiotok-features/*/shard-*.npy"))
    ray_shards = sorted((tmp_path / "ray").glob("audiotok-features/*/shard-*.npy"))
    assert len(local_shards) == len(ray_shards) == 5  # 9 s per shard: 2 files each, then the corrupt one alone
    for a, b in zip(local_shards, ray_shards):
        assert a.name == b.name and np.array_equal(np.load(a), np.load(b))
    assert np.array_equal(np.load(tmp_path / "local" / "units.npy"), np.load(tmp_path / "ray" / "units.npy"))


def test_an_unreachable_cluster_is_one_clear_error(corpus, logmel_bundle, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, corpus, "--format", "jsonl", "-o", out, "--engine", "ray",
                     "--ray-address", address)
    assert result.returncode == 1
    assert result.stderr.decode().strip().startswith(f"audiotok: error: cannot reach a Ray cluster at {address}")
    assert list(tmp_path.iterdir()) == []  # nothing written for a run that never started
