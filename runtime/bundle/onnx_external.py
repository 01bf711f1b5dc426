"""Finding tensors an ONNX file keeps outside itself (external data), before onnxruntime opens them.

An audiotok bundle is one self-contained file. An ONNX tensor may instead name a file to read its
values from (``data_location = EXTERNAL``, a ``location`` relative to the model's folder).
onnxruntime refuses absolute paths and paths that leave the folder, but it reads any file beside
the bundle, pipes and devices included: a bundle from a stranger could make a load hang on a FIFO,
read a huge neighbour into memory, or pull a neighbouring file's bytes into its weights. So every
tensor anywhere in the model is checked first (initializers, sparse initializers, node attributes,
subgraphs of If/Loop/Scan, functions, training graphs) and a bundle that has one is refused.

The walk reads the protobuf wire format over a memory map (no copy of the weights) with an
explicit stack, so a deeply nested crafted graph cannot exhaust Python's recursion. Field numbers
are from onnx.proto3.
"""

from __future__ import annotations

import mmap
import os

from .onnx_tensors import WIRE_LEN, WIRE_VARINT, _fields

# message kind -> {field number: message kind of that (length-delimited) field}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 8, 13, 14
ENTRY_KEY, ENTRY_VALUE = 1, 2
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MAX_REPORTED = 3


def _external_location(tensor: memoryview) -> tuple[str, str] | None:
    """``(name, location)`` when the tensor keeps its data outside the file, else None."""
    name, location, external = "", "", False
    for number, wire, value in _fields(tensor):
        if number == TENSOR_NAME and wire == WIRE_LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif number == TENSOR_DATA_LOCATION and wire == WIRE_VARINT and value == EXTERNAL:
            external = True
        elif number == TENSOR_EXTERNAL_DATA and wire == WIRE_LEN:
            entry = {key: bytes(v).decode("utf-8", "replace") for key, w, v in _fields(value) if w == WIRE_LEN}
            if entry.get(ENTRY_KEY) == "location":
                location = entry.get(ENTRY_VALUE, "")
            external = True  # external_data entries alone are enough for some readers to look outside
    return (name, location) if external else None


def external_tensors(model: memoryview) -> list[tuple[str, str]]:
    """Every ``(tensor name, location)`` kept outside a serialized ModelProto, in file order."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, memoryview]] = [("model", model)]
    while stack:
        kind, buf = stack.pop()
        if kind == "tensor":
            hit = _external_location(buf)
            if hit is not None:
                found.append(hit)
            continue
        children = _CHILDREN[kind]
        nested = [(children[number], value) for number, wire, value in _fields(buf)
                  if wire == WIRE_LEN and number in children]
        stack.extend(reversed(nested))
    return found


def describe_external_data(path: str | os.PathLike) -> str | None:
    """Why the ONNX file at ``path`` is not self-contained, or None when it is (or is not ONNX at all).

    A file the walk cannot read (truncated, not protobuf) is left to onnxruntime, which refuses it
    with its own message; only a readable model that names external data gets an answer here.
    """
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return None
    view = memoryview(mapped)
    try:
        found = external_tensors(view)
    except Exception:  # a malformed wire format: onnxruntime's refusal says it better
        return None
    finally:
        view.release()
        try:
            mapped.close()
        except BufferError:
            pass
    if not found:
        return None
    shown = ", ".join(f"{name or '(unnamed)'} -> {location or '(no location)'!r}" for name, location in found[:MAX_REPORTED])
    more = f" and {len(found) - MAX_REPORTED} more" if len(found) > MAX_REPORTED else ""
    return f"{len(found)} tensor(s) stored outside the file ({shown}{more})"
