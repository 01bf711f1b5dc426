"""The one-file container: a bundle whose weights do not fit in one protobuf (ONNX's 2 GB limit).

A protobuf message cannot exceed 2 GiB, so an encoder like XLS-R 1B (2.9 GB in float32) cannot be
one plain .onnx file; ONNX's answer, tensors in files beside the model, breaks the rule that a
bundle is one file and that nothing beside it is read. The container keeps both: one file that
holds the ONNX graph (its large tensors marked external) and, after it, those tensors' bytes.
Layout (docs/bundle_container.md; all integers little-endian):

    offset 0    header, 64 bytes: magic "AUDIOTOK", version u32 (1), header size u32 (64),
                model offset u64, model length u64, weights offset u64, weights length u64,
                alignment u32 (65536), 12 reserved zero bytes
    64          the ONNX ModelProto; each large initializer has data_location EXTERNAL and
                external_data {location: "audiotok-weights", offset, length}, the offset
                counted from the start of the weight region
    aligned     the weight region, to the end of the file; every tensor starts on the alignment

Nothing is trusted before it is checked: the header's offsets and lengths against the file's real
size, the weight region against holes (a sparse file reads as zeros that were never written), and
every external tensor's offset, length, alignment, element count and overlap with the others. Only
main-graph initializers may be external, and only into the weight region; a tensor naming any other
location is refused as in a plain bundle. Each refusal is one line.

onnxruntime is then given the graph with each location rewritten to the bundle's own file name and
its offsets made absolute, so it memory-maps the weights from the bundle itself (the 64 KiB
alignment lets it map every tensor in place, on 4 KiB and 64 KiB page kernels alike) and reads no
other file. The file must not change while a session is open: a mapped file cut short under a
running process ends it with SIGBUS, as for any memory-mapped model.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from .onnx_tensors import (DTYPES, GRAPH_INITIALIZER, MODEL_GRAPH, TENSOR_DATA_LOCATION, TENSOR_DATA_TYPE,
                           TENSOR_DIMS, TENSOR_NAME, WIRE_LEN, _fields, _packed_varints, field_spans)

MAGIC = b"AUDIOTOK"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQQI12x")  # magic, version, header size, model off/len, weights off/len, alignment
ALIGNMENT = 65536  # every tensor (and the region) starts here: mappable on 4 KiB and 64 KiB page kernels
WEIGHTS_LOCATION = "audiotok-weights"  # the external_data location that means "this file's weight region"
MAX_MODEL_BYTES = 2**31 - 1  # what one protobuf message can hold
MAX_EXTERNAL_TENSORS = 1_000_000  # bounds what a hostile header makes the checks hold
TENSOR_EXTERNAL_DATA, EXTERNAL = 13, 1
ENTRY_KEY, ENTRY_VALUE = 1, 2
# onnx TensorProto data types -> bytes per element, for the length check (4-bit types are not used here).
ITEM_BYTES = {**{code: dtype.itemsize for code, dtype in DTYPES.items()}, 2: 1, 3: 1, 4: 2, 5: 2, 9: 1, 12: 4,
              13: 8, 16: 2}
LAYOUTS = ("onnx", "container")


@dataclass(frozen=True)
class Header:
    version: int
    header_size: int
    model_offset: int
    model_length: int
    weights_offset: int
    weights_length: int
    alignment: int


@dataclass(frozen=True)
class ExternalTensor:
    """One initializer whose bytes are in the weight region: ``offset`` counted from the region's start."""

    name: str
    offset: int
    length: int


@dataclass(frozen=True)
class Container:
    """A checked container: its header and the external tensors in the order of their offsets."""

    path: Path
    header: Header
    tensors: tuple[ExternalTensor, ...]


