"""The tokenizer: audio in, one unit id per 20 ms frame out, with onnxruntime only."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .audio import array_blocks, file_blocks
from .constants import RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE
from .errors import AudioError
from .session import INPUT_NAME, OUTPUT_NAME, open_session
from .stream import DEFAULT_CHUNK_MS, DEFAULT_CONTEXT_MS, DEFAULT_LOOKAHEAD_MS, Stream, StreamSettings
from .windowing import WindowPolicy, Windower

# Inputs up to 30 s run in one pass, exactly as the encoder sees a whole utterance. Longer ones run
# in 30 s windows that emit their middle 24 s and see 3 s of context on each side: enough for the
# transformer's effective context, at 1.25x the compute of one pass, in flat memory.
OFFLINE_POLICY = WindowPolicy(chunk_frames=1200, context_frames=150, lookahead_frames=150,
                              one_pass_samples=30 * 16_000)

AudioInput = str | os.PathLike | np.ndarray


class Tokenizer:
    """A loaded bundle. ``Tokenizer("bundle.onnx").tokenize("speech.flac")`` gives int64 unit ids.

    Inputs of different lengths are never padded into one batch: these encoders take no attention
    mask and some normalise over the whole input, so padding would change the units.
    """

    def __init__(self, bundle: str | os.PathLike, *, providers: list[str] | str | None = None,
                 threads: int | None = None, policy: WindowPolicy = OFFLINE_POLICY) -> None:
        self.path = Path(bundle)
        self.session, self.manifest = open_session(bundle, providers=providers, threads=threads)
        self.policy = policy

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def units_for_window(self, samples: np.ndarray) -> np.ndarray:
        """Run the graph once on 16 kHz mono samples; one unit per frame, none under 400 samples."""
        if len(samples) < RECEPTIVE_FIELD_SAMPLES:
            return np.zeros(0, np.int64)
        batch = np.ascontiguousarray(samples, dtype=np.float32)[None, :]
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0][0]

    def stream(self, *, chunk_ms: float = DEFAULT_CHUNK_MS, lookahead_ms: float = DEFAULT_LOOKAHEAD_MS,
               context_ms: float = DEFAULT_CONTEXT_MS, sample_rate: int = SAMPLE_RATE) -> Stream:
        """A :class:`~audiotok.runtime.stream.Stream` over this bundle for live audio at ``sample_rate``.

        Lengths are milliseconds on the 20 ms frame grid; bad values raise SettingsError here,
        before any audio is read.
        """
        return Stream(self.units_for_window, StreamSettings(chunk_ms, lookahead_ms, context_ms, sample_rate))

    def tokenize(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Units of a file path, or of samples (float or int PCM, ``(n,)`` or ``(n, channels)``).

        Arrays need their ``sample_rate``; files carry their own. Audio is mixed to mono and
        resampled to 16 kHz with soxr. Audio shorter than 400 samples gives zero units.
        """
        if isinstance(audio, (str, os.PathLike)):
            if sample_rate is not None:
                raise TypeError("sample_rate is read from the file; pass it only with an array")
            blocks, source = file_blocks(audio), str(audio)
        else:
            if sample_rate is None:
                raise TypeError("tokenize(samples) needs sample_rate=...")
            blocks, source = array_blocks(audio, sample_rate), "samples"
        return self.tokenize_blocks(blocks, source=source)

    def tokenize_blocks(self, blocks: Iterable[np.ndarray], *, source: str = "audio") -> np.ndarray:
        """Units of a stream of 16 kHz mono float32 blocks (what :mod:`audio` yields)."""
        windower = Windower(self.policy, self.units_for_window)
        pieces: list[np.ndarray] = []
        received = 0
        for block in blocks:
            received += len(block)
            pieces.extend(units for _, units in windower.push(block))
        if received == 0:
            raise AudioError(f"{source}: empty audio (no samples)")
        pieces.extend(units for _, units in windower.finish())
        return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
