"""Library code logs, commands print: the ``audiotok`` logger and the handler the CLI puts on it.

Tokenizer, sessions and export are used from Python as much as from the command line; a library
that prints to stderr cannot be silenced or redirected by its caller. So library code reports
through ``logging.getLogger("audiotok")`` (no handler: Python shows warnings on stderr as they
are, and an application's logging configuration decides), and ``audiotok``'s command line installs
a handler that keeps its ``audiotok: warning: ...`` lines.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "audiotok"
log = logging.getLogger(LOGGER_NAME)


class _CliFormatter(logging.Formatter):
    """``audiotok: warning: ...`` for warnings, ``audiotok: ...`` for notes."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"audiotok: warning: {message}" if record.levelno >= logging.WARNING else f"audiotok: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests and callers may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler's constructor assigns it; the property wins
        pass


def install_cli_handler() -> None:
    """Show the library's warnings and notes on stderr in the command line's format (once per process)."""
    if not any(isinstance(handler, _StderrHandler) for handler in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_CliFormatter())
        log.addHandler(handler)
    log.setLevel(logging.INFO)
