"""Reading initializer tensors from an ONNX file without the ``onnx`` package.

The runtime must not depend on ``onnx`` (it pulls protobuf and is not needed to run a model), and
onnxruntime does not expose initializers. An ONNX file is a protobuf ``ModelProto``; the few fields
needed here (graph -> initializer -> name, dims, data_type, raw_data/float_data) are read straight
from the protobuf wire format, over a memory map the caller holds (bundle_centroids.py), so a large
bundle is not copied into memory.

Field numbers are from onnx.proto3 (ModelProto.graph = 7, GraphProto.initializer = 5,
TensorProto.dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9, data_location = 14).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import BundleError

MODEL_GRAPH, GRAPH_INITIALIZER = 7, 5
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_DATA_LOCATION = 1, 2, 4, 8, 9, 14
# TensorProto.DataType codes this reader decodes, as little-endian numpy dtypes.
DTYPES = {1: np.dtype("<f4"), 6: np.dtype("<i4"), 7: np.dtype("<i8"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}
WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_START_GROUP, WIRE_END_GROUP, WIRE_I32 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]
    data_type: int


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated ONNX file")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """``(field number, wire type, value)`` of one message; LEN values are memoryview slices."""
    for number, wire, value, _ in field_spans(buf):
        yield number, wire, value


def field_spans(buf: memoryview) -> Iterator[tuple[int, int, object, memoryview]]:
    """As :func:`_fields`, plus each field's encoded bytes (key included), for copying it unchanged."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = _varint(buf, pos)
        elif wire == WIRE_I64:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == WIRE_LEN:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == WIRE_I32:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == WIRE_START_GROUP:  # a deprecated but valid encoding; ONNX defines none, so skip it whole
            pos = _skip_group(buf, pos, number)
            continue
        else:
            raise BundleError(f"unsupported protobuf wire type {wire} in ONNX file")
        if pos > len(buf):
            raise BundleError("truncated ONNX file")
        yield number, wire, value, buf[start:pos]


def _skip_group(buf: memoryview, pos: int, number: int) -> int:
    """The position after the group that started with field ``number`` (nested groups included)."""
    open_groups = [number]
    while open_groups:
        key, pos = _varint(buf, pos)
        inner, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            _, pos = _varint(buf, pos)
        elif wire == WIRE_I64:
            pos += 8
        elif wire == WIRE_LEN:
            length, pos = _varint(buf, pos)
            pos += length
        elif wire == WIRE_I32:
            pos += 4
        elif wire == WIRE_START_GROUP:
            open_groups.append(inner)
        elif wire == WIRE_END_GROUP and inner == open_groups[-1]:
            open_groups.pop()
        else:
            raise BundleError(f"malformed protobuf group in ONNX file (wire type {wire})")
        if pos > len(buf):
            raise BundleError("truncated ONNX file")
    return pos


def _packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


External = Callable[[memoryview], memoryview]  # an external tensor's message -> its bytes (a container's region)


def _tensor(buf: memoryview, want: Callable[[TensorInfo], bool],
            external_bytes: External | None = None) -> tuple[TensorInfo, np.ndarray] | None:
    name, dims, data_type, raw, floats, external = "", [], 1, None, None, False
    for number, wire, value in _fields(buf):
        if number == TENSOR_NAME:
            name = bytes(value).decode("utf-8", "replace")
        elif number == TENSOR_DIMS:
            dims += _packed_varints(value) if wire == WIRE_LEN else [value]
        elif number == TENSOR_DATA_TYPE:
            data_type = value
        elif number == TENSOR_RAW_DATA:
            raw = value
        elif number == TENSOR_FLOAT_DATA and wire == WIRE_LEN:
            floats = value
        elif number == TENSOR_DATA_LOCATION and value == 1:
            external = True
    info = TensorInfo(name, tuple(int(d) for d in dims), int(data_type))
    if not want(info):
        return None
    if external and external_bytes is None:
        raise BundleError(f"initializer {name} is stored outside the ONNX file (external data)")
    if external:
        raw = external_bytes(buf)
    if data_type not in DTYPES:
        raise BundleError(f"initializer {name} has ONNX data type {data_type}, which this reader does not decode")
    dtype = DTYPES[data_type]
    if raw is not None:
        array = np.frombuffer(bytes(raw), dtype=dtype)
    elif floats is not None and data_type == 1:
        array = np.frombuffer(bytes(floats), dtype=dtype)
    else:
        array = np.zeros(0, dtype)
    count = math.prod(info.dims)  # Python ints: crafted dims cannot overflow into a matching count
    if array.size != count:
        raise BundleError(f"initializer {name}: {array.size} values for shape {info.dims}")
    return info, array.reshape(info.dims).astype(dtype.newbyteorder("="))


def scan_initializers(model: memoryview, want: Callable[[TensorInfo], bool],
                      external_bytes: External | None = None) -> dict[str, np.ndarray]:
    """The main graph's initializers of a serialized ModelProto for which ``want(info)`` is true (copies).

    External tensors are read through ``external_bytes`` (a container's weight region); without
    it, one is refused.
    """
    found: dict[str, np.ndarray] = {}
    for number, wire, graph in _fields(model):
        if number != MODEL_GRAPH or wire != WIRE_LEN:
            continue
        for inner, inner_wire, tensor in _fields(graph):
            if inner == GRAPH_INITIALIZER and inner_wire == WIRE_LEN:
                hit = _tensor(tensor, want, external_bytes)
                if hit is not None:
                    found[hit[0].name] = hit[1]
    return found