def is_container(path: str | os.PathLike) -> bool:
    """Whether the file starts with the container's magic (else it is read as a plain ONNX bundle)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def layout(path: str | os.PathLike) -> str:
    """``"container"`` or ``"onnx"`` (the plain layout): what ``audiotok info`` reports."""
    return "container" if is_container(path) else "onnx"


def encode_header(header: Header) -> bytes:
    return HEADER.pack(MAGIC, header.version, header.header_size, header.model_offset, header.model_length,
                       header.weights_offset, header.weights_length, header.alignment)


def _read_header(path: Path, data: memoryview) -> Header:
    if len(data) < HEADER.size:
        raise BundleError(f"{path}: truncated container: {len(data)} bytes, less than its {HEADER.size}-byte header")
    _, *fields = HEADER.unpack_from(data)
    header = Header(*fields)
    if header.version != VERSION:
        raise BundleError(f"{path}: container version {header.version} is not supported (this audiotok reads "
                          f"version {VERSION}); export the bundle again with this audiotok")
    if header.header_size != HEADER.size or header.alignment != ALIGNMENT:
        raise BundleError(f"{path}: container header says header size {header.header_size} and alignment "
                          f"{header.alignment}; version {VERSION} has {HEADER.size} and {ALIGNMENT}")
    return header


def _check_regions(path: Path, header: Header, size: int) -> None:
    """The graph right after the header, then the aligned weight region that ends the file exactly."""
    model_end = header.model_offset + header.model_length
    if header.model_offset != HEADER.size or not 0 < header.model_length <= MAX_MODEL_BYTES:
        raise BundleError(f"{path}: container graph at byte {header.model_offset} with {header.model_length} "
                          f"bytes; it must start at byte {HEADER.size} and hold 1 to {MAX_MODEL_BYTES} bytes")
    if header.weights_offset % ALIGNMENT or header.weights_offset < model_end:
        raise BundleError(f"{path}: container weight region at byte {header.weights_offset}: it must start on a "
                          f"multiple of {ALIGNMENT} after the graph (which ends at byte {model_end})")
    end = header.weights_offset + header.weights_length
    if end > size:
        raise BundleError(f"{path}: truncated container: its weight region ends at byte {end}, but the file has "
                          f"{size} bytes (an interrupted copy or download?)")
    if end < size:
        raise BundleError(f"{path}: {size - end} unexpected bytes after the container's weight region "
                          f"(which ends at byte {end})")


def _check_allocated(path: Path, fd: int, header: Header) -> None:
    """Refuse a weight region with holes: a sparse file's holes read as zeros nobody wrote."""
    if header.weights_length == 0 or not hasattr(os, "SEEK_HOLE"):
        return
    try:
        hole = os.lseek(fd, header.weights_offset, os.SEEK_HOLE)
    except OSError:  # a filesystem that cannot say: nothing to check
        return
    end = header.weights_offset + header.weights_length
    if hole < end:
        raise BundleError(f"{path}: the container's weight region has a hole at byte {hole} (a sparse file: "
                          f"bytes that were never written); copy the bundle again, e.g. with cp --sparse=never")


def _entries(tensor: memoryview) -> tuple[str, int | None, int, dict[str, str], bool]:
    """A tensor's name, data type, element count, external_data entries and whether it is external."""
    name, data_type, dims, entries, external = "", None, [], {}, False
    for number, wire, value in _fields(tensor):
        if number == TENSOR_NAME and wire == WIRE_LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif number == TENSOR_DIMS:
            dims += _packed_varints(value) if wire == WIRE_LEN else [value]
        elif number == TENSOR_DATA_TYPE and not isinstance(value, memoryview):
            data_type = value
        elif number == TENSOR_DATA_LOCATION and value == EXTERNAL:
            external = True
        elif number == TENSOR_EXTERNAL_DATA and wire == WIRE_LEN:
            entry = {key: bytes(v).decode("utf-8", "replace") for key, w, v in _fields(value) if w == WIRE_LEN}
            entries[entry.get(ENTRY_KEY, "")] = entry.get(ENTRY_VALUE, "")
            external = True
    return name, data_type, math.prod(dims), entries, external


def _number(path: Path, name: str, entries: dict[str, str], key: str) -> int:
    text = entries.get(key, "")
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise BundleError(f"{path}: container tensor {name!r} has external_data {key} {text[:40]!r}, "
                          "not a non-negative integer")
    return int(text)


def _external_tensor(path: Path, tensor: memoryview, weights_length: int) -> ExternalTensor | None:
    name, data_type, count, entries, external = _entries(tensor)
    if not external:
        return None
    location = entries.get("location", "")
    if location != WEIGHTS_LOCATION:
        raise BundleError(f"{path}: not a self-contained bundle: container tensor {name!r} names "
                          f"{location[:80]!r} instead of the weight region; an audiotok bundle is one file, "
                          "and nothing beside it is read")
    offset, length = _number(path, name, entries, "offset"), _number(path, name, entries, "length")
    if offset % ALIGNMENT:
        raise BundleError(f"{path}: container tensor {name!r} starts at byte {offset} of the weight region, "
                          f"not on a multiple of {ALIGNMENT}")
    if offset + length > weights_length:
        raise BundleError(f"{path}: container tensor {name!r} ends at byte {offset + length} of the weight region, "
                          f"past its end ({weights_length} bytes)")
    if data_type not in ITEM_BYTES or count * ITEM_BYTES[data_type] != length:
        raise BundleError(f"{path}: container tensor {name!r} has {length} bytes, but its shape and data type "
                          f"{data_type} need {count * ITEM_BYTES.get(data_type, 0)}")
    return ExternalTensor(name, offset, length)


def _graph(model: memoryview) -> memoryview | None:
    return next((value for number, wire, value in _fields(model) if number == MODEL_GRAPH and wire == WIRE_LEN), None)


