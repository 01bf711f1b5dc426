"""Vocabulary files from strangers (`export --centroids`, `verify --centroids`): every hostile one is refused
with one line, within bounded memory, and no code from it runs."""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import pickle
import resource
import shutil
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import lz4.frame
import numpy as np
import pytest
import torch

from audiotok.export.centroid_limits import MIN_INFLATED_BYTES, CentroidsError, inflation_limit
from audiotok.export.centroids import load_centroids
from audiotok.models.vocabulary_sidecar import RecordedTraining, SidecarError, TrainingFacts, read_sidecar
from hostile_bundles import assert_one_error_or_success, run_in_process

GOOD = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def _refused(path, *needles: str) -> str:
    with pytest.raises(CentroidsError) as info:
        load_centroids(path)
    message = str(info.value)
    assert message.startswith(f"--centroids {path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_npy_header_claiming_an_enormous_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "c.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**6)})
        f.write(b"\0" * 64)
    tracemalloc.start()
    try:
        _refused(path, "claims shape (1000000000, 1000000)", "holds 64 bytes")
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


def test_npy_truncated_by_one_byte_and_npy_of_objects(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, GOOD)
    path.write_bytes(path.read_bytes()[:-1])
    _refused(path, "truncated or corrupt")
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (8, 4)})
    _refused(path, "Python objects")
    np.save(path, np.zeros((2, 3, 4), np.float32))
    _refused(path, "shape (2, 3, 4)")


@pytest.mark.parametrize("make,needle", [
    (lambda: torch.from_numpy(GOOD).to_sparse(), "the tensor is sparse_coo"),
    (lambda: {"km": {"centers": torch.from_numpy(GOOD).to_sparse_csr()}}, "the tensor km.centers is sparse_csr"),
    (lambda: torch.empty(8, 4, device="meta"), "meta tensor, which has a shape but no values"),
    (lambda: {"c": torch.empty(8, 4, device="meta")}, "the tensor c is a meta tensor"),
    (lambda: torch.quantize_per_tensor(torch.from_numpy(GOOD), 0.1, 0, torch.qint8), "quantized (torch.qint8)"),
    (lambda: [torch.quantize_per_tensor(torch.from_numpy(GOOD), 0.1, 0, torch.quint8)], "the tensor [0] is quantized"),
    (lambda: torch.zeros(8, 4, dtype=torch.int64), "holds torch.int64, not floating-point"),
])
def test_torch_tensors_without_plain_float_values(tmp_path, make, needle):
    path = tmp_path / "c.pt"
    with warnings.catch_warnings():  # torch warns that sparse CSR and quantized tensors are beta/deprecated
        warnings.simplefilter("ignore")
        torch.save(make(), path)
    _refused(path, needle)


def test_torch_containers_nested_deeply_or_shared_exponentially(tmp_path):
    deep = torch.from_numpy(GOOD)
    for _ in range(300):
        deep = [deep]
    torch.save(deep, tmp_path / "deep.pt")
    _refused(tmp_path / "deep.pt", "nested deeper than 64 levels")
    shared: list = [torch.zeros(1)]
    for _ in range(60):  # 2**60 paths through 120 lists
        shared = [shared, shared]
    torch.save(shared, tmp_path / "shared.pt")
    _refused(tmp_path / "shared.pt", "more than 100000 values")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_torch_file_with_code_is_refused_without_advice_to_run_it(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"centroids": torch.from_numpy(GOOD), "hook": _RunsCode(marker)}, tmp_path / "c.pt")
    message = _refused(tmp_path / "c.pt", "runs no code from a vocabulary file", "torch.save(tensor, path)")
    assert "weights_only" not in message and "trust" not in message and message.endswith("numpy.save")
    assert not marker.exists()


def test_torch_zip_whose_entries_inflate_far_beyond_the_file(tmp_path):
    path = tmp_path / "c.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}))
        with archive.open("archive/data/0", "w") as entry:
            block = bytes(1 << 20)
            for _ in range((MIN_INFLATED_BYTES >> 20) + 8):
                entry.write(block)
    assert path.stat().st_size < 1 << 20
    _refused(path, "claim", f"more than the {inflation_limit(path.stat().st_size)}")


