"""Writing a bundle in either layout: a plain .onnx file, or the one-file container past 2 GB.

Every export stage keeps its large tensors in external-data files inside the export's temporary
folder (a protobuf cannot hold more than 2 GiB, and keeping weights out of the graph keeps each
stage's memory near one copy of them). The last step writes the bundle: a plain .onnx when the
whole model fits in one protobuf (today's layout, what every ONNX tool reads), else the container of
runtime/bundle/container.py, with the weights streamed from the stage's files into the aligned
weight region, a chunk at a time, so packing holds no copy of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import load_external_data_for_model

from audiotok.runtime.bundle.container import (ALIGNMENT, HEADER, LAYOUTS, MAX_MODEL_BYTES, VERSION, WEIGHTS_LOCATION,
                                               Header, encode_header)
from audiotok.runtime.errors import SettingsError

PLAIN_LIMIT_BYTES = 2_000_000_000  # "auto" writes a plain .onnx up to here (protobuf's limit is 2**31 - 1)
EXTERNAL_MIN_BYTES = 1024  # in the container, tensors from this size live in the weight region
COPY_CHUNK_BYTES = 64 << 20  # streamed weight copies: bounded memory at any model size
LAYOUT_CHOICES = ("auto", *LAYOUTS)


@dataclass(frozen=True)
class Source:
    """Where one tensor's bytes are now: a stage's external-data file, or the tensor's own raw_data."""

    tensor: onnx.TensorProto
    file: Path | None
    offset: int
    length: int


def save_stage(model: onnx.ModelProto, target: Path) -> None:
    """Save an export stage with its tensors in ``target``.data beside it (any size; nothing inline)."""
    data = target.with_name(target.name + ".data")
    if data.exists():
        data.unlink()
    onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data.name, size_threshold=EXTERNAL_MIN_BYTES)


def _entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def external_sources(model: onnx.ModelProto, folder: Path) -> dict[str, Source]:
    """Where the bytes of each external main-graph initializer of ``model`` (saved in ``folder``) are."""
    return {s.tensor.name: s for s in _sources(model, folder) if s.file is not None}


def read_source(source: Source) -> bytes:
    """One tensor's bytes, read from its stage's data file."""
    with open(source.file, "rb") as f:
        f.seek(source.offset)
        data = f.read(source.length)
    if len(data) != source.length:
        raise OSError(f"{source.file}: ended before tensor {source.tensor.name}'s {source.length} bytes")
    return data


Payload = Source | Callable[[], bytes | np.ndarray]  # bytes to copy, or a function that makes them


def write_stage(model: onnx.ModelProto, target: Path, payloads: dict[str, Payload]) -> None:
    """Save ``model`` at ``target`` with each initializer named in ``payloads`` external in ``target``.data.

    Tensors are written one at a time (copied from where they are, or made by their function just
    before they are written), so a stage that converts its weights holds one tensor, never a model.
    Offsets are aligned, so onnxruntime maps them instead of reading them into memory.
    """
    data = target.with_name(target.name + ".data")
    with open(data, "wb") as out:
        for tensor in model.graph.initializer:
            payload = payloads.get(tensor.name)
            if payload is None:
                continue
            out.write(b"\0" * (_aligned(out.tell()) - out.tell()))
            offset = out.tell()
            if isinstance(payload, Source):
                _copy(payload, out)
            else:
                made = payload()
                out.write(made.tobytes() if isinstance(made, np.ndarray) else made)
                del made
            _point_at(tensor, data.name, offset, out.tell() - offset)
    onnx.save(model, str(target))


def copy_stage(source: Path, target: Path) -> None:
    """Copy the stage at ``source`` (and its weights, streamed) to ``target``."""
    model = onnx.load(str(source), load_external_data=False)
    write_stage(model, target, dict(external_sources(model, source.parent)))


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _sources(model: onnx.ModelProto, folder: Path) -> list[Source]:
    """The main graph's tensors that go into the weight region, with where their bytes are now."""
    sources = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = _entries(tensor)
            file = folder / entries["location"]
            length = int(entries.get("length", os.path.getsize(file) - int(entries.get("offset", 0))))
            sources.append(Source(tensor, file, int(entries.get("offset", 0)), length))
        elif tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
            sources.append(Source(tensor, None, 0, len(tensor.raw_data)))
    return sources


