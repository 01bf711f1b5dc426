"""Shared fixtures: tiny transformers checkpoints built on the spot, generated speech, bundles.

Nothing is downloaded: checkpoints are random-weight ``HubertConfig``/``Wav2Vec2Config`` models saved
with ``save_pretrained``, and speech comes from espeak-ng (installed by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shared_cache import once, shared_folder
from torch_zygote import TORCH_COMMANDS, Zygote

REPO = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A speech tokenizer turns sound into a sequence of discrete units, one every twenty milliseconds.",
    "Peter Piper picked a peck of pickled peppers, how many pickled peppers did Peter Piper pick?",
]


_ZYGOTE = Zygote()


def run_cli(*args: str, env: dict | None = None, input: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m audiotok ARGS`` and capture its output as text (stdout) and text (stderr).

    train, export and verify fork from a process with torch already imported (tests/torch_zygote.py),
    unless the test changes the environment (which may change what an import does) or asks for Ray.
    """
    argv = list(map(str, args))
    if argv and argv[0] in TORCH_COMMANDS and env is None and "--engine" not in argv:
        return _ZYGOTE.run(argv, input=input, cwd=cwd, timeout=600)
    return subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], capture_output=True,
                          env={**os.environ, **(env or {})}, input=input, cwd=cwd, timeout=600)


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a command a test interrupts: Ctrl-C gets its default disposition, as in a
    terminal. A child inherits an ignored SIGINT (a pytest-xdist worker, a job started with ``&`` in a
    script), and Python then leaves it ignored, so the signal would never reach audiotok at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


ERROR_PREFIX = "audiotok: error: "


def error_line(result: subprocess.CompletedProcess, *needles: str, alone: bool = False) -> str:
    """The one ``audiotok: error:`` line of a failed run, holding each of ``needles``.

    No traceback, a non-zero exit, exactly one error line and nothing after it; ``alone``: nothing
    before it either (no progress notes, no library noise).
    """
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert not alone or len(lines) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def espeak(text: str, path: Path, voice: str = "en") -> Path:
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for the speech fixtures (apt-get install espeak-ng; .ci/run installs it)"
    subprocess.run([exe, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


VOICES = ["en", "en-us", "en-gb", "en"]


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """Four espeak-ng utterances (22.05 kHz wav), about 3-6 s each; one folder for the run (shared_cache.py)."""

    def build(folder: Path) -> None:
        for i, text in enumerate(SENTENCES):
            espeak(text, folder / f"utt{i}.wav", voice=VOICES[i])

    return shared_folder(tmp_path_factory, "speech", [SENTENCES, VOICES], build)


@pytest.fixture(scope="session")
def aligned_dir(tmp_path_factory) -> Path:
    """SENTENCES spoken through libespeak-ng with exact phone alignments: uttN.wav + uttN.TextGrid (tier phones)."""
    from aligned_speech import write_aligned

    folder = tmp_path_factory.mktemp("aligned")
    for i, text in enumerate(SENTENCES):
        write_aligned(text, folder / f"utt{i}.wav", folder / f"utt{i}.TextGrid", voice=["en", "en-us", "en-gb-x-rp", "en"][i])
    return folder


@pytest.fixture(scope="session")
def speech_16k(speech_dir) -> np.ndarray:
    """All the generated speech, concatenated, resampled to 16 kHz float32."""
    from audiotok.runtime.audio.decode import file_blocks

    return np.concatenate([b for p in sorted(speech_dir.glob("*.wav")) for b in file_blocks(p)])


def save_tiny_checkpoint(folder: Path, kind: str, seed: int = 0) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    if kind == "hubert":  # HuBERT-base layout: group-norm CNN, post-LN transformer, no waveform normalization
        model = HubertModel(HubertConfig(**TINY, feat_extract_norm="group"))
        extractor = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)
    elif kind == "mhubert":  # mHuBERT-147 layout: HuBERT-base architecture, but do_normalize=True
        model = HubertModel(HubertConfig(**TINY, feat_extract_norm="group"))
        extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    elif kind == "wav2vec2":  # large/lv60 layout: layer-norm CNN, pre-LN transformer, do_normalize=True
        model = Wav2Vec2Model(Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True))
        extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


def shared_checkpoint(tmp_path_factory, kind: str, seed: int = 0) -> Path:
    """A tiny checkpoint in the run's shared folder: one path for both workers, so that bundles exported
    from it (whose manifests name that path) are the same bundles in either worker."""
    return shared_folder(tmp_path_factory, f"tiny-{kind}", [kind, seed, TINY],
                         lambda folder: save_tiny_checkpoint(folder, kind, seed))


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory) -> Path:
    return shared_checkpoint(tmp_path_factory, "hubert")


@pytest.fixture(scope="session")
def tiny_mhubert(tmp_path_factory) -> Path:
    return shared_checkpoint(tmp_path_factory, "mhubert", seed=3)


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    return shared_checkpoint(tmp_path_factory, "wav2vec2")


def cli_ok(*args) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture(scope="session")
def logmel_units(speech_dir, tmp_path_factory) -> Path:
    """Centroids (k=16) trained on the generated speech with the logmel encoder, through the CLI."""
    folder = shared_folder(tmp_path_factory, "logmel", [str(speech_dir)],
                           lambda f: cli_ok("train", "--model", "logmel", "--k", "16", "-o", f / "units.npy", speech_dir))
    return folder / "units.npy"