def _bomb(codec: str, megabytes: int) -> bytes:
    """A pickle holding ``megabytes`` of zero bytes (BINBYTES8), compressed as joblib would, built in 1 MiB steps."""
    if codec in ("zlib", "gzip"):
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31 if codec == "gzip" else 15)
    elif codec == "bz2":
        compressor = bz2.BZ2Compressor(1)
    elif codec == "lz4":
        compressor = lz4.frame.LZ4FrameCompressor()
    else:
        compressor = lzma.LZMACompressor(lzma.FORMAT_XZ if codec == "xz" else lzma.FORMAT_ALONE, preset=0)
    out = io.BytesIO()
    if codec == "lz4":
        out.write(compressor.begin())
    out.write(compressor.compress(b"\x80\x04\x8e" + struct.pack("<Q", megabytes << 20)))
    block = bytes(1 << 20)
    for _ in range(megabytes):
        out.write(compressor.compress(block))
    out.write(compressor.flush())
    return out.getvalue()


@pytest.mark.parametrize("codec", ["zlib", "gzip", "bz2", "xz", "lzma", "lz4"])
def test_compressed_pickle_bomb_is_refused_within_its_bound(tmp_path, codec):
    path = tmp_path / "km.bin"
    path.write_bytes(_bomb(codec, (MIN_INFLATED_BYTES >> 20) + 16))
    limit = inflation_limit(path.stat().st_size)
    tracemalloc.start()
    try:
        _refused(path, f"{codec} data that inflates beyond {limit >> 20} MiB", "decompression bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit + (32 << 20), peak  # never more than the bound (plus the file) in memory


def test_the_inflation_bound_follows_the_file_size():
    assert inflation_limit(1000) == MIN_INFLATED_BYTES
    assert inflation_limit(10 << 20) == 50 * (10 << 20)
    assert inflation_limit(1 << 40) == 4 << 30


def test_a_folder_given_as_centroids_is_called_a_folder(tmp_path):
    assert "no such file" not in _refused(tmp_path, "is a folder")


def _sidecar_case(tmp_path, content: bytes):
    np.save(tmp_path / "c.npy", GOOD)
    (tmp_path / "c.json").write_bytes(content)
    return tmp_path / "c.npy"


SIDECAR = {"encoder": {"name": "logmel", "encoder_type": "logmel", "config_sha256": None}, "layer": 0, "k": 8,
           "dim": 4, "data": ["/audio"], "inertia": 1.5, "kmeans": {"k": 8}}


@pytest.mark.parametrize("content,needle", [
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"layer": 0', "not valid JSON"),
    (json.dumps({**SIDECAR, "layer": "6"}).encode(), "'layer' must be an integer"),
    (json.dumps({**SIDECAR, "layer": True}).encode(), "'layer' must be an integer"),
    (json.dumps({**SIDECAR, "encoder": ["logmel"]}).encode(), "'encoder' must be a JSON object"),
    (json.dumps({**SIDECAR, "encoder": {"name": 3}}).encode(), "'encoder.name' must be a string"),
    (json.dumps({**SIDECAR, "data": 5}).encode(), "'data' must be a list of strings"),
    (json.dumps({**SIDECAR, "data": ["a\x00b"]}).encode(), "'data' must be a list of strings"),
    (json.dumps({**SIDECAR, "kmeans": "fast"}).encode(), "'kmeans' must be a JSON object"),
    (json.dumps({**SIDECAR, "inertia": None}).encode(), "'inertia' must be a number"),
    (json.dumps(SIDECAR).replace("1.5", "NaN").encode(), "NaN is not a number JSON allows"),
    (json.dumps({k: v for k, v in SIDECAR.items() if k != "layer"}).encode(), "lacks layer"),
    (json.dumps({**SIDECAR, "channel": None}).encode(), "'channel' must be one of mean or an integer in 0.."),
    (json.dumps({**SIDECAR, "frame_rule": "ceil"}).encode(), "'frame_rule' must be one of floor, pad"),
    (json.dumps({**SIDECAR, "backend": "x" * 100}).encode(), "'backend' must be a string of at most 64"),
    (json.dumps({**SIDECAR, "max_frames_file": -1}).encode(), "'max_frames_file' must be an integer in 1.."),
    (json.dumps({**SIDECAR, "trim_silence_db": "30"}).encode(), "'trim_silence_db' must be a number in 0..1000"),
])
def test_a_malformed_sidecar_is_one_clear_error(tmp_path, content, needle):
    centroids = _sidecar_case(tmp_path, content)
    with pytest.raises(SidecarError) as info:
        read_sidecar(centroids)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'c.json'}: not a valid centroids sidecar: ") and needle in message, message


