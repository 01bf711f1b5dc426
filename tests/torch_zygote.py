"""Torch-side CLI runs (train, export, verify) forked from one process that has torch imported.

Each ``python -m audiotok export ...`` spends about 7 CPU-seconds importing torch, transformers,
scikit-learn and onnx before it does anything; the suite runs such commands a few hundred times,
which on a 2-core machine was most of its time. Here one server process per pytest worker imports
them once (and runs no torch op, so no thread pool exists yet) and forks a child per command. A
child is a real process, as the subprocess was: its own working folder, environment, stdin, stdout,
stderr, signal handlers and exit status, and its own thread pools, started on first use after the
fork (OpenMP's with one thread: see ``Zygote._start``). Only what a fresh interpreter does before
``main`` differs (imports already done), so commands whose environment changes import-time
behaviour (an ``env`` override) still get a fresh interpreter (see ``conftest.run_cli``).

The same fork runs a benchmarks/ script (``python SCRIPT ARGS``, run as ``__main__`` with its folder
first on sys.path) whose setup imports torch: tests/benchmark_runs.py.

Protocol: one JSON request per line on the server's stdin (argv, the script if any, environment, cwd,
the files for stdin, stdout and stderr, timeout), one JSON reply per line (the exit status, or a timeout).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TORCH_COMMANDS = ("train", "export", "verify")


class Zygote:
    """The client side: one server process, started on first use, shared by a pytest worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            # One OpenMP thread per command (read when torch and scikit-learn load, so it holds in every
            # child): the suite runs two workers on two cores, where a second spinning thread only contends;
            # a k=16 train took 11 CPU s with one thread and 15 with two on a busy machine.
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            self._server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True, env=env)
            atexit.register(self._stop, self._server)
        return self._server

    @staticmethod
    def _stop(server: subprocess.Popen) -> None:
        """End of the worker: the server's stdin closes, it finishes its loop and exits."""
        try:
            server.stdin.close()
            server.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait()

    def run(self, argv: list[str], *, input: bytes | None, cwd, timeout: float, script: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """``python -m audiotok ARGV``, or with ``script`` ``python SCRIPT ARGV``; ``env``: the environment
        (default: this process's)."""
        with tempfile.TemporaryDirectory(prefix="audiotok-zygote-") as tmp:
            files = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
            Path(files["stdin"]).write_bytes(input or b"")
            Path(files["stdout"]).touch()
            Path(files["stderr"]).touch()
            request = {"argv": argv, "env": dict(os.environ if env is None else env), "cwd": str(cwd or os.getcwd()),
                       "timeout": timeout, "script": script, **files}
            with self._lock:
                server = self._start()
                server.stdin.write(json.dumps(request) + "\n")
                server.stdin.flush()
                reply = server.stdout.readline()
            if not reply:
                raise RuntimeError("the torch zygote died")
            reply = json.loads(reply)
            out, err = Path(files["stdout"]).read_bytes(), Path(files["stderr"]).read_bytes()
        args = [sys.executable, *([script] if script else ["-m", "audiotok"]), *argv]
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired(args, timeout, out, err)
        return subprocess.CompletedProcess(args, reply["returncode"], out, err)


def _child(request: dict, channels: tuple[int, int]) -> None:
    """In the forked child: become the command's process, run it, exit with its status."""
    code = 1
    try:
        for fd in channels:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY | os.O_TRUNC),
                                (2, "stderr", os.O_WRONLY | os.O_TRUNC)):
            opened = os.open(request[name], flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      write_through=True)
        script = request.get("script")
        sys.argv = [script or sys.argv[0], *request["argv"]]
        try:
            if script:  # as `python SCRIPT ARGS` runs it: its folder first on sys.path, __name__ "__main__"
                sys.path[0] = os.path.dirname(os.path.abspath(script))
                try:
                    runpy.run_path(script, run_name="__main__")
                    code = 0
                finally:
                    atexit._run_exitfuncs()  # what the interpreter runs at exit (temporary folders, pools)
            else:
                from audiotok.runtime.commands.dispatcher import main

                code = main(request["argv"])
        except SystemExit as exc:
            if isinstance(exc.code, str):  # sys.exit("message"): the interpreter prints it
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass
    except BaseException:  # a crash must still end the child, with the traceback where a test sees it
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"timeout": True}
        time.sleep(0.005)


# What the commands import lazily on first use, each import costing every child again: the encoder
# families' modeling modules (transformers loads them on first access), torch.export and the ONNX
# exporter's stack (dynamo, functorch, onnxscript's op library, networkx, sympy's parts) and
# onnxruntime's fusion and quantization tools. Importing them here took a tiny export from 26 to 15
# CPU-seconds per child. Imports only: no torch op runs, so no thread pool exists before a fork.
PRELOAD = (
    "onnx", "sklearn.cluster", "torch", "transformers",
    "transformers.models.hubert.modeling_hubert", "transformers.models.wav2vec2.modeling_wav2vec2",
    "transformers.models.wavlm.modeling_wavlm", "transformers.models.data2vec.modeling_data2vec_audio",
    "transformers.feature_extraction_sequence_utils",
    "torch._dynamo", "torch._functorch.aot_autograd", "torch._export", "torch.export._trace",
    "torch._inductor.decomposition", "functorch.compile", "networkx", "sympy.combinatorics", "sympy.physics.units",
    "torch.onnx._internal.exporter._core", "torch.onnx._internal.exporter._registration",
    "onnxscript.function_libs.torch_lib.ops", "onnxscript.rewriter", "onnxscript.optimizer",
    "onnxruntime.transformers.optimizer", "onnxruntime.quantization",
    "audiotok.export.bundle", "audiotok.export.export_cmd", "audiotok.export.verify_cmd",
    "audiotok.models.huggingface", "audiotok.runtime.commands.dispatcher", "audiotok.train.kmeans",
    "audiotok.train.train_cmd",
)


def serve() -> None:
    import importlib

    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in PRELOAD:
        importlib.import_module(name)

    with open(requests, encoding="utf-8") as inbox, open(replies, "w", encoding="utf-8") as outbox:
        for line in inbox:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, (inbox.fileno(), outbox.fileno()))
            outbox.write(json.dumps(_wait(pid, request["timeout"])) + "\n")
            outbox.flush()


if __name__ == "__main__":
    serve()
