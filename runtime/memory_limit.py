"""A ceiling on what a bundle's graph may allocate at run time, which the user can raise.

A few hundred kilobytes of graph can ask for gigabytes when it runs (an ``Expand`` or
``ConstantOfShape`` to a shape it computes), and nothing in the file says so beforehand. Every
audiotok session allocates from one onnxruntime arena registered for the process with a
``max_mem``; an allocation past it fails inside the run, which :func:`memory_message` turns into
one line naming the node and the limit.

The limit is ``AUDIOTOK_MAX_MEMORY_MB`` when set, else 1 GiB plus four times the bundle's size
(weights are allocated from the same arena; HuBERT-base in 30 s windows peaks near 0.75 GiB). It is
fixed for the process by the first bundle opened: onnxruntime keeps one shared arena.
"""

from __future__ import annotations

import os
import re
import threading

import onnxruntime as ort

from .errors import SettingsError

MEMORY_ENV = "AUDIOTOK_MAX_MEMORY_MB"
BASE_MB = 1024  # what any unit graph's activations may take on top of its weights
WEIGHT_FACTOR = 4  # weights, their optimised copies and prepacked forms
MAX_MB = 1 << 24  # 16 TiB: a larger value is a typo
MIB = 1 << 20
_ARENA_FAILURE = re.compile(r"running (\w+) node\. Name:'([^']*)'.*?Available memory of (\d+) is smaller than "
                            r"requested bytes of (\d+)", re.S)

_lock = threading.Lock()
_registered_mb: int | None = None


def limit_mb(bundle_bytes: int) -> int:
    """The limit for a bundle of ``bundle_bytes``: the environment's, else the default rule."""
    text = os.environ.get(MEMORY_ENV)
    if text is None or not text.strip():
        return BASE_MB + WEIGHT_FACTOR * -(-bundle_bytes // MIB)
    if not (text.strip().isascii() and text.strip().isdigit()) or not 1 <= int(text) <= MAX_MB:
        raise SettingsError(f"{MEMORY_ENV} must be a whole number of MiB in 1..{MAX_MB}, got {text[:40]!r}")
    return int(text)


def apply_memory_limit(options: ort.SessionOptions, bundle_bytes: int) -> int:
    """Make ``options`` allocate from the process's bounded arena (registered on first use); its limit in MiB."""
    global _registered_mb
    with _lock:
        if _registered_mb is None:
            wanted = limit_mb(bundle_bytes)
            arena = ort.OrtArenaCfg(wanted * MIB, -1, -1, -1)
            cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(cpu, arena)
            _registered_mb = wanted
    options.add_session_config_entry("session.use_env_allocators", "1")
    return _registered_mb


def memory_message(text: str) -> str | None:
    """The one line for an onnxruntime error that is the arena refusing an allocation, else None."""
    found = _ARENA_FAILURE.search(text)
    if found is None:
        return None
    op_type, name, _available, requested = found.groups()
    node = f"{op_type} node {name!r}" if name else f"an unnamed {op_type} node"
    return (f"{node} asked for {int(requested) / MIB:,.0f} MiB at run time, beyond the memory limit of "
            f"{_registered_mb:,} MiB for this process (set {MEMORY_ENV} to raise it for a bundle you trust)")
