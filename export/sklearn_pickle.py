"""Reading ``cluster_centers_`` from a scikit-learn k-means pickle without unpickling the estimator.

fairseq/GSLM ship their unit vocabularies as ``km.bin``: ``joblib.dump`` of a fitted ``KMeans`` or
``MiniBatchKMeans``. Loading such a file the normal way needs the scikit-learn version that wrote
it (module paths and estimator internals change between releases: ``sklearn.cluster.k_means_``
became ``sklearn.cluster._kmeans``) and executes whatever the pickle names. Only the centroid
array is needed, so this module unpickles with every class replaced by an inert attribute holder,
except the few numpy functions that rebuild arrays. No code from the file runs, and a pickle from
any scikit-learn or joblib version yields its centroids.

joblib writes each numpy array's bytes straight after its ``NumpyArrayWrapper`` record, outside the
pickle stream; the wrapper stand-in below reads them from the same position, as joblib does.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .centroid_limits import COMPRESSED_MAGICS, CentroidsError, inflation_limit
from .inflate import InflatingReader

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 (non-zip) torch.save file
TORCH_LEGACY = object()  # returned when the pickle is a legacy torch file, to be read by torch instead

_numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
_ARRAY_REBUILDERS = {
    "_reconstruct": _numpy_core.multiarray._reconstruct,
    "scalar": _numpy_core.multiarray.scalar,
    "_frombuffer": _numpy_core.numeric._frombuffer,
}
# The only callables a pickle may reach: what numpy and Python use to rebuild arrays and bytes.
_ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _module in ("numpy.core", "numpy._core"):
    for _sub in ("multiarray", "numeric"):
        for _name, _fn in _ARRAY_REBUILDERS.items():
            _ALLOWED[(f"{_module}.{_sub}", _name)] = _fn
_ALLOWED[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles spell bytes this way
JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
JOBLIB_OLD_WRAPPERS = {"joblib.numpy_pickle.NDArrayWrapper", "joblib.numpy_pickle.ZNDArrayWrapper",
                       "joblib.numpy_pickle_compat.NDArrayWrapper", "joblib.numpy_pickle_compat.ZNDArrayWrapper"}


class PickledObject:
    """Stands in for any class a pickle names: accepts any arguments and keeps the state as attributes."""

    pickled_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state
            self.__dict__.update(slots or {})
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    # Containers (sets, OrderedDicts, ...) are rebuilt through these; their contents are not needed.
    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class _JoblibArray(PickledObject):
    """joblib's array record: its state says dtype, shape and order; the bytes follow in the file."""

    stream: io.BufferedIOBase
    max_bytes: int  # all the stream can yield: no array can claim more

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        self.__dict__["array"] = self._read()

    def _read(self) -> np.ndarray:
        dtype, shape, order = np.dtype(self.dtype), tuple(int(s) for s in self.shape), self.order
        if dtype.hasobject:  # written as a nested pickle; read it with the same restrictions
            return _RestrictedUnpickler(self.stream, self.max_bytes).load()
        if getattr(self, "numpy_array_alignment_bytes", None) is not None:  # joblib >= 1.2 pads to 16 bytes
            padding = self.stream.read(1)
            self.stream.read(int.from_bytes(padding, "little"))
        count = math.prod(shape)  # Python ints: a crafted shape cannot overflow into a small or negative count
        if min(shape, default=0) < 0 or count * dtype.itemsize > self.max_bytes:
            raise CentroidsError(f"a joblib array record claims shape {shape} of {dtype}, which is not plausible")
        data = self.stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CentroidsError("truncated joblib file: an array's data ends early")
        array = np.frombuffer(data, dtype=dtype, count=count)
        return array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)


class _RestrictedUnpickler(pickle._Unpickler):  # the Python implementation reads exactly what it needs
    """Unpickles with stand-ins for every class, reading at most ``max_bytes`` (what the stream can hold)."""

    def __init__(self, stream: Any, max_bytes: int) -> None:
        super().__init__(stream)
        self.stream = stream
        self.max_bytes = max_bytes
        self.classes: dict[tuple[str, str], type] = {}

    def load_bytearray8(self) -> None:
        """Protocol 5's BYTEARRAY8 allocates the length it claims before reading: check it first."""
        size, = struct.unpack("<Q", self.read(8))
        if size > self.max_bytes:
            raise CentroidsError(f"a pickled bytearray claims {size} bytes, more than the file can hold")
        data = self.read(size)
        if len(data) != size:
            raise CentroidsError("truncated pickle: a bytearray's data ends early")
        self.append(bytearray(data))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        key = (module, name)
        if key not in self.classes:
            base = _JoblibArray if key == JOBLIB_WRAPPER else PickledObject
            attrs: dict[str, Any] = {"pickled_class": f"{module}.{name}"}
            if base is _JoblibArray:
                attrs["stream"], attrs["max_bytes"] = self.stream, self.max_bytes
            self.classes[key] = type(name, (base,), attrs)
        return self.classes[key]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not supported")


def _unwrap(value: Any) -> Any:
    return value.__dict__["array"] if isinstance(value, _JoblibArray) else value


def _open_stream(path: Path) -> tuple[io.BytesIO | InflatingReader, str | None, int]:
    """A file to unpickle from, the codec it was compressed with, and the most bytes it can yield."""
    raw = path.read_bytes()
    codec = next((name for magic, name in COMPRESSED_MAGICS.items() if raw.startswith(magic)), None)
    if codec is None:
        return io.BytesIO(raw), None, len(raw)
    limit = inflation_limit(len(raw))
    return InflatingReader(raw, codec, limit), codec, limit


def read_kmeans_pickle(path: Path) -> tuple[np.ndarray, dict[str, Any]] | object:
    """``(cluster_centers_, details)`` of a k-means pickle, or ``TORCH_LEGACY`` for an old torch file."""
    try:
        stream, codec, max_bytes = _open_stream(path)
        unpickler = _RestrictedUnpickler(stream, max_bytes)
        obj = unpickler.load()
    except CentroidsError as exc:
        raise CentroidsError(f"--centroids {path}: {exc}") from None
    except Exception as exc:  # malformed streams raise many types; none may escape as a traceback
        raise CentroidsError(f"--centroids {path}: not a readable pickle ({type(exc).__name__}: "
                             f"{str(exc)[:120]})") from None
    if isinstance(obj, int) and obj == TORCH_LEGACY_MAGIC:
        return TORCH_LEGACY
    container = "joblib" if JOBLIB_WRAPPER in unpickler.classes else "pickle"
    details: dict[str, Any] = {"container": container + (f"+{codec}" if codec else "")}
    obj = _unwrap(obj)
    if isinstance(obj, np.ndarray):
        return obj, details
    centers = _unwrap(getattr(obj, "cluster_centers_", None)) if isinstance(obj, PickledObject) else None
    if isinstance(centers, PickledObject) and centers.pickled_class in JOBLIB_OLD_WRAPPERS:
        raise CentroidsError(f"--centroids {path}: written by joblib < 0.10, which kept arrays in separate files; "
                             f"load it with that joblib and save cluster_centers_ with numpy.save")
    if not isinstance(centers, np.ndarray):
        held = obj.pickled_class if isinstance(obj, PickledObject) else type(obj).__name__
        raise CentroidsError(f"--centroids {path}: the pickle holds {held}, which has no cluster_centers_ "
                             f"(expected a fitted scikit-learn KMeans or MiniBatchKMeans)")
    details["estimator"] = obj.pickled_class
    version = obj.__dict__.get("_sklearn_version")
    if isinstance(version, str):
        details["sklearn_version"] = version
    return centers, details