@pytest.fixture(scope="session")
def logmel_bundle(logmel_units) -> Path:
    return once(logmel_units.with_suffix(".onnx"),
                lambda bundle: cli_ok("export", "--model", "logmel", "--centroids", logmel_units, "-o", bundle))


@pytest.fixture(scope="session")
def hubert_units(tiny_hubert, speech_dir, tmp_path_factory) -> Path:
    """Centroids (k=16) of the tiny HuBERT at its default layer (3, the last), trained on the speech."""
    folder = shared_folder(tmp_path_factory, "hubert-k16", [str(tiny_hubert), str(speech_dir)],
                           lambda f: cli_ok("train", "--model", tiny_hubert, "--k", "16", "-o", f / "units.npy",
                                            speech_dir))
    return folder / "units.npy"


@pytest.fixture(scope="session")
def hubert_bundles(tiny_hubert, hubert_units) -> dict[str, Path]:
    """``hubert_units`` exported by `audiotok export` in each precision (defaults otherwise): read-only,
    shared by test_precision, test_cost and test_arm64."""
    def export(precision: str) -> Path:
        return once(hubert_units.with_name(f"units-{precision}.onnx"),
                    lambda bundle: cli_ok("export", "--model", tiny_hubert, "--centroids", hubert_units,
                                          "--precision", precision, "-o", bundle))

    return {precision: export(precision) for precision in ("fp32", "fp16", "int8")}


def drawn_centroids_bundles(tmp_path_factory, name: str, checkpoint: Path, speech_dir: Path, speech_16k: np.ndarray,
                            *, layer: int, k: int, seconds: float | None, normalize=("auto",)) -> dict[str, Path]:
    """fp32 bundles (one per ``normalize``) of ``checkpoint`` at ``layer``, with k centroids drawn (seed 0)
    from its features of the first ``seconds`` of the speech (all of it: None), parity checked on the
    first utterance. Shared by the streaming modules and test_cost."""
    from audiotok.export.bundle import ExportConfig, export_bundle

    def build(folder: Path) -> None:
        from audiotok.models import load_encoder
        from audiotok.models.features import FeatureExtractor

        audio = speech_16k if seconds is None else speech_16k[: int(seconds * 16_000)]
        features = FeatureExtractor(load_encoder(str(checkpoint), layer, "auto")).features([audio])
        np.save(folder / "centroids.npy", features[np.random.default_rng(0).choice(len(features), k, replace=False)])

    recipe = [str(checkpoint), str(speech_dir), layer, k, seconds]
    folder = shared_folder(tmp_path_factory, name, recipe, build)
    wav = str(sorted(speech_dir.glob("*.wav"))[0])
    return {norm: once(folder / f"{norm}.onnx", lambda bundle, norm=norm: export_bundle(ExportConfig(
        model=str(checkpoint), centroids=str(folder / "centroids.npy"), output=str(bundle), layer=layer,
        normalize=norm, audio=[wav]))) for norm in normalize}


@pytest.fixture(scope="session")
def wav2vec2_stream_bundles(tiny_wav2vec2, speech_dir, speech_16k, tmp_path_factory) -> dict[str, Path]:
    """The tiny wav2vec2 (layer-norm CNN) at layer 2, k=100 centroids drawn from its features of all the
    speech, exported without ("no") and with ("yes") waveform normalization."""
    return drawn_centroids_bundles(tmp_path_factory, "wav2vec2-L2-k100", tiny_wav2vec2, speech_dir, speech_16k,
                                   layer=2, k=100, seconds=None, normalize=("no", "yes"))


@pytest.fixture(scope="session")
def hubert_stream_bundle(tiny_hubert, speech_dir, speech_16k, tmp_path_factory) -> Path:
    """The tiny HuBERT (group-norm CNN) at layer 2, 30 centroids drawn from its features of the first 5 s."""
    return drawn_centroids_bundles(tmp_path_factory, "hubert-L2-k30", tiny_hubert, speech_dir, speech_16k,
                                   layer=2, k=30, seconds=5)["auto"]


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    sf.write(path, samples, rate, subtype="FLOAT" if samples.dtype.kind == "f" else "PCM_16")
    return path


# The modules that take longest (an emulated Raspberry Pi, exports of every encoder family, a bundle
# past 2 GB, Ray clusters), measured with --durations on 2 cores; the bundles conftest shares are built
# by whichever of them asks first. `--dist loadfile` hands modules out
# in collection order, so these go first: a long module started last would leave one worker alone at
# the end while the other waits.
SLOW_FIRST = ("test_arm64.py", "test_large_bundle.py", "test_parity_matrix.py", "test_cost.py",  # the first
              # two go to the two workers, the next two follow them (xdist hands each worker two modules at first)
              "test_precision.py", "test_ray_node_lost.py", "test_ray_engine.py", "test_benchmarks_smoke.py",
              "test_benchmarks_stream_smoke.py", "test_audiotokenizer_dropin.py", "test_readme_quickstart.py",
              "test_kmbin_export.py", "test_stream_agreement.py", "test_fuzz_bundles.py", "test_fuzz_audio.py",
              "test_parity.py", "test_stream.py")


def pytest_configure(config) -> None:
    # pytest-xdist would otherwise reorder modules by their number of tests (--loadscope-reorder, its
    # default), which starts the many quick fuzz cases first and leaves the slow modules for the tail.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: order within a module kept