def test_a_good_sidecar_and_no_sidecar(tmp_path):
    centroids = _sidecar_case(tmp_path, json.dumps(SIDECAR).encode())
    recorded = read_sidecar(centroids)
    assert isinstance(recorded, RecordedTraining)
    assert (recorded.encoder, recorded.encoder_name, recorded.layer, recorded.k, recorded.dim, recorded.data) == (
        SIDECAR["encoder"], "logmel", 0, 8, 4, ("/audio",))
    assert recorded.training == TrainingFacts(inertia=1.5, kmeans={"k": 8})
    # Not recorded: None, so that export can tell them from a recorded value; no format means format 1.
    assert (recorded.frame_rule, recorded.feature_norm, recorded.channel, recorded.fit, recorded.format) == (
        None, None, None, None, 1)
    centroids = _sidecar_case(tmp_path, json.dumps(
        {**SIDECAR, "frame_rule": "pad", "feature_norm": "l2", "channel": 1, "format": 1, "fit": "faiss",
         "trim_silence_db": 30.0, "max_frames_file": 120}).encode())
    recorded = read_sidecar(centroids)
    assert (recorded.frame_rule, recorded.feature_norm, recorded.channel, recorded.fit, recorded.format) == (
        "pad", "l2", 1, "faiss", 1)
    assert (recorded.training.trim_silence_db, recorded.training.max_frames_file) == (30.0, 120)
    (tmp_path / "c.json").unlink()
    assert read_sidecar(centroids) is None


def _export(capsys, centroids, *extra) -> str:
    code, _, err = run_in_process(capsys, "export", "--model", "logmel", "--centroids", centroids,
                                  "-o", centroids.with_suffix(".onnx"), *extra)
    line = assert_one_error_or_success(code, err)
    assert line is not None and not centroids.with_suffix(".onnx").exists()
    return line


def test_export_with_a_malformed_sidecar(tmp_path, capsys):
    centroids = _sidecar_case(tmp_path, b'{"encoder": {"name": "logmel"}, "layer": "zero"}')
    assert "c.json: not a valid centroids sidecar: 'layer' must be an integer" in _export(capsys, centroids)


def test_layer_recorded_in_the_sidecar_names_the_real_conflict(logmel_units, tmp_path, capsys):
    """Centroids fitted on a transformer layer, exported with --model logmel: the sidecar's encoder is the
    conflict, not a --layer the user never passed."""
    centroids = tmp_path / "c.npy"
    shutil.copy(logmel_units, centroids)
    k, dim = np.load(centroids).shape
    sidecar = {**SIDECAR, "encoder": {"name": "org/hubert-base", "encoder_type": "hubert"}, "layer": 6, "k": k,
               "dim": dim}
    (tmp_path / "c.json").write_text(json.dumps(sidecar))
    line = _export(capsys, centroids)
    assert "were fitted on layer 6 of org/hubert-base (as c.json beside them records)" in line, line
    assert "not with --model logmel" in line and "--layer does not apply" not in line


def test_sidecar_layer_the_model_lacks_says_where_the_layer_came_from(tiny_hubert, tmp_path, capsys):
    centroids = tmp_path / "c.npy"
    np.save(centroids, np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32))
    sidecar = {"encoder": {"name": str(tiny_hubert), "encoder_type": "hubert"}, "layer": 9, "k": 4, "dim": 32}
    (tmp_path / "c.json").write_text(json.dumps(sidecar))
    code, _, err = run_in_process(capsys, "export", "--model", tiny_hubert, "--centroids", centroids,
                                  "-o", tmp_path / "b.onnx")
    line = assert_one_error_or_success(code, err)
    assert f"were fitted on layer 9 of {tiny_hubert} (as c.json beside them records)" in line, line
    assert f"which --model {tiny_hubert} cannot give" in line


def test_a_sidecar_describing_other_centroids(tmp_path, capsys):
    centroids = _sidecar_case(tmp_path, json.dumps({**SIDECAR, "k": 100}).encode())
    assert "describes 100 x 4 centroids: it belongs to another file" in _export(capsys, centroids)


def test_faiss_index_claiming_gigabytes_is_refused_without_allocating_them(tmp_path):
    import faiss
    index = faiss.IndexFlatL2(4)
    index.add(GOOD)
    path = tmp_path / "c.index"
    faiss.write_index(index, str(path))
    data = bytearray(path.read_bytes())
    codes_size_at = 4 + 4 + 8 + 8 + 8 + 1 + 4  # fourcc, d, ntotal, two unused, is_trained, metric; then codes
    assert struct.unpack("<Q", data[codes_size_at:codes_size_at + 8])[0] == GOOD.size  # counted in floats
    data[codes_size_at:codes_size_at + 8] = struct.pack("<Q", 1 << 29)  # 2 GiB of floats
    path.write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(path, "not a readable faiss index")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 << 10  # KiB: far below 2 GiB
