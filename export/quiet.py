"""Silence third-party exporters and optimizers while they run.

torch.onnx and onnxruntime's transformer optimizer print progress, every fusion pattern they try
and warnings about optional packages; a user exporting a bundle needs none of it, and audiotok
reports what matters (the agreement, the sizes) itself. C++ code (torch's c10 logging,
onnxruntime's optimizers) writes to file descriptor 2 directly; the runtime's fd-level capture
takes that too, and an exception still carries its own message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

from audiotok.runtime.process.native_stderr import captured_stderr


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Raise the named loggers to ERROR, drop stdout and fd 2's library lines, ignore warnings for the block."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), captured_stderr():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
