"""Importing existing vocabularies: every accepted format gives the same [k, dim] array, detected by content."""

from __future__ import annotations

import pickle
import sys
import types

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from audiotok.export.centroids import CentroidsError, load_centroids
from conftest import run_cli


@pytest.fixture(scope="module")
def fitted() -> MiniBatchKMeans:
    features = np.random.default_rng(0).standard_normal((600, 24)).astype(np.float32)
    return MiniBatchKMeans(n_clusters=10, n_init=3, batch_size=256, random_state=0).fit(features)


def test_npy_detected_by_content_under_any_name(tmp_path, fitted):
    path = tmp_path / "vocabulary.bin"
    with open(path, "wb") as f:
        np.save(f, fitted.cluster_centers_)
    c = load_centroids(path)
    assert c.format == "npy" and c.k == 10 and c.dim == 24
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)


def test_joblib_kmbin_from_minibatchkmeans(tmp_path, fitted):
    path = tmp_path / "km.bin"
    joblib.dump(fitted, path)  # exactly what fairseq's GSLM learn_kmeans.py writes
    c = load_centroids(path)
    assert c.format == "sklearn"
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)
    assert c.details["estimator"] == "sklearn.cluster._kmeans.MiniBatchKMeans"
    assert c.details["sklearn_version"] == __import__("sklearn").__version__
    assert c.details["container"] == "joblib"
    assert len(c.file_sha256) == 64


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "xz", "lzma", "lz4"])
def test_compressed_joblib(tmp_path, fitted, compress):
    path = tmp_path / "km.bin"
    joblib.dump(fitted, path, compress=(compress, 3))
    c = load_centroids(path)
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)
    assert c.details["container"] == f"joblib+{compress}"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle(tmp_path, fitted, protocol):
    path = tmp_path / "km.pkl"
    path.write_bytes(pickle.dumps(fitted, protocol=protocol))
    np.testing.assert_array_equal(load_centroids(path).array, fitted.cluster_centers_)


def test_pickle_from_an_old_sklearn_module_path_that_no_longer_exists(tmp_path, fitted):
    """scikit-learn <= 0.21 pickled k-means as sklearn.cluster.k_means_.*: unloadable today, readable here."""
    module = types.ModuleType("sklearn.cluster.k_means_")

    class MiniBatchKMeans:
        """The old estimator, as far as its pickle is concerned."""

    MiniBatchKMeans.__module__, MiniBatchKMeans.__qualname__ = module.__name__, "MiniBatchKMeans"
    module.MiniBatchKMeans = MiniBatchKMeans
    old = MiniBatchKMeans()
    old.__dict__.update(n_clusters=10, cluster_centers_=fitted.cluster_centers_.astype(np.float64),
                        _sklearn_version="0.21.3", counts_=np.ones(10))
    sys.modules[module.__name__] = module
    try:
        joblib.dump(old, tmp_path / "km.bin")
    finally:
        del sys.modules[module.__name__]
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        joblib.load(tmp_path / "km.bin")  # the usual way fails
    c = load_centroids(tmp_path / "km.bin")
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_.astype(np.float64).astype(np.float32))
    assert c.details["estimator"] == "sklearn.cluster.k_means_.MiniBatchKMeans"
    assert c.details["sklearn_version"] == "0.21.3"


class _Unconstructible:
    """Pickles as sklearn's MiniBatchKMeans called with arguments it refuses (like a changed signature)."""

    def __init__(self, centers):
        self.centers = centers

    def __reduce__(self):
        return MiniBatchKMeans, (8, "no", "such", "arguments"), {"cluster_centers_": self.centers}


def test_pickle_whose_estimator_cannot_be_instantiated(tmp_path, fitted):
    path = tmp_path / "km.bin"
    joblib.dump(_Unconstructible(fitted.cluster_centers_), path)
    with pytest.raises(TypeError):
        joblib.load(path)
    c = load_centroids(path)
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)
    assert c.details["estimator"] == "sklearn.cluster._kmeans.MiniBatchKMeans"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_no_code_from_the_pickle_runs(tmp_path, fitted):
    marker = tmp_path / "marker"
    fitted_copy = pickle.loads(pickle.dumps(fitted))
    fitted_copy.hook = _Payload(marker)  # unpickling normally would call exec(...)
    path = tmp_path / "km.bin"
    joblib.dump(fitted_copy, path)
    c = load_centroids(path)
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)
    assert not marker.exists()


def test_object_arrays_in_the_estimator_are_read_past(tmp_path, fitted):
    with_names = pickle.loads(pickle.dumps(fitted))
    with_names.feature_names_in_ = np.array([f"f{i}" for i in range(24)], dtype=object)
    joblib.dump(with_names, tmp_path / "km.bin")
    np.testing.assert_array_equal(load_centroids(tmp_path / "km.bin").array, fitted.cluster_centers_)


def test_pickle_without_centroids_is_refused(tmp_path):
    joblib.dump({"not": "a k-means"}, tmp_path / "x.bin")
    with pytest.raises(CentroidsError, match="no cluster_centers_"):
        load_centroids(tmp_path / "x.bin")