def _tensors(path: Path, model: memoryview, weights_length: int) -> tuple[ExternalTensor, ...]:
    """The main graph's external initializers, checked one by one and for overlap, by offset."""
    from .onnx_external import external_tensors

    graph = _graph(model)
    found = []
    for number, wire, value in _fields(graph) if graph is not None else ():
        if number == GRAPH_INITIALIZER and wire == WIRE_LEN:
            tensor = _external_tensor(path, value, weights_length)
            if tensor is not None:
                found.append(tensor)
                if len(found) > MAX_EXTERNAL_TENSORS:
                    raise BundleError(f"{path}: more than {MAX_EXTERNAL_TENSORS} external tensors in the container")
    if len(external_tensors(model)) != len(found):  # anywhere else (attributes, subgraphs): never written so
        raise BundleError(f"{path}: container tensors outside the main graph's initializers are external; "
                          "only initializers may live in the weight region")
    ordered = sorted(found, key=lambda t: t.offset)
    for before, after in zip(ordered, ordered[1:]):
        if after.offset < before.offset + before.length:
            raise BundleError(f"{path}: container tensors {before.name!r} and {after.name!r} overlap in the weight "
                              f"region (bytes {after.offset}..{before.offset + before.length})")
    return tuple(ordered)


@contextmanager
def mapped(path: str | os.PathLike) -> Iterator[memoryview]:
    """The whole file as a read-only memoryview over a memory map (released on exit)."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise BundleError(f"{path}: empty file") from None
    view = memoryview(data)
    try:
        yield view
    finally:
        view.release()
        try:
            data.close()
        except BufferError:  # an exception still references a slice; collection closes it
            pass


def check_container(path: str | os.PathLike) -> Container:
    """Read and check a container's header, regions and external tensors; one-line BundleError otherwise."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER.size)
        header = _read_header(path, memoryview(head))
        _check_regions(path, header, size)
        _check_allocated(path, f.fileno(), header)
    with mapped(path) as data:
        model = data[header.model_offset: header.model_offset + header.model_length]
        try:
            tensors = _tensors(path, model, header.weights_length)
        except BundleError as exc:
            message = str(exc)
            raise BundleError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None
        finally:
            model.release()
    return Container(path, header, tensors)


@contextmanager
def model_view(path: str | os.PathLike) -> Iterator[tuple[memoryview, memoryview | None]]:
    """The serialized ModelProto and, for a container, its weight region (both over one memory map)."""
    container = check_container(path) if is_container(path) else None
    with mapped(path) as data:
        if container is None:
            yield data, None
            return
        h = container.header
        model = data[h.model_offset: h.model_offset + h.model_length]
        weights = data[h.weights_offset: h.weights_offset + h.weights_length]
        try:
            yield model, weights
        finally:
            model.release()
            weights.release()


def external_bytes(tensor: memoryview, weights: memoryview) -> memoryview:
    """The bytes of an external initializer inside a (checked) container's weight region."""
    _, _, _, entries, _ = _entries(tensor)
    offset, length = int(entries.get("offset", "0")), int(entries.get("length", "0"))
    if offset + length > len(weights):
        raise BundleError("external tensor past the end of the weight region")
    return weights[offset: offset + length]


# -- the graph onnxruntime is given: locations pointing at the bundle itself, offsets absolute --

def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint_bytes(number << 3 | WIRE_LEN) + _varint_bytes(len(payload)) + payload


def _relocated_tensor(tensor: memoryview, location: str, base: int) -> bytes:
    parts, entries = [], {}
    for number, wire, value, raw in field_spans(tensor):
        if number == TENSOR_EXTERNAL_DATA and wire == WIRE_LEN:
            entry = {key: bytes(v).decode("utf-8", "replace") for key, w, v in _fields(value) if w == WIRE_LEN}
            entries[entry.get(ENTRY_KEY, "")] = entry.get(ENTRY_VALUE, "")
        else:
            parts.append(bytes(raw))
    if not entries:
        return bytes(tensor)
    entries["location"] = location
    entries["offset"] = str(base + int(entries.get("offset", "0")))
    for key, value in entries.items():
        pair = _len_field(ENTRY_KEY, key.encode()) + _len_field(ENTRY_VALUE, value.encode())
        parts.append(_len_field(TENSOR_EXTERNAL_DATA, pair))
    return b"".join(parts)


def _rewrite(buf: memoryview, number_wanted: int, rewrite) -> bytes:
    return b"".join(_len_field(number, rewrite(value)) if number == number_wanted and wire == WIRE_LEN
                    else bytes(raw) for number, wire, value, raw in field_spans(buf))


def runtime_model(container: Container) -> bytes:
    """The container's graph as onnxruntime loads it: external tensors read from the bundle file itself."""
    h = container.header
    location = container.path.name

    def graph(buf: memoryview) -> bytes:
        return _rewrite(buf, GRAPH_INITIALIZER, lambda t: _relocated_tensor(t, location, h.weights_offset))

    with open(container.path, "rb") as f:
        f.seek(h.model_offset)
        model = f.read(h.model_length)
    if len(model) != h.model_length:
        raise BundleError(f"{container.path}: truncated container (the file changed while it was read)")
    return _rewrite(memoryview(model), MODEL_GRAPH, graph)