def _aligned(value: int) -> int:
    return -(-value // ALIGNMENT) * ALIGNMENT


def _copy(source: Source, out) -> None:
    if source.file is None:
        out.write(source.tensor.raw_data)
        return
    with open(source.file, "rb") as f:
        f.seek(source.offset)
        left = source.length
        while left:
            chunk = f.read(min(left, COPY_CHUNK_BYTES))
            if not chunk:
                raise OSError(f"{source.file}: ended before tensor {source.tensor.name}'s {source.length} bytes")
            out.write(chunk)
            left -= len(chunk)


def _move_out(sources: list[Source]) -> list[Source]:
    """Point each tensor at its place in the weight region; where its bytes are now, kept for the copy."""
    placed, offset = [], 0
    for source in sources:  # each tensor on the alignment, in graph order
        tensor = source.tensor
        if source.file is None:  # inline bytes: keep them for the copy before clearing the field
            source = Source(onnx.TensorProto(name=tensor.name, raw_data=tensor.raw_data), None, 0, source.length)
        _point_at(tensor, WEIGHTS_LOCATION, offset, source.length)
        placed.append(source)
        offset = _aligned(offset + source.length)
    return placed


def write_container(model: onnx.ModelProto, folder: Path, target: Path) -> None:
    """Write ``model`` (external data relative to ``folder``) as one container file at ``target``."""
    sources = _move_out(_sources(model, folder))
    proto = model.SerializeToString()
    if len(proto) > MAX_MODEL_BYTES:
        raise SettingsError(f"the graph alone is {len(proto)} bytes with its weights moved out, more than one "
                            "protobuf holds")
    weights_offset = _aligned(HEADER.size + len(proto))
    weights_length = _region_length(sources) if sources else 0
    header = Header(VERSION, HEADER.size, HEADER.size, len(proto), weights_offset, weights_length, ALIGNMENT)
    with open(target, "wb") as out:
        out.write(encode_header(header))
        out.write(proto)
        out.write(b"\0" * (weights_offset - out.tell()))
        for i, source in enumerate(sources):
            if i:
                out.write(b"\0" * (_aligned(out.tell()) - out.tell()))
            _copy(source, out)


def _region_length(sources: list[Source]) -> int:
    """The weight region ends right after the last tensor (no padding after it)."""
    return sum(_aligned(s.length) for s in sources[:-1]) + sources[-1].length


def _stored_bytes(model: onnx.ModelProto, folder: Path) -> int:
    return model.ByteSize() + sum(s.length for s in _sources(model, folder) if s.file is not None)


def choose_layout(model: onnx.ModelProto, folder: Path, requested: str) -> str:
    """``requested``, or for ``auto``: plain .onnx while the whole model fits one protobuf, else the container."""
    if requested not in LAYOUT_CHOICES:
        raise SettingsError(f"--layout must be one of {', '.join(LAYOUT_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "onnx" if _stored_bytes(model, folder) <= PLAIN_LIMIT_BYTES else "container"


def write_bundle(model: onnx.ModelProto, folder: Path, target: Path, layout: str = "auto") -> str:
    """Write ``model`` (a stage loaded without its external data from ``folder``) in ``layout``; which one."""
    chosen = choose_layout(model, folder, layout)
    if chosen == "container":
        write_container(model, folder, target)
        return chosen
    if _stored_bytes(model, folder) > MAX_MODEL_BYTES:
        raise SettingsError(f"--layout onnx: this bundle is over {MAX_MODEL_BYTES} bytes, more than one ONNX "
                            "protobuf holds; use --layout container (or auto)")
    load_external_data_for_model(model, str(folder))
    onnx.save(model, str(target))
    return chosen
