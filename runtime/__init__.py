"""The torch-free runtime: onnxruntime, numpy, soxr and soundfile only.

``__all__`` is the public API (docs/python.md): ``Tokenizer`` (``tokenize`` for files and arrays,
``stream`` for live audio), what a stream yields and reports, the bundle's ``Manifest``, ``dedup``
and the errors users catch. Modules deeper in the package are the command line's machinery.
Nothing in this package may import torch, transformers or scikit-learn, directly or indirectly; a
test enforces it.
"""

from .errors import AudioError, AudiotokError, BundleError, SettingsError
from .bundle.manifest import Manifest
from .stream import Stream, StreamSettings, StreamState, UnitChunk
from .tokenizer import Tokenizer
from .unit_runs import dedup

__all__ = ["AudioError", "AudiotokError", "BundleError", "Manifest", "SettingsError", "Stream", "StreamSettings",
           "StreamState", "Tokenizer", "UnitChunk", "dedup"]
