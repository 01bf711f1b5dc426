"""audiotok: speech in, discrete units out.

The package is split by dependency weight: ``audiotok.runtime`` needs only onnxruntime, numpy,
soxr and soundfile; ``audiotok.models``, ``audiotok.train`` and ``audiotok.export`` need the
``[train]`` extra (torch, transformers, scikit-learn, onnx).
"""

__version__ = "0.1.0"
