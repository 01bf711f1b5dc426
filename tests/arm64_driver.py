"""Run a batch of audiotok commands in one process and write what they gave as JSON.

``python arm64_driver.py JOB.json REPORT.json``. test_arm64.py runs this same script on the host
and, through qemu, on each emulated Raspberry Pi CPU, so that qemu's start-up and onnxruntime's
import are paid once per CPU and both sides take the same path. JOB holds ``tokenize`` (bundle,
audio files) and ``stream`` (bundle, raw PCM, options) entries; each goes through the ``audiotok``
command line (``tokenize --format jsonl -o FILE``; ``stream B --input -`` reading a real pipe fed
in uneven blocks). The report also says what the interpreter is: machine, CPU features as numpy
sees them, the cpuinfo onnxruntime reads, and whether the training stack can be imported.

It imports only the runtime and the standard library: it runs in the torch-free arm64 install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

TRAINING_STACK = ("torch", "transformers", "sklearn", "onnx")
PIPE_BLOCK_BYTES = 4001  # odd on purpose: a sample's two bytes arrive in different reads


def describe() -> dict:
    import numpy
    import onnxruntime

    import audiotok

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    # Where each would be imported from (None: `import NAME` raises ModuleNotFoundError).
    found = {name: getattr(importlib.util.find_spec(name), "origin", None) for name in TRAINING_STACK}
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    part = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("CPU part")]
    return {"machine": platform.machine(), "python": platform.python_version(), "audiotok": audiotok.__file__,
            "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
            "cpu_features": {name: bool(features.get(name)) for name in ("ASIMD", "ASIMDDP", "AVX512F")},
            "cpuinfo_parts": sorted(set(part)), "training_stack": found}


def tokenize(bundle: str, files: list[str], workdir: Path) -> dict:
    from audiotok.runtime.commands.dispatcher import main

    out = workdir / "tokenize.jsonl"
    code = main(["tokenize", bundle, *files, "--format", "jsonl", "-o", str(out), "--overwrite", "--threads", "1"])
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return {"exit": code, "units": {r["path"]: r["units"] for r in records if "units" in r}}


def stream(bundle: str, pcm: str, args: list[str], workdir: Path) -> dict:
    """``audiotok stream BUNDLE --input - --format jsonl ARGS`` with stdin a pipe written by a thread."""
    from audiotok.runtime.commands.dispatcher import main

    read_end, write_end = os.pipe()
    data = Path(pcm).read_bytes()

    def feed():
        with open(write_end, "wb", buffering=0) as pipe:
            try:
                for start in range(0, len(data), PIPE_BLOCK_BYTES):
                    pipe.write(data[start:start + PIPE_BLOCK_BYTES])
            except BrokenPipeError:  # the command stopped reading (an error it reports itself)
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = workdir / "stream.jsonl"
    with open(read_end, "rb") as pipe, open(out, "wb") as sink:
        stdin, stdout = sys.stdin, sys.stdout
        sys.stdin, sys.stdout = io.TextIOWrapper(pipe), io.TextIOWrapper(sink, write_through=True)
        try:
            code = main(["stream", bundle, "--input", "-", "--format", "jsonl", *args])
        finally:
            sys.stdout.flush()
            sys.stdin, sys.stdout = stdin, stdout
    writer.join()
    chunks = [json.loads(line) for line in out.read_text().splitlines()]
    return {"exit": code, "frames": [c["frame"] for c in chunks], "units": [u for c in chunks for u in c["units"]]}


def run(job: dict) -> dict:
    report = {"env": describe(), "tokenize": {}, "stream": {}}
    with tempfile.TemporaryDirectory(prefix="audiotok-arm64-") as tmp:
        for entry in job["tokenize"]:
            started = time.perf_counter()
            report["tokenize"][entry["name"]] = tokenize(entry["bundle"], entry["files"], Path(tmp))
            report["tokenize"][entry["name"]]["seconds"] = round(time.perf_counter() - started, 2)
        for entry in job["stream"]:
            started = time.perf_counter()
            report["stream"][entry["name"]] = stream(entry["bundle"], entry["pcm"], entry.get("args", []), Path(tmp))
            report["stream"][entry["name"]]["seconds"] = round(time.perf_counter() - started, 2)
    return report


if __name__ == "__main__":
    job_path, report_path = sys.argv[1:3]
    with contextlib.redirect_stdout(sys.stderr):  # stdout stays clean; the report goes to its file
        result = run(json.loads(Path(job_path).read_text()))
    Path(report_path).write_text(json.dumps(result))
