"""The torch-free runtime: onnxruntime, numpy, soxr and soundfile only.

``from audiotok.runtime import Tokenizer`` is the whole API: ``tokenize`` for files and arrays,
``stream`` for live audio. Nothing in this package may import torch, transformers or scikit-learn,
directly or indirectly; a test enforces it.
"""

from .errors import AudioError, AudiotokError, BundleError, SettingsError
from .manifest import Manifest
from .stream import Stream, StreamSettings, StreamState, UnitChunk
from .tokenizer import Tokenizer
from .unit_runs import dedup

__all__ = ["AudioError", "AudiotokError", "BundleError", "Manifest", "SettingsError", "Stream", "StreamSettings",
           "StreamState", "Tokenizer", "UnitChunk", "dedup"]
