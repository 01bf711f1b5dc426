"""What a unit graph never needs, refused before onnxruntime runs a bundle.

An encoder and a nearest-centroid search are a fixed pipeline: convolutions, attention, matrix
products. Control flow that repeats (``Loop``, ``Scan``) has no place in one, and a loop whose
count comes from the graph itself can run for ever. Such a node anywhere (the main graph, an
``If`` branch, a local function) is refused by name. What a graph allocates at run time is
bounded separately (see :mod:`memory_limit`).

The protobuf is walked over a memory map with the readers of :mod:`onnx_tensors`, so a hostile
file costs no more than its node list. Field numbers are from onnx.proto3: ModelProto.graph = 7,
functions = 25; GraphProto.node = 1; FunctionProto.node = 7; NodeProto.name = 3, op_type = 4,
attribute = 5; AttributeProto.g = 6, graphs = 11.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .container import model_view
from ..errors import BundleError
from .onnx_tensors import MODEL_GRAPH, WIRE_LEN, _fields

TOO_DEEP = "Subgraph"  # stands for nesting past MAX_DEPTH in a refusal
REFUSED_OPS = {"Loop": "a loop", "Scan": "a scan (a loop over a tensor)",
               TOO_DEEP: "nested deeper than the 16 levels audiotok reads"}
ONNX_DOMAINS = ("", "ai.onnx")
MODEL_FUNCTIONS, FUNCTION_NODE, GRAPH_NODE = 25, 7, 1
NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 3, 4, 5, 7
ATTRIBUTE_GRAPH, ATTRIBUTE_GRAPHS = 6, 11
MAX_DEPTH = 16  # nested subgraphs followed; deeper nesting is refused, not recursed into


@dataclass(frozen=True)
class NodeRef:
    """Where a node sits: its name (or its position when unnamed) and its operator."""

    name: str
    op_type: str
    domain: str
    where: str  # "graph", "an If branch", "function NAME"


def _text(value: object) -> str:
    return bytes(value).decode("utf-8", "replace")


def _nodes(graph: memoryview, node_field: int, where: str, depth: int) -> Iterator[NodeRef]:
    """Every node of ``graph`` and, depth first, of the subgraphs its attributes hold."""
    if depth > MAX_DEPTH:
        yield NodeRef("", TOO_DEEP, "", where)  # refused like a loop: what lies deeper is not read
        return
    position = 0
    for number, wire, node in _fields(graph):
        if number != node_field or wire != WIRE_LEN:
            continue
        position += 1
        name = op_type = domain = ""
        subgraphs: list[memoryview] = []
        for field, field_wire, value in _fields(node):
            if field_wire != WIRE_LEN:
                continue
            if field == NODE_NAME:
                name = _text(value)
            elif field == NODE_OP_TYPE:
                op_type = _text(value)
            elif field == NODE_DOMAIN:
                domain = _text(value)
            elif field == NODE_ATTRIBUTE:
                subgraphs += [v for f, w, v in _fields(value) if w == WIRE_LEN and f in (ATTRIBUTE_GRAPH,
                                                                                          ATTRIBUTE_GRAPHS)]
        yield NodeRef(name or f"#{position}", op_type, domain, where)
        for sub in subgraphs:
            yield from _nodes(sub, GRAPH_NODE, f"a subgraph of {op_type} node {name or f'#{position}'!r}", depth + 1)


def every_node(model: memoryview) -> Iterator[NodeRef]:
    """The nodes of the main graph, of every subgraph, and of every local function."""
    for number, wire, value in _fields(model):
        if wire != WIRE_LEN:
            continue
        if number == MODEL_GRAPH:
            yield from _nodes(value, GRAPH_NODE, "the graph", 0)
        elif number == MODEL_FUNCTIONS:
            yield from _nodes(value, FUNCTION_NODE, "a local function", 0)


def check_graph_rules(path: str | os.PathLike) -> None:
    """Refuse a bundle holding a node a unit graph never needs (see the module docstring); a container
    bundle's graph is read from its model region, so both layouts meet the same rules."""
    if os.stat(path).st_size == 0:
        return  # onnxruntime's load says what is wrong with an empty file, in its own words
    with model_view(path) as (model, _weights):
        refused = _first_refused(model)
    if refused is not None:
        raise BundleError(f"{path}: {refused.op_type} node {refused.name!r} in {refused.where} is "
                          f"{REFUSED_OPS[refused.op_type]}, which a unit graph never needs and which can run "
                          "for ever; refused before it runs")


def _first_refused(model: memoryview) -> NodeRef | None:
    """The first refused node, or None; a file that is not a readable protobuf is left to onnxruntime's
    load, which says what is wrong with it in its own words."""
    try:
        for node in every_node(model):
            if node.op_type in REFUSED_OPS and node.domain in ONNX_DOMAINS:
                return node  # TOO_DEEP comes with domain ""
    except BundleError:
        return None
    return None
