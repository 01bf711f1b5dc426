"""A fairseq/GSLM-style km.bin exported into a bundle gives exactly km.predict's units, and can be got back."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

from audiotok.models import load_encoder
from audiotok.runtime.audio.decode import file_blocks
from audiotok.runtime.tokenizer import Tokenizer
from audiotok.models.features import FeatureExtractor
from conftest import run_cli

LAYER = 2


@pytest.fixture(scope="module")
def kmbin_bundle(tiny_hubert, speech_dir, tmp_path_factory):
    """km.bin fitted on the tiny HuBERT's layer-2 features (as GSLM does for layer 6), then exported."""
    folder = tmp_path_factory.mktemp("kmbin")
    files = sorted(speech_dir.glob("*.wav"))
    extractor = FeatureExtractor(load_encoder(str(tiny_hubert), LAYER))
    features = {f: extractor.features(file_blocks(f)) for f in files}
    km = MiniBatchKMeans(n_clusters=20, n_init=3, batch_size=512, random_state=0)
    km.fit(np.concatenate(list(features.values())))
    joblib.dump(km, folder / "km.bin")
    bundle = folder / "hubert20.onnx"
    result = run_cli("export", "--model", tiny_hubert, "--layer", LAYER, "--centroids", folder / "km.bin",
                     "-o", bundle, "--audio", *files)
    assert result.returncode == 0, result.stderr.decode()
    return bundle, km, features


def test_units_equal_km_predict_on_the_same_layer(kmbin_bundle):
    bundle, km, features = kmbin_bundle
    tokenizer = Tokenizer(bundle)
    for path, feats in features.items():
        np.testing.assert_array_equal(tokenizer.tokenize(path), km.predict(feats), err_msg=str(path))


def test_manifest_records_where_the_vocabulary_came_from(kmbin_bundle):
    bundle, km, _ = kmbin_bundle
    manifest = Tokenizer(bundle).manifest
    assert (manifest.layer, manifest.k) == (LAYER, 20)
    origin = manifest.provenance["centroids"]
    assert origin["source"] == "km.bin"
    assert origin["format"] == "sklearn"
    assert origin["container"] == "joblib"
    assert origin["estimator"] == "sklearn.cluster._kmeans.MiniBatchKMeans"
    assert origin["sklearn_version"] == __import__("sklearn").__version__
    import hashlib

    assert origin["file_sha256"] == hashlib.sha256((bundle.parent / "km.bin").read_bytes()).hexdigest()
    assert manifest.provenance["training"] is None


def test_info_extracts_the_centroids_bit_for_bit(kmbin_bundle, tmp_path):
    bundle, km, _ = kmbin_bundle
    out = tmp_path / "back.npy"
    result = run_cli("info", bundle, "--centroids", out)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["k"] == 20
    back = np.load(out)
    assert back.dtype == np.float32 and back.shape == km.cluster_centers_.shape
    np.testing.assert_array_equal(back, km.cluster_centers_.astype(np.float32))
