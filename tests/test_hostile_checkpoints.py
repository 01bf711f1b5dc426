"""A checkpoint folder is a stranger's file too: its config.json and preprocessor_config.json are read
before any weights, and every bad value ends in one line naming the folder, with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_wav
from hostile_bundles import assert_one_error_or_success, run_in_process

import numpy as np

HOP_160 = [5, 2, 2, 2, 2, 2, 1]


def _config(update: dict | None = None, raw: str | None = None):
    def mutate(folder: Path) -> None:
        path = folder / "config.json"
        if raw is not None:
            path.write_text(raw)
        else:
            path.write_text(json.dumps({**json.loads(path.read_text()), **update}))
    return mutate


def _preprocessor(update: dict):
    def mutate(folder: Path) -> None:
        path = folder / "preprocessor_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **update}))
    return mutate


def _no_weights(folder: Path) -> None:
    for weights in folder.glob("*.safetensors"):
        weights.unlink()


CASES = {
    "negative-size": (_config({"hidden_size": -5}), "its config.json cannot be used: hidden_size must be an integer"),
    "float-depth": (_config({"num_hidden_layers": 1e9}), "num_hidden_layers"),
    "string-stride": (_config({"conv_stride": [5, "2", 2, 2, 2, 2, 2]}), "conv_stride"),
    "null-kernel": (_config({"conv_kernel": None}), "conv_kernel"),
    "heads-not-dividing": (_config({"num_attention_heads": 7}), "weights could not be loaded"),
    "other-family": (_config({"model_type": "bert"}), "not a wav2vec2-style speech encoder"),
    "hop-160": (_config({"conv_stride": HOP_160}), "its CNN has hop 160"),
    "json-list": (_config(raw="[1, 2]"), "not a loadable transformers checkpoint"),
    "not-json": (_config(raw="not json {"), "not a loadable transformers checkpoint"),
    "deep-json": (_config(raw='{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"), "not a loadable transformers checkpoint"),
    "no-weights": (_no_weights, "weights could not be loaded"),
    "normalize-as-string": (_preprocessor({"do_normalize": "false"}), "do_normalize 'false', not true or false"),
    "other-rate": (_preprocessor({"sampling_rate": 8000}), "expects 8000 Hz audio"),
    "unknown-extractor": (_preprocessor({"feature_extractor_type": "Nope"}),
                          "its preprocessor_config.json cannot be used"),
}


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    return write_wav(tmp_path_factory.mktemp("audio") / "a.wav", (0.1 * rng.standard_normal(16_000)).astype(np.float32))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_checkpoint_is_one_line_naming_it(case, tiny_hubert, audio, tmp_path, capsys):
    mutate, needle = CASES[case]
    folder = shutil.copytree(tiny_hubert, tmp_path / "checkpoint")
    mutate(folder)
    out = tmp_path / "units.npy"
    code, _, err = run_in_process(capsys, "train", "--model", folder, "--layer", "1", "--k", "4", "-o", out, audio)
    line = assert_one_error_or_success(code, err)
    assert line is not None and line.startswith(f"audiotok: error: --model {folder}: ") and needle in line, line
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_weights_missing_from_the_checkpoint_are_named_once(tiny_hubert, audio, tmp_path):
    """A checkpoint that lacks some of its model's weights still loads in transformers (at random, with a
    table of keys on the terminal): audiotok says it in one warning line instead, and trains."""
    from safetensors.numpy import load_file, save_file

    from conftest import run_cli

    folder = shutil.copytree(tiny_hubert, tmp_path / "checkpoint")
    weights = next(folder.glob("*.safetensors"))
    tensors = load_file(weights)
    dropped = sorted(key for key in tensors if ".layers.0.attention.k_proj." in key)
    save_file({k: v for k, v in tensors.items() if k not in dropped}, weights, metadata={"format": "pt"})
    result = run_cli("train", "--model", folder, "--layer", "1", "--k", "4", "-o", tmp_path / "u.npy", audio)
    assert result.returncode == 0, result.stderr.decode()
    err = result.stderr.decode()
    warnings = [line for line in err.splitlines() if line.startswith("audiotok: warning: ")]
    assert len(warnings) == 1 and f"--model {folder}: 2 weight(s) are not in the checkpoint" in warnings[0], err
    assert "MISSING" not in err and "Traceback" not in err
