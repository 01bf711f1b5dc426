"""Every bad input: one clear error line on stderr, a non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from conftest import error_line, run_cli, write_wav



assert_clean_failure = error_line  # progress notes may precede the error


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, logmel_bundle):
    d = tmp_path_factory.mktemp("bad")
    (d / "text.wav").write_text("this is not audio\n")
    write_wav(d / "empty.wav", np.zeros(0, np.float32))
    nan = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    nan[8_000] = np.nan
    write_wav(d / "nan.wav", nan)
    inf = nan.copy()
    inf[8_000] = np.inf
    write_wav(d / "inf.wav", inf)
    write_wav(d / "ok.wav", np.random.default_rng(1).standard_normal(16_000).astype(np.float32) * 0.1)
    (d / "truncated.onnx").write_bytes(logmel_bundle.read_bytes()[:4096])
    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", 1, [1])], [oh.make_tensor_value_info("y", 1, [1])])
    onnx.save(oh.make_model(graph), d / "plain.onnx")
    return d


@pytest.mark.parametrize("name,needle", [
    ("missing.wav", "no such file"),
    ("text.wav", "not a readable audio file"),
    ("empty.wav", "empty audio"),
    ("nan.wav", "NaN or Inf"),
    ("inf.wav", "NaN or Inf"),
])
def test_bad_audio(bad_files, logmel_bundle, name, needle, tmp_path):
    out = tmp_path / "out.txt"
    result = run_cli("tokenize", logmel_bundle, bad_files / "ok.wav", bad_files / name, "-o", out)
    assert_clean_failure(result, needle, name)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind either


def test_failed_run_keeps_previous_output(bad_files, logmel_bundle, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("previous results\n")
    assert_clean_failure(run_cli("tokenize", logmel_bundle, bad_files / "text.wav", "-o", out))
    assert out.read_text() == "previous results\n"


@pytest.mark.parametrize("bundle,needle", [
    ("ok.wav", "not a valid ONNX model"),
    ("plain.onnx", "not an audiotok bundle"),
    ("truncated.onnx", "truncated"),
    ("missing.onnx", "no such file"),
])
def test_bad_bundles(bad_files, bundle, needle):
    for cmd in ("tokenize", "info"):
        args = [cmd, bad_files / bundle] + ([bad_files / "ok.wav"] if cmd == "tokenize" else [])
        assert_clean_failure(run_cli(*args), needle)


def test_layer_beyond_depth(tiny_hubert, speech_dir, tmp_path):
    out = tmp_path / "c.npy"
    assert_clean_failure(run_cli("train", "--model", tiny_hubert, "--layer", "4", "--k", "4", "-o", out, speech_dir),
                         "--layer 4", "0..3")
    assert not out.exists()


def test_centroids_of_the_wrong_dimension(tiny_hubert, tmp_path):
    np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((8, 80)).astype(np.float32))
    out = tmp_path / "b.onnx"
    assert_clean_failure(run_cli("export", "--model", tiny_hubert, "--layer", "2", "--centroids", tmp_path / "c.npy",
                                 "-o", out), "dimension 80", "32")
    assert not out.exists()


def test_centroids_from_another_layer_are_refused(tiny_hubert, speech_dir, tmp_path):
    c = tmp_path / "c.npy"
    trained = run_cli("train", "--model", tiny_hubert, "--layer", "1", "--k", "4", "--n-init", "1", "-o", c, speech_dir)
    assert trained.returncode == 0, trained.stderr.decode()
    assert_clean_failure(run_cli("export", "--model", tiny_hubert, "--layer", "3", "--centroids", c,
                                 "-o", tmp_path / "b.onnx"), "layer 1", "--layer 1")
    assert not (tmp_path / "b.onnx").exists()


def test_model_not_available_offline(speech_dir, tmp_path):
    result = run_cli("train", "--model", "example-org/no-such-speech-model", "--k", "4", "-o", tmp_path / "c.npy",
                     speech_dir, env={"HF_HUB_OFFLINE": "1"})
    assert_clean_failure(result, "example-org/no-such-speech-model", "local folder")


def test_bad_settings(speech_dir, tmp_path):
    assert_clean_failure(run_cli("train", "--k", "1", "-o", tmp_path / "c.npy", speech_dir), "--k")
    assert_clean_failure(run_cli("train", "--k", "4", "-o", tmp_path / "c.txt", speech_dir), ".npy")
    assert_clean_failure(run_cli("train", "--k", "4", "-o", tmp_path / "c.npy", tmp_path / "nothing"), "no such file")
    assert_clean_failure(run_cli("train", "--k", "100000", "-o", tmp_path / "c.npy", speech_dir), "at least k frames")
    assert not list(tmp_path.glob("c.*"))


@pytest.mark.parametrize("value, needle", [("0", "at least 0.025 s"), ("-5", "at least 0.025 s"),
                                           ("abc", "a number of seconds"), ("0.02", "400-sample"),
                                           ("nan", "a number of seconds"), ("", "a number of seconds")])
def test_bad_max_pass_seconds_fails_before_any_audio_is_read(bad_files, logmel_bundle, tmp_path, value, needle):
    """The unreadable text.wav would be the error if any audio were read first."""
    out = tmp_path / "out.txt"
    result = run_cli("tokenize", logmel_bundle, bad_files / "text.wav", "--max-pass-seconds", value, "-o", out)
    assert_clean_failure(result, "--max-pass-seconds", needle)
    assert result.returncode == 1 and not out.exists()
