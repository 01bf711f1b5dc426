"""`audiotok info --centroids` gives back exactly the vocabulary a bundle was exported with."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from audiotok.runtime.bundle.centroids import CENTROID_INITIALIZER
from conftest import run_cli


def test_extracted_centroids_equal_the_trained_ones(logmel_units, logmel_bundle, tmp_path):
    out = tmp_path / "centroids.npy"
    result = run_cli("info", logmel_bundle, "--centroids", out)
    assert result.returncode == 0, result.stderr.decode()
    np.testing.assert_array_equal(np.load(out), np.load(logmel_units))


def test_a_bundle_changed_after_export_is_refused(logmel_bundle, tmp_path):
    model = onnx.load(str(logmel_bundle))
    tampered_names = []
    for init in model.graph.initializer:
        if init.name.endswith(CENTROID_INITIALIZER):
            changed = numpy_helper.to_array(init).copy()
            changed[0, 0] += 1.0
            init.CopyFrom(numpy_helper.from_array(changed, init.name))
            tampered_names.append(init.name)
    assert len(tampered_names) == 1, tampered_names  # the exporter's -2 C^T, found and changed
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    out = tmp_path / "centroids.npy"
    result = run_cli("info", tampered, "--centroids", out)
    err = result.stderr.decode()
    assert result.returncode == 1 and err.startswith("audiotok: error: ") and "centroids_sha256" in err, err
    assert "Traceback" not in err and not out.exists()
