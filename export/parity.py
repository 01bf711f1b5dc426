"""Export-time fidelity: do the bundle's units equal the torch path's on real frames?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audiotok.runtime.tokenizer import Tokenizer

from .graph import UnitGraph


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


def measure_agreement(graph: UnitGraph, tokenizer: Tokenizer, clips: list[np.ndarray], audio: str) -> Agreement:
    """Compare units clip by clip (each clip one pass, as the runtime runs inputs up to 30 s)."""
    frames = matching = 0
    for clip in clips:
        expected = torch_units(graph, clip)
        got = tokenizer.units_for_window(clip)
        if got.shape != expected.shape:
            raise RuntimeError(f"bundle gave {got.shape} units where torch gave {expected.shape}")
        frames += len(expected)
        matching += int((got == expected).sum())
    return Agreement(frames, matching, audio)
