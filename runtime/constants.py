"""The frame grid every audiotok encoder shares.

All encoders (the HuBERT/wav2vec2 CNN and the built-in log-mel) see 16 kHz audio and produce one
frame per 320 samples, each frame covering 400 samples. A bundle whose manifest disagrees with
these values is refused rather than silently mis-timed.
"""

SAMPLE_RATE = 16_000  # Hz
HOP_SAMPLES = 320  # samples between frame starts: 20 ms at 16 kHz
RECEPTIVE_FIELD_SAMPLES = 400  # samples one frame sees: 25 ms at 16 kHz
FRAME_SECONDS = HOP_SAMPLES / SAMPLE_RATE  # 0.02 s
FRAME_MS = HOP_SAMPLES * 1000 // SAMPLE_RATE  # 20 ms, the grid stream lengths are given on

MANIFEST_KEY = "audiotok"  # ONNX metadata_props key holding the JSON manifest
MANIFEST_SCHEMA = 1


def frame_count(n_samples: int) -> int:
    """Frames the encoders give for ``n_samples``: ``floor((n - 400) / 320) + 1``, or 0 below 400."""
    if n_samples < RECEPTIVE_FIELD_SAMPLES:
        return 0
    return (n_samples - RECEPTIVE_FIELD_SAMPLES) // HOP_SAMPLES + 1


def samples_for_frames(n_frames: int) -> int:
    """Samples needed to compute ``n_frames`` frames (the inverse of :func:`frame_count`)."""
    if n_frames <= 0:
        return 0
    return (n_frames - 1) * HOP_SAMPLES + RECEPTIVE_FIELD_SAMPLES
