"""A ceiling on what a bundle's graph may allocate at run time, which the user can raise.

A few hundred kilobytes of graph can ask for gigabytes when it runs (an ``Expand`` or
``ConstantOfShape`` to a shape it computes), and nothing in the file says so beforehand. Every
audiotok session allocates from an onnxruntime arena with a ``max_mem``, registered just before the
session is made (a session keeps the arena it was made with); an allocation past it fails inside
the run, which :func:`memory_message` turns into one line naming the node and the limit.

The limit is ``AUDIOTOK_MAX_MEMORY_MB`` when set, else 1 GiB, plus four times the bundle's size
(weights come from the same arena), plus 256 bytes per squared frame of the longest run the
session will get (attention grows with the square of the run: 550 MiB for a 30 s window, 14 GiB
for a 150 s pass). HuBERT-base in 30 s windows peaks near 0.75 GiB.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import onnxruntime as ort

from ..errors import SettingsError

MEMORY_ENV = "AUDIOTOK_MAX_MEMORY_MB"
BASE_MB = 1024  # what any unit graph's other activations may take
WEIGHT_FACTOR = 4  # weights, their optimised copies and prepacked forms
BYTES_PER_SQUARED_FRAME = 256  # attention: up to 16 heads x float32 x 4 live copies of each frames x frames matrix
MAX_MB = 1 << 24  # 16 TiB: a larger value is a typo
MIB = 1 << 20
_ARENA_FAILURE = re.compile(r"running (\w+) node\. Name:'([^']*)'.*?Available memory of (\d+) is smaller than "
                            r"requested bytes of (\d+)", re.S)
_CPU_ARENA = ("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)

_lock = threading.Lock()
_limits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> its limit in MiB


def limit_mb(bundle_bytes: int, run_frames: int) -> int:
    """The limit for a bundle of ``bundle_bytes`` run on up to ``run_frames`` frames at once."""
    text = os.environ.get(MEMORY_ENV)
    if text is None or not text.strip():
        return min(MAX_MB, BASE_MB + WEIGHT_FACTOR * -(-bundle_bytes // MIB)
                   + -(-BYTES_PER_SQUARED_FRAME * run_frames * run_frames // MIB))
    if not (text.strip().isascii() and text.strip().isdigit()) or not 1 <= int(text) <= MAX_MB:
        raise SettingsError(f"{MEMORY_ENV} must be a whole number of MiB in 1..{MAX_MB}, got {text[:40]!r}")
    return int(text)


@contextmanager
def bounded_arena(options: ort.SessionOptions, limit: int) -> Iterator[None]:
    """Make the session created in the block allocate from an arena of at most ``limit`` MiB."""
    options.add_session_config_entry("session.use_env_allocators", "1")
    with _lock:  # the registered arena is process-wide: register and create as one step
        ort.create_and_register_allocator(ort.OrtMemoryInfo(*_CPU_ARENA), ort.OrtArenaCfg(limit * MIB, -1, -1, -1))
        yield


def remember_limit(session: object, limit: int) -> None:
    _limits[session] = limit


def memory_message(text: str, session: object) -> str | None:
    """The one line for an onnxruntime error that is the arena refusing an allocation, else None."""
    found = _ARENA_FAILURE.search(text)
    if found is None:
        return None
    op_type, name, _available, requested = found.groups()
    node = f"{op_type} node {name!r}" if name else f"an unnamed {op_type} node"
    limit = _limits.get(session) if session is not None else None
    bound = f"the memory limit of {limit:,} MiB" if limit is not None else "its memory limit"
    return (f"{node} asked for {int(requested) / MIB:,.0f} MiB at run time, beyond {bound} "
            f"(set {MEMORY_ENV} to raise it for a bundle you trust)")
