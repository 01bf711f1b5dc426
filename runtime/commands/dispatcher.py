"""The ``audiotok`` command: a dispatcher that imports each subcommand only when it runs.

Runtime subcommands need only the base install. ``train`` and ``export`` live in the
``[train]`` extra; when torch and friends are missing the dispatcher says which extra to install
instead of failing with an ImportError.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from dataclasses import dataclass

from audiotok import __version__

from ..errors import AudiotokError, one_line, os_error_line
from ..log import install_cli_handler
from . import std_streams

TRAIN_ONLY_MODULES = {"torch", "transformers", "sklearn", "onnx", "onnxscript", "joblib", "scipy"}
EXTRA_MODULES = {  # top-level modules each extra installs: a command missing one names its extra
    "train": TRAIN_ONLY_MODULES,
    "eval": {"praatio", "rapidfuzz"},
}


@dataclass(frozen=True)
class Command:
    module: str  # exposes add_arguments(parser) and run(args) -> int
    summary: str
    extra: str | None = None  # the pip extra it needs beyond the runtime


RUNTIME = "audiotok.runtime.commands"
COMMANDS = {
    "tokenize": Command(f"{RUNTIME}.tokenize", "turn audio files into unit ids with a bundle"),
    "stream": Command(f"{RUNTIME}.stream", "tokenize a microphone or a PCM pipe live, units as they are final"),
    "info": Command(f"{RUNTIME}.info", "print a bundle's manifest and compute as JSON"),
    "bench": Command(f"{RUNTIME}.bench", "measure a bundle's speed and streaming load on this machine"),
    "plot": Command(f"{RUNTIME}.plot", "draw a file's waveform, spectrogram and units", "plot"),
    "train": Command("audiotok.train.train_cmd", "fit k-means units on a folder of speech", "train"),
    "export": Command("audiotok.export.export_cmd", "export encoder + centroids as one ONNX bundle", "train"),
    "evaluate": Command(f"{RUNTIME}.evaluate", "measure unit quality (PNMI, purity, bitrate) and stability", "eval"),
    "verify": Command("audiotok.export.verify_cmd", "measure a bundle's agreement with torch on your audio", "train"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's layout (examples, tables) and shows each option's default."""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: audiotok <command> [options]   (audiotok <command> --help for more)", "",
             "Speech in, discrete units out.", "", "commands:"]
    for name, cmd in COMMANDS.items():
        extra = f"  [needs audiotok[{cmd.extra}]]" if cmd.extra else ""
        lines.append(f"  {name:<{width}}  {cmd.summary}{extra}")
    lines += ["", "A typical run:",
              "  audiotok train --model logmel --k 100 -o units.npy speech/",
              "  audiotok export --model logmel --centroids units.npy -o units.onnx",
              "  audiotok tokenize units.onnx speech.flac"]
    return "\n".join(lines)


def _load(name: str, cmd: Command):
    try:
        return importlib.import_module(cmd.module)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if cmd.extra and root in EXTRA_MODULES.get(cmd.extra, ()):
            raise AudiotokError(
                f"'audiotok {name}' needs {root}, which is not installed: pip install 'audiotok[{cmd.extra}]'"
            ) from None
        raise


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: staged outputs are removed, finished work is kept


def _terminate_like_interrupt() -> None:
    """SIGTERM (``kill``, ``timeout``, a scheduler) ends a run as Ctrl-C does, leaving no temp debris."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"audiotok {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"audiotok: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    _terminate_like_interrupt()
    install_cli_handler()
    std_streams.fill_closed_std_fds()
    previous = std_streams.install()
    try:
        return _run(name, rest)
    finally:
        std_streams.restore(*previous)


def _run(name: str, rest: list[str]) -> int:
    """One command, every way it can end mapped to an exit status and at most one error line."""
    try:
        module = _load(name, COMMANDS[name])
        parser = argparse.ArgumentParser(prog=f"audiotok {name}", description=module.__doc__,
                                         formatter_class=_HelpFormatter)
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        status = int(module.run(args) or 0)
        std_streams.flush_stdout()
        return status
    except AudiotokError as exc:
        print(f"audiotok: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from ..formats.staging import remove_unfinished  # a signal before a writer's own cleanup was set up

        remove_unfinished()
        print("audiotok: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `audiotok tokenize ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # one no writer named: still a line naming the path the OS gave, not a traceback
        print(f"audiotok: error: {one_line(os_error_line(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
