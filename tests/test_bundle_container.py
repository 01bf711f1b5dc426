"""The one-file container (bundles past 2 GB): the same units as a plain bundle, and every malformed
container refused with one line before onnxruntime reads it.

The containers here are small (a logmel bundle written with --layout container); the checks do not
depend on size. tests/test_large_bundle.py exports one past 2 GB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import error_line, run_cli, write_wav
from hostile_bundles import run_in_process

from audiotok.runtime.bundle.container import ALIGNMENT, HEADER, MAGIC, WEIGHTS_LOCATION, check_container

HOLE_BYTES = 1 << 16  # a hole must span whole filesystem blocks to exist


@pytest.fixture(scope="module")
def container(logmel_units, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("container") / "units.onnx"
    result = run_cli("export", "--model", "logmel", "--centroids", logmel_units, "-o", bundle, "--layout", "container")
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["units.onnx"]  # nothing beside it
    return bundle


def _parts(data: bytes) -> tuple[tuple, onnx.ModelProto, bytes]:
    header = HEADER.unpack_from(data)
    model = onnx.ModelProto.FromString(data[header[3]: header[3] + header[4]])
    return header, model, data[header[5]: header[5] + header[6]]


def _rebuilt(data: bytes, model: onnx.ModelProto, path: Path) -> Path:
    """``data`` with its graph replaced by ``model`` (the weight region moved to the next aligned offset)."""
    header, _, weights = _parts(data)
    proto = model.SerializeToString()
    offset = -(-(HEADER.size + len(proto)) // ALIGNMENT) * ALIGNMENT
    head = HEADER.pack(MAGIC, *header[1:3], HEADER.size, len(proto), offset, len(weights), header[7])
    path.write_bytes(head + proto + b"\0" * (offset - HEADER.size - len(proto)) + weights)
    return path


def _set(model: onnx.ModelProto, index: int, **entries: str) -> onnx.ModelProto:
    """The ``index``-th external initializer's external_data entries changed."""
    tensor = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL][index]
    for entry in tensor.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    return model


def _external(data: bytes, index: int) -> str:
    """The name of the ``index``-th external initializer (the one :func:`_set` changes), as the messages quote it."""
    _, model, _ = _parts(data)
    return [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL][index]


def test_a_container_gives_the_plain_bundles_units_centroids_and_cost(container, logmel_bundle, speech_dir, tmp_path):
    files = sorted(speech_dir.glob("*.wav"))
    plain, packed = run_cli("tokenize", logmel_bundle, *files), run_cli("tokenize", container, *files)
    assert plain.returncode == packed.returncode == 0, packed.stderr.decode()
    assert packed.stdout == plain.stdout
    described = {}
    for name, bundle in (("onnx", logmel_bundle), ("container", container)):
        result = run_cli("info", bundle, "--centroids", tmp_path / f"{name}.npy")
        assert result.returncode == 0, result.stderr.decode()
        described[name] = json.loads(result.stdout)
        assert described[name]["layout"] == name
    assert np.array_equal(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "container.npy"))
    assert described["container"]["compute"]["stages_gmac_per_second"] == \
        described["onnx"]["compute"]["stages_gmac_per_second"]
    checked = check_container(container)
    assert [t.offset % ALIGNMENT for t in checked.tensors] == [0] * len(checked.tensors)
    assert len(checked.tensors) >= 2


def _truncated(data: bytes, path: Path) -> Path:
    path.write_bytes(data[:-1000])
    return path


def _offset_past_end(data: bytes, path: Path) -> Path:
    _, model, weights = _parts(data)
    return _rebuilt(data, _set(model, 0, offset=str(_past_end(data))), path)


