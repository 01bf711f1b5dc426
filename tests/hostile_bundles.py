"""Building hostile bundles for the tests: a valid bundle with its manifest or bytes changed, and small
hand-made graphs that break the bundle contract (float, negative or out-of-range ids, wrong shapes)."""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
from onnx import TensorProto

from audiotok.runtime.commands.dispatcher import main
from audiotok.runtime.constants import MANIFEST_KEY

TIME_LIMIT_SECONDS = 30  # one command on a tiny bundle and a second of audio; a hang fails the test


def manifest_of(model: onnx.ModelProto) -> str:
    return next(p.value for p in model.metadata_props if p.key == MANIFEST_KEY)


def with_manifest(model: onnx.ModelProto, text: str, path: Path) -> Path:
    """``model`` saved at ``path`` with its manifest replaced by ``text`` (kept byte for byte)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for prop in copy.metadata_props:
        if prop.key == MANIFEST_KEY:
            prop.value = text
    onnx.save(copy, str(path))
    return path


def _constant(name: str, values, dims: list[int]) -> onnx.NodeProto:
    flat = np.array(values, dtype=np.int64).flatten().tolist()
    return oh.make_node("Constant", [], [name], value=oh.make_tensor(name + "_value", TensorProto.INT64, dims, flat))


def unit_graph(path: Path, manifest: str, *, value: int | float = 0, dtype: int = TensorProto.INT64,
               frames_delta: int = 0, rank: int = 2, batch: int = 1,
               declared: tuple[int, list | None] = (TensorProto.INT64, [1, "frames"]),
               input_declared: tuple[int, list] = (TensorProto.FLOAT, [1, "samples"]),
               output_name: str = "units", fail_at_run: bool = False) -> Path:
    """A graph that outputs ``value`` for every frame, shaped ``[batch] * (rank - 1) + [frames + frames_delta]``
    where frames = (samples - 400) // 320 + 1, with ``manifest`` in its metadata (less any stream entry:
    this graph has no stream entry point)."""
    if json.loads(manifest).get("stream") is not None:
        manifest = replace_field(manifest, "stream", "null")
    nodes = [
        oh.make_node("Shape", ["waveform"], ["shape"]), _constant("axis1", 1, []),
        oh.make_node("Gather", ["shape", "axis1"], ["n"], axis=0),
        _constant("field", 400, []), _constant("hop", 320, []), _constant("plus", 1 + frames_delta, []),
        oh.make_node("Sub", ["n", "field"], ["a"]), oh.make_node("Div", ["a", "hop"], ["b"]),
        oh.make_node("Add", ["b", "plus"], ["frames"]), _constant("axes", [0], [1]),
        oh.make_node("Unsqueeze", ["frames", "axes"], ["frames1"]),
        _constant("prefix", [batch] * (rank - 1), [rank - 1]),
        oh.make_node("Concat", ["prefix", "frames1"], ["out_shape"], axis=0),
    ]
    out = "filled" if fail_at_run else output_name
    nodes.append(oh.make_node("ConstantOfShape", ["out_shape"], [out], value=oh.make_tensor("v", dtype, [1], [value])))
    if fail_at_run:  # a reshape that cannot hold: onnxruntime fails inside run()
        nodes += [_constant("bad_shape", [1, 7], [2]), oh.make_node("Reshape", [out, "bad_shape"], [output_name])]
    graph = oh.make_graph(nodes, "units", [oh.make_tensor_value_info("waveform", *input_declared)],
                          [oh.make_tensor_value_info(output_name, *declared)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 9
    oh.set_model_props(model, {MANIFEST_KEY: manifest})
    onnx.save(model, str(path))
    return path


def replace_field(manifest: str, field: str, literal: str) -> str:
    """The manifest with ``field`` set to the raw JSON ``literal`` (so NaN, 1e400 or 10**50 stay as written)."""
    data = json.loads(manifest)
    data[field] = "@@VALUE@@"
    return json.dumps(data).replace('"@@VALUE@@"', literal)


@contextmanager
def time_limit(seconds: int = TIME_LIMIT_SECONDS):
    def expired(signum, frame):
        raise TimeoutError(f"the command ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """``audiotok ARGS`` in this process: (exit status, stdout, stderr). An escaping exception fails the test."""
    capsys.readouterr()
    with time_limit():
        code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_or_success(code: int, err: str) -> str | None:
    """Exit 0 without an error line, or non-zero with exactly one ``audiotok: error:`` line, last; no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("audiotok: error: ")]
    if code == 0:
        assert not errors, err
        return None
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]
