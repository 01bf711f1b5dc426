"""Fidelity: do a bundle's units equal the torch path's on real frames?

The reference is always the unmodified torch encoder in float32 (what training used), computed
once; every candidate graph (fp32, fp16, each int8 trial) is compared against the same units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from audiotok.runtime.session import INPUT_NAME, OUTPUT_NAME, resolve_providers, session_options

from .graph import UnitGraph

UnitsFn = Callable[[np.ndarray], np.ndarray]  # 16 kHz clip -> units


@dataclass(frozen=True)
class Agreement:
    frames: int
    matching: int
    audio: str  # what the audio was, for the manifest

    @property
    def fraction(self) -> float:
        return self.matching / self.frames if self.frames else 1.0

    def as_dict(self, reference: str) -> dict[str, object]:
        return {"reference": reference, "frames": self.frames, "matching": self.matching,
                "agreement": round(self.fraction, 6), "audio": self.audio}


@torch.no_grad()
def torch_units(graph: UnitGraph, samples: np.ndarray) -> np.ndarray:
    return graph(torch.from_numpy(np.ascontiguousarray(samples, np.float32))[None])[0].numpy()


def reference_units(graph: UnitGraph, clips: list[np.ndarray]) -> list[np.ndarray]:
    """The torch float32 units of each clip, one pass per clip (as the runtime runs clips up to 30 s)."""
    return [torch_units(graph, clip) for clip in clips]


def measure_agreement(units_fn: UnitsFn, clips: list[np.ndarray], reference: list[np.ndarray],
                      audio: str) -> Agreement:
    """Frames where ``units_fn`` gives the reference unit, over all clips."""
    frames = matching = 0
    for clip, expected in zip(clips, reference):
        got = units_fn(clip)
        if got.shape != expected.shape:
            raise RuntimeError(f"bundle gave {got.shape} units where torch gave {expected.shape}")
        frames += len(expected)
        matching += int((got == expected).sum())
    return Agreement(frames, matching, audio)


def graph_units_fn(path: Path, providers: list[str] | str | None = None) -> UnitsFn:
    """Units from an ONNX graph that has no manifest yet (a candidate during export)."""
    session = ort.InferenceSession(str(path), session_options(), providers=resolve_providers(providers))
    return lambda clip: session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(clip, np.float32)[None]})[0][0]