def _past_end(data: bytes) -> int:
    """An aligned offset one alignment past the end of the weight region."""
    return (-(-_parts(data)[2].__len__() // ALIGNMENT) + 1) * ALIGNMENT


def _overlapping(data: bytes, path: Path) -> Path:
    _, model, _ = _parts(data)
    return _rebuilt(data, _set(model, 1, offset="0"), path)


def _misaligned(data: bytes, path: Path) -> Path:
    _, model, _ = _parts(data)
    return _rebuilt(data, _set(model, 1, offset=str(ALIGNMENT + 64)), path)


def _wrong_length(data: bytes, path: Path) -> Path:
    _, model, _ = _parts(data)
    tensor = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL][0]
    length = next(int(e.value) for e in tensor.external_data if e.key == "length")
    return _rebuilt(data, _set(model, 0, length=str(length - 4)), path)


def _trailing(data: bytes, path: Path) -> Path:
    path.write_bytes(data + b"\0" * 10)
    return path


def _version(data: bytes, path: Path) -> Path:
    path.write_bytes(data[:8] + (7).to_bytes(4, "little") + data[12:])
    return path


def _sparse(data: bytes, path: Path) -> Path:
    """The right size, but a block of the weight region never written (a hole)."""
    header, _, _ = _parts(data)
    start = header[5] + ALIGNMENT  # inside the first tensor, on a block boundary
    with open(path, "wb") as f:
        f.write(data[:start])
        f.seek(start + HOLE_BYTES)
        f.write(data[start + HOLE_BYTES:])
    return path


def _size(data: bytes) -> int:
    return len(data)


@pytest.mark.parametrize("build,message", [
    (_truncated, lambda d: f"truncated container: its weight region ends at byte {_size(d)}, but the file has "
                           f"{_size(d) - 1000} bytes (an interrupted copy or download?)"),
    (_offset_past_end, lambda d: f"container tensor '{_external(d, 0)}' ends at byte {_past_end(d) + 643200} of the "
                                 f"weight region, past its end ({len(_parts(d)[2])} bytes)"),
    (_overlapping, lambda d: f"container tensors '{_external(d, 0)}' and '{_external(d, 1)}' overlap in the weight "
                             "region (bytes 0..643200)"),
    (_misaligned, lambda d: f"container tensor '{_external(d, 1)}' starts at byte {ALIGNMENT + 64} of the weight "
                            f"region, not on a multiple of {ALIGNMENT}"),
    (_wrong_length, lambda d: f"container tensor '{_external(d, 0)}' has 643196 bytes, but its shape and data type 1 "
                              "need 643200"),
    (_trailing, lambda d: f"10 unexpected bytes after the container's weight region (which ends at byte {_size(d)})"),
    (_version, lambda d: "container version 7 is not supported (this audiotok reads version 1); export the "
                         "bundle again with this audiotok"),
    (_sparse, lambda d: f"the container's weight region has a hole at byte {2 * ALIGNMENT} (a sparse file: bytes "
                        "that were never written); copy the bundle again, e.g. with cp --sparse=never"),
])
def test_a_malformed_container_is_refused_in_one_line(container, build, message, tmp_path, capsys):
    data = container.read_bytes()
    bundle = build(data, tmp_path / "hostile.onnx")
    audio = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(audio, np.zeros(16_000, np.float32), 16_000)
    for command in (["tokenize", bundle, audio], ["info", bundle]):
        code, _, err = run_in_process(capsys, *command)
        line = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1 and len(line) == 1, err
        assert line[0] == f"audiotok: error: {bundle}: {message(data)}", err


def test_a_container_tensor_naming_a_file_beside_it_is_refused_even_a_fifo(container, tmp_path, capsys):
    """The plain layout's rule holds in the container: its tensors live in its weight region, nowhere else."""
    data = container.read_bytes()
    _, model, _ = _parts(data)
    bundle = _rebuilt(data, _set(model, 2, location="weights.bin"), tmp_path / "beside.onnx")
    os.mkfifo(tmp_path / "weights.bin")
    code, _, err = run_in_process(capsys, "info", bundle)
    assert code == 1
    assert err.strip() == (f"audiotok: error: {bundle}: not a self-contained bundle: container tensor "
                           f"'{_external(data, 2)}' names 'weights.bin' instead of the weight region; an audiotok "
                           "bundle is one file, and nothing beside it is read")
    assert WEIGHTS_LOCATION not in err


@pytest.mark.parametrize("through", ["itself", "a link to it"])
def test_a_fifo_in_place_of_a_container_is_refused_without_opening_it(tmp_path, through):
    """A FIFO-backed bundle (weights that would stream from a pipe): one line, and never opened (opening
    a FIFO with no writer blocks; run_cli's timeout would fail the test)."""
    fifo = tmp_path / "units.onnx"
    os.mkfifo(fifo)
    bundle = fifo
    if through == "a link to it":
        bundle = tmp_path / "link.onnx"
        bundle.symlink_to(fifo)
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000, np.float32))
    for args in (["info", bundle], ["tokenize", bundle, audio]):
        assert error_line(run_cli(*args), alone=True) == \
            f"audiotok: error: {bundle}: is a pipe (FIFO), not an ONNX bundle"


def test_verify_measures_a_container_against_torch(container, speech_dir):
    result = run_cli("verify", container, "--model", "logmel", speech_dir)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip().splitlines()[-1].startswith("agreement 100.0000% of ")


def test_a_container_meets_the_same_graph_rules_as_a_plain_bundle(container, speech_dir, tmp_path, capsys):
    """A Loop hidden in a container's graph is refused by name before it runs, as in a plain bundle."""
    from test_bounds_and_edges import endless_loop

    data = container.read_bytes()
    _, model, _ = _parts(data)
    model.graph.node.extend(endless_loop())
    model.graph.output.append(onnx.helper.make_tensor_value_info("spun", onnx.TensorProto.INT64, None))
    hostile = _rebuilt(data, model, tmp_path / "looping.onnx")
    check_container(hostile)  # a well-formed container: only the graph rule refuses it
    code, out, err = run_in_process(capsys, "tokenize", hostile, sorted(speech_dir.glob("*.wav"))[0])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and out == "" and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].endswith("Loop node 'spin' in the graph is a loop, which a unit graph never needs and "
                                    "which can run for ever; refused before it runs")