def test_torch_tensor_state_dict_and_legacy_files(tmp_path, fitted):
    centers = torch.from_numpy(fitted.cluster_centers_)
    torch.save(centers, tmp_path / "t.pt")
    torch.save({"model": {"kmeans.centroids": centers, "step": torch.tensor(7)}, "bias": torch.zeros(24)},
               tmp_path / "sd.pt")
    torch.save(centers, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("t.pt", "sd.pt", "legacy.pt"):
        c = load_centroids(tmp_path / name)
        assert c.format == "torch", name
        np.testing.assert_array_equal(c.array, fitted.cluster_centers_)
    assert load_centroids(tmp_path / "sd.pt").details["tensor"] == "model.kmeans.centroids"


def test_torch_state_dict_with_two_matrices_is_refused(tmp_path):
    torch.save({"a": torch.zeros(4, 3), "b": torch.ones(5, 3)}, tmp_path / "two.pt")
    with pytest.raises(CentroidsError, match=r"exactly one k x dim float tensor, found 2 \(a \(4, 3\), b \(5, 3\)\)"):
        load_centroids(tmp_path / "two.pt")


def test_unknown_content_names_the_accepted_formats(tmp_path):
    path = tmp_path / "centroids.npy"
    path.write_text("0.1 0.2\n0.3 0.4\n")  # text, whatever the name says
    result = run_cli("export", "--model", "logmel", "--centroids", path, "-o", tmp_path / "x.onnx")
    err = result.stderr.decode()
    assert result.returncode == 1
    assert err.startswith("audiotok: error: ") and err.count("\n") == 1, err
    for name in (".npy", "torch .pt", "km.bin", "faiss"):
        assert name in err
    assert not (tmp_path / "x.onnx").exists()


def test_not_a_matrix_is_refused(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(5, np.float32))
    with pytest.raises(CentroidsError, match=r"shaped \(k, dim\)"):
        load_centroids(tmp_path / "v.npy")


# faiss: an optional dependency of export (the [faiss] extra), part of the [test] extra.

@pytest.fixture(scope="module")
def faiss():
    import faiss

    return faiss


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64)[:, None, :] - c.astype(np.float64)[None]) ** 2).sum(-1).argmin(1)


def test_faiss_flat_index(tmp_path, faiss, fitted):
    index = faiss.IndexFlatL2(24)
    index.add(fitted.cluster_centers_)
    faiss.write_index(index, str(tmp_path / "km.index"))
    c = load_centroids(tmp_path / "km.index")
    assert c.format == "faiss" and c.details["index"] == "IndexFlatL2"
    np.testing.assert_array_equal(c.array, fitted.cluster_centers_)


def test_faiss_ivf_index_units_equal_its_coarse_assignment(tmp_path, faiss):
    x = np.random.default_rng(1).standard_normal((2000, 24)).astype(np.float32)
    quantizer = faiss.IndexFlatL2(24)
    index = faiss.IndexIVFFlat(quantizer, 24, 16)
    index.train(x)
    faiss.write_index(index, str(tmp_path / "ivf.index"))
    c = load_centroids(tmp_path / "ivf.index")
    assert c.k == 16 and c.details["index"] == "IndexIVFFlat"
    _, lists = quantizer.search(x, 1)
    np.testing.assert_array_equal(_nearest(x, c.array), lists[:, 0])


@pytest.mark.parametrize("transform", ["rotation", "pca"])
def test_faiss_ivf_behind_a_projection_maps_centroids_back(tmp_path, faiss, transform):
    """Like mHuBERT-147's index: a linear projection, then IVF; units must equal faiss' coarse lists."""
    x = np.random.default_rng(2).standard_normal((3000, 24)).astype(np.float32)
    if transform == "rotation":
        vt = faiss.RandomRotationMatrix(24, 8)
        vt.init(0)
    else:
        vt = faiss.PCAMatrix(24, 8)
    quantizer = faiss.IndexFlatL2(8)
    ivf = faiss.IndexIVFFlat(quantizer, 8, 16)
    index = faiss.IndexPreTransform(vt, ivf)
    index.train(x)
    faiss.write_index(index, str(tmp_path / "pt.index"))
    c = load_centroids(tmp_path / "pt.index")
    assert c.dim == 24 and c.k == 16
    _, lists = quantizer.search(vt.apply(x), 1)
    np.testing.assert_array_equal(_nearest(x, c.array), lists[:, 0])


def test_faiss_whitening_and_inner_product_are_refused(tmp_path, faiss):
    x = np.random.default_rng(3).standard_normal((1000, 24)).astype(np.float32)
    pca = faiss.PCAMatrix(24, 8, -0.5)  # whitening: not a rotation
    quantizer = faiss.IndexFlatL2(8)
    index = faiss.IndexPreTransform(pca, faiss.IndexIVFFlat(quantizer, 8, 8))
    index.train(x)
    faiss.write_index(index, str(tmp_path / "w.index"))
    with pytest.raises(CentroidsError, match="not a rotation/projection"):
        load_centroids(tmp_path / "w.index")
    ip = faiss.IndexFlatIP(24)
    ip.add(x[:8])
    faiss.write_index(ip, str(tmp_path / "ip.index"))
    with pytest.raises(CentroidsError, match="inner product, not L2"):
        load_centroids(tmp_path / "ip.index")
