"""Every output format reads back to the units the tokenizer gave, using only what docs/formats-and-vocabularies.md shows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_wav

from audiotok.runtime.formats import open_writer
from audiotok.runtime.formats.staging import OutputError
from audiotok.runtime.formats.units_folder import NpyShardWriter, read_units_folder
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.runtime.unit_runs import dedup


def load_npy_folder(folder: Path) -> dict[str, np.ndarray]:
    """The numpy-only recipe from docs/formats-and-vocabularies.md."""
    rows = [line.rstrip("\n").split("\t") for line in open(folder / "index.tsv", encoding="utf-8")][1:]
    out = {}
    for path, shard, offset, length, frames in rows:
        shard_units = np.load(folder / f"units-{int(shard):05d}.npy", mmap_mode="r")
        out[path] = np.asarray(shard_units[int(offset):int(offset) + int(length)])
    return out


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    units = {f"data/spk{i}/utt{i}.wav": np.repeat(rng.integers(0, 500, 40), rng.integers(1, 4, 40))
             for i in range(7)}
    units["data/empty.wav"] = np.zeros(0, np.int64)  # shorter than one frame
    return units


def _write(fmt, output, corpus, **kwargs):
    with open_writer(fmt, output, **kwargs) as writer:
        for path, units in corpus.items():
            writer.write(path, units)


def test_fairseq_lines_are_stem_bar_units(tmp_path, corpus):
    _write("fairseq", tmp_path / "train.km", corpus, k=500)
    lines = (tmp_path / "train.km").read_text().splitlines()
    assert len(lines) == len(corpus)
    for line, (path, units) in zip(lines, corpus.items()):
        stem, ids = line.split("|")
        assert stem == Path(path).stem
        np.testing.assert_array_equal(np.array(ids.split(), dtype=np.int64), units)


def test_fairseq_dedup(tmp_path, corpus):
    _write("fairseq", tmp_path / "train.km", corpus, k=500, dedup=True)
    for line, units in zip((tmp_path / "train.km").read_text().splitlines(), corpus.values()):
        got = np.array(line.split("|")[1].split(), dtype=np.int64)
        np.testing.assert_array_equal(got, dedup(units)[0])
        assert not np.any(got[1:] == got[:-1])


def test_fairseq_refuses_duplicate_stems_and_leaves_no_file(tmp_path):
    out = tmp_path / "train.km"
    with pytest.raises(OutputError, match="same stem 'utt'"):
        _write("fairseq", out, {"a/utt.wav": np.arange(3), "b/utt.flac": np.arange(3)}, k=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dedup_units", [False, True])
def test_npy_folder_reads_back_with_numpy_alone(tmp_path, corpus, dedup_units):
    out = tmp_path / "units"
    with NpyShardWriter(out, k=500, dedup=dedup_units, shard_units=100) as writer:  # several shards
        for path, units in corpus.items():
            writer.write(path, units)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["k"] == 500 and meta["dtype"] == "uint16" and meta["files"] == len(corpus)
    assert meta["shards"] > 1 and len(sorted(out.glob("units-*.npy"))) == meta["shards"]
    assert np.load(out / "units-00000.npy").dtype == np.uint16
    loaded = load_npy_folder(out)
    assert list(loaded) == list(corpus)
    for path, units in corpus.items():
        expected = dedup(units)[0] if dedup_units else units
        np.testing.assert_array_equal(loaded[path], expected)
    for (path, units, durations), original in zip(read_units_folder(out), corpus.values()):
        if dedup_units:
            np.testing.assert_array_equal(np.repeat(units, durations), original)  # durations restore frames
        else:
            assert durations is None
            np.testing.assert_array_equal(units, original)
    index = [line.split("\t") for line in (out / "index.tsv").read_text().splitlines()[1:]]
    assert [int(row[4]) for row in index] == [len(u) for u in corpus.values()]  # frames before dedup


def test_npy_uses_uint32_beyond_65536_units(tmp_path):
    with open_writer("npy", tmp_path / "u", k=70_000) as writer:
        writer.write("a.wav", np.array([0, 69_999, 65_536]))
    shard = np.load(tmp_path / "u" / "units-00000.npy")
    assert shard.dtype == np.uint32 and shard.tolist() == [0, 69_999, 65_536]


def test_failed_run_leaves_no_partial_output(tmp_path):
    out = tmp_path / "units"
    with pytest.raises(OutputError, match="outside 0..9"):
        with open_writer("npy", out, k=10) as writer:
            writer.write("a.wav", np.arange(5))
            writer.write("b.wav", np.array([3, 12]))
    assert list(tmp_path.iterdir()) == []


def test_npy_replaces_a_previous_units_folder_but_nothing_else(tmp_path):
    out = tmp_path / "units"
    _write("npy", out, {"a.wav": np.arange(4)}, k=10)
    _write("npy", out, {"b.wav": np.arange(2)}, k=10)
    assert list(load_npy_folder(out)) == ["b.wav"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not an audiotok units folder"):
        open_writer("npy", other, k=10)
    assert (other / "keep.txt").read_text() == "mine"


# Through the CLI, against the tokenizer's own units.

@pytest.fixture(scope="module")
def wavs(speech_dir, tmp_path_factory):
    files = sorted(speech_dir.glob("*.wav"))
    short = write_wav(tmp_path_factory.mktemp("short") / "tiny.wav", np.zeros(200, np.float32))
    return files + [short]


def test_cli_formats_read_back_to_the_tokenizer_units(logmel_bundle, wavs, tmp_path):
    expected = {str(f): Tokenizer(logmel_bundle).tokenize(f) for f in wavs}
    assert len(expected[str(wavs[-1])]) == 0
    outputs = {fmt: tmp_path / name for fmt, name in
               [("txt", "u.txt"), ("jsonl", "u.jsonl"), ("fairseq", "u.km"), ("npy", "u")]}
    for fmt, out in outputs.items():
        result = run_cli("tokenize", logmel_bundle, *wavs, "--format", fmt, "-o", out)
        assert result.returncode == 0, result.stderr.decode()
    txt = dict(line.split("\t") for line in outputs["txt"].read_text().splitlines())
    jsonl = {r["path"]: r for r in map(json.loads, outputs["jsonl"].read_text().splitlines())}
    km = dict(line.split("|") for line in outputs["fairseq"].read_text().splitlines())
    npy = load_npy_folder(outputs["npy"])
    for path, units in expected.items():
        np.testing.assert_array_equal(np.array(txt[path].split(), dtype=np.int64), units)
        np.testing.assert_array_equal(jsonl[path]["units"], units)
        np.testing.assert_array_equal(np.array(km[Path(path).stem].split(), dtype=np.int64), units)
        np.testing.assert_array_equal(npy[path], units)


def test_cli_npy_needs_a_folder(logmel_bundle, wavs):
    result = run_cli("tokenize", logmel_bundle, wavs[0], "--format", "npy")
    err = result.stderr.decode()
    assert result.returncode == 1 and err == "audiotok: error: --format npy writes a folder of shards: give -o FOLDER\n"


def _damage_meta(folder):
    (folder / "meta.json").write_text("[1, 2]")
    return "not an audiotok units folder"


def _damage_header(folder):
    index = folder / "index.tsv"
    index.write_text("a\tb\tc\td\te\n" + index.read_text().split("\n", 1)[1])
    return "index.tsv:1: not the header"


def _damage_span(folder):
    index = folder / "index.tsv"
    lines = index.read_text().splitlines()
    row = lines[1].split("\t")
    row[3] = "99999999"  # a length past the end of its shard
    index.write_text("\n".join([lines[0], "\t".join(row), *lines[2:]]) + "\n")
    return "index.tsv:2: units 0..99999999 lie outside shard 0"


def _damage_number(folder):
    index = folder / "index.tsv"
    lines = index.read_text().splitlines()
    row = lines[1].split("\t")
    row[2] = "-5"
    index.write_text("\n".join([lines[0], "\t".join(row), *lines[2:]]) + "\n")
    return "index.tsv:2: shard, offset and length must be non-negative integers"


def _damage_pickle(folder):
    np.save(folder / "units-00000.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return "cannot read units-00000.npy"


def _damage_shape(folder):
    np.save(folder / "units-00000.npy", np.zeros((2, 2), dtype=np.uint16))
    return "units-00000.npy is not a 1-D array of unsigned unit ids"


@pytest.mark.parametrize("damage", [_damage_meta, _damage_header, _damage_span, _damage_number, _damage_pickle,
                                    _damage_shape])
def test_a_damaged_units_folder_is_one_error_naming_what(tmp_path, damage):
    """A units folder may come from someone else: reading one never runs pickle or reads past a shard."""
    out = tmp_path / "units"
    with open_writer("npy", out, k=50) as writer:
        writer.write("a.wav", np.array([1, 2, 3]))
        writer.write("b.wav", np.array([4, 5]))
    assert [p for p, _, _ in read_units_folder(out)] == ["a.wav", "b.wav"]
    needle = damage(out)
    with pytest.raises(OutputError) as info:
        list(read_units_folder(out))
    assert needle in str(info.value) and "\n" not in str(info.value)
