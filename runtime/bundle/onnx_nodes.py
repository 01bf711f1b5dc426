"""A bundle's node list and initializer shapes, read without the ``onnx`` package.

Counting a bundle's arithmetic needs to know, for each node, its operator, its inputs and a few
integer attributes (a convolution's ``group``), and which values are constants. Like
:mod:`onnx_tensors` this reads the protobuf wire format over a memory map; tensor data is never
decoded, so a large or hostile file costs no more memory than its node list.

Field numbers are from onnx.proto3 (GraphProto.node = 1, initializer = 5; NodeProto.input = 1,
output = 2, name = 3, op_type = 4, attribute = 5, domain = 7; AttributeProto.name = 1, i = 3,
g = 6, graphs = 11). The branches of an ``If`` (the stream entry point's selections) are read too:
their nodes follow the ``If`` in the list, so whatever an offline call runs inside one
is counted like any other node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .container import model_view
from ..errors import BundleError
from .onnx_tensors import (GRAPH_INITIALIZER, MODEL_GRAPH, TENSOR_DIMS, TENSOR_NAME, WIRE_LEN, WIRE_VARINT, _fields,
                           _packed_varints)

GRAPH_NODE = 1
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
ATTRIBUTE_NAME, ATTRIBUTE_INT, ATTRIBUTE_TENSOR, ATTRIBUTE_GRAPH, ATTRIBUTE_GRAPHS = 1, 3, 5, 6, 11
SUBGRAPH_OPS = ("If", "Loop", "Scan")
GRAPH_INPUT, VALUE_INFO_NAME = 11, 1
MAX_NODES = 1_000_000  # far above any speech encoder; bounds what a hostile file can make us hold
MAX_DEPTH = 8  # subgraphs within subgraphs: the exporter nests none; bounds a hostile file's recursion


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    ints: tuple[tuple[str, int], ...]  # the node's integer attributes (e.g. a Conv's group)
    tensor_dims: tuple[int, ...] | None = None  # a Constant's value shape

    def attribute(self, name: str, default: int) -> int:
        return dict(self.ints).get(name, default)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]  # in the file's (topological) order
    initializers: dict[str, tuple[int, ...]]  # name -> dims
    inputs: tuple[str, ...] = ()  # graph input names (an initializer named like one is only its default)

    def constant_values(self) -> set[str]:
        """Names of values fixed at export: initializers, Constant outputs, and what only they feed.

        A MatMul whose operand is constant is a learned projection; one whose operands both vary
        with the input (query x key, weights x value) is attention. Following Cast, Transpose and
        DequantizeLinear chains keeps that true for fp16 and int8 graphs.
        """
        constant = set(self.initializers) - set(self.inputs)  # a caller may pass another value
        for node in self.nodes:
            inputs = [name for name in node.inputs if name]
            if node.op_type in SUBGRAPH_OPS:  # its branches read values its inputs do not list
                continue
            if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
                constant.update(node.outputs)
        return constant

    def constant_dims(self) -> dict[str, tuple[int, ...]]:
        """Shapes of initializers and Constant outputs: what onnxruntime's profiler may leave out."""
        dims = dict(self.initializers)
        for node in self.nodes:
            if node.op_type == "Constant" and node.tensor_dims is not None and node.outputs:
                dims[node.outputs[0]] = node.tensor_dims
        return dims


def _text(value: object) -> str:
    return bytes(value).decode("utf-8", "replace")


def _node(buf: memoryview, subgraphs: list[memoryview] | None = None) -> Node:
    """One NodeProto; the buffers of its subgraph attributes are appended to ``subgraphs`` when given."""
    name = op_type = domain = ""
    inputs: list[str] = []
    outputs: list[str] = []
    ints: list[tuple[str, int]] = []
    tensor_dims = None
    for number, wire, value in _fields(buf):
        if number == NODE_INPUT and wire == WIRE_LEN:
            inputs.append(_text(value))
        elif number == NODE_OUTPUT and wire == WIRE_LEN:
            outputs.append(_text(value))
        elif number == NODE_NAME and wire == WIRE_LEN:
            name = _text(value)
        elif number == NODE_OP_TYPE and wire == WIRE_LEN:
            op_type = _text(value)
        elif number == NODE_DOMAIN and wire == WIRE_LEN:
            domain = _text(value)
        elif number == NODE_ATTRIBUTE and wire == WIRE_LEN:
            attribute, integer = "", None
            for inner, inner_wire, inner_value in _fields(value):
                if inner == ATTRIBUTE_NAME and inner_wire == WIRE_LEN:
                    attribute = _text(inner_value)
                elif inner == ATTRIBUTE_INT and inner_wire == WIRE_VARINT:
                    integer = inner_value - (1 << 64) if inner_value >= 1 << 63 else inner_value
                elif inner == ATTRIBUTE_TENSOR and inner_wire == WIRE_LEN:
                    tensor_dims = _initializer(inner_value)[1]
                elif inner in (ATTRIBUTE_GRAPH, ATTRIBUTE_GRAPHS) and inner_wire == WIRE_LEN and subgraphs is not None:
                    subgraphs.append(inner_value)
            if integer is not None:
                ints.append((attribute, int(integer)))
    return Node(name, op_type, domain, tuple(inputs), tuple(outputs), tuple(ints), tensor_dims)


def _initializer(buf: memoryview) -> tuple[str, tuple[int, ...]]:
    name, dims = "", []
    for number, wire, value in _fields(buf):
        if number == TENSOR_NAME and wire == WIRE_LEN:
            name = _text(value)
        elif number == TENSOR_DIMS:
            dims += _packed_varints(value) if wire == WIRE_LEN else [value]
    return name, tuple(int(d) for d in dims)


def read_graph(path: str | os.PathLike) -> Graph:
    """The main graph's nodes (each ``If``/``Loop`` followed by its subgraphs' nodes) and initializer
    shapes; either layout."""
    nodes: list[Node] = []
    initializers: dict[str, tuple[int, ...]] = {}
    inputs: list[str] = []

    def read(graph: memoryview, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BundleError(f"{path}: subgraphs nested more than {MAX_DEPTH} deep")
        for inner, inner_wire, value in _fields(graph):
            if inner_wire != WIRE_LEN:
                continue
            if inner == GRAPH_NODE:
                if len(nodes) >= MAX_NODES:
                    raise BundleError(f"{path}: more than {MAX_NODES} nodes in the graph")
                subgraphs: list[memoryview] = []
                nodes.append(_node(value, subgraphs))
                for subgraph in subgraphs:
                    read(subgraph, depth + 1)
            elif inner == GRAPH_INITIALIZER:
                name, dims = _initializer(value)
                initializers[name] = dims
            elif inner == GRAPH_INPUT and depth == 0 and len(inputs) < MAX_NODES:
                inputs.extend(_text(v) for n, w, v in _fields(value) if n == VALUE_INFO_NAME and w == WIRE_LEN)

    with model_view(path) as (model, _):
        for number, wire, graph in _fields(model):
            if number == MODEL_GRAPH and wire == WIRE_LEN:
                read(graph, 0)
    return Graph(tuple(nodes), initializers, tuple(inputs))
