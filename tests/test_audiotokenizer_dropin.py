"""Coming from audioTokenizer: the same units from the same vocabulary, and its processor options.

The reference below is written from audioTokenizer's description, not from audiotok's code: read
the file with soundfile, take channel 0, resample with ``soxr.resample``, trim silence as
``librosa.effects.trim`` (training only), pad the tail to a full frame, run the transformers model
with its feature extractor and take ``last_hidden_state``, cluster with ``faiss.Clustering`` and
assign with a faiss ``IndexFlatL2``. audiotok must give its units on every frame of files it did
not train on, stereo and off-grid lengths included.
"""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import espeak, run_cli, write_wav

K = 8
TRIM_DB = 30
HELD_OUT = ["Numbers like forty two and seven hundred.", "Where is the nearest train station, please?",
            "Hello.", "Colourless green ideas sleep furiously tonight."]


# ---- the reference: audioTokenizer's processor, model call and faiss k-means, from its description ----

def ref_trim(y: np.ndarray, top_db: float) -> np.ndarray:
    """librosa.effects.trim(y, top_db): RMS of 2048-sample frames every 512 (centred, zero-padded), ref=max."""
    padded = np.pad(y.astype(np.float64), 1024)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2048)[::512][:1 + len(y) // 512]
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    db = 10 * np.log10(np.maximum(1e-10, rms ** 2)) - 10 * np.log10(max(1e-10, rms.max() ** 2))
    loud = np.flatnonzero(db > -top_db)
    return y[loud[0] * 512:min(len(y), (loud[-1] + 1) * 512)]


def ref_pad(y: np.ndarray) -> np.ndarray:
    remainder = (len(y) - 400) % 320
    return np.pad(y, (0, 320 - remainder)) if remainder else y


def ref_audio(path, top_db: float = 0) -> np.ndarray:
    wav, sr = sf.read(str(path))
    if wav.ndim > 1:
        wav = wav[:, 0]
    if sr != 16_000:
        wav = soxr.resample(wav, sr, 16_000)
    wav = wav.astype(np.float32)
    if top_db:
        wav = ref_trim(wav, top_db)
    return ref_pad(wav)


class RefEmbedder:
    def __init__(self, checkpoint) -> None:
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
        self.model = HubertModel.from_pretrained(checkpoint).eval()

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        inputs = self.extractor(wav, sampling_rate=16_000, return_tensors="pt").input_values
        with torch.inference_mode():
            return self.model(inputs).last_hidden_state[0].numpy()


def ref_kmeans(x: np.ndarray, k: int) -> np.ndarray:
    params = faiss.ClusteringParameters()
    params.niter = int(np.clip(20 + 10 * np.log10(k) + (10 if x.shape[1] >= 512 else 0), 30, 150))
    params.nredo = 3
    params.min_points_per_centroid = 5
    clustering = faiss.Clustering(x.shape[1], k, params)
    clustering.train(np.ascontiguousarray(x, np.float32), faiss.IndexFlatL2(x.shape[1]))
    return faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1]).astype(np.float32)


def ref_units(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return index.search(np.ascontiguousarray(features, np.float32), 1)[1][:, 0]


# ---- audio: stereo files whose second channel is not the first, with silences and off-grid lengths ----

def _stereo(speech: np.ndarray, rate: int, rng: np.random.Generator, lead_s: float, tail_s: float) -> np.ndarray:
    quiet = lambda s: 1e-4 * rng.standard_normal(int(s * rate))  # noqa: E731
    left = np.concatenate([quiet(lead_s), speech, quiet(tail_s)])
    right = 0.3 * rng.standard_normal(len(left))  # channel 1: noise, so a mean would differ from channel 0
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(speech_dir, tmp_path_factory):
    """train/: the four speech fixtures as stereo with silences; held/: four other sentences, stereo,
    at 16, 22.05, 44.1 and 22.05 kHz, cut to lengths off the 320-sample grid."""
    root = tmp_path_factory.mktemp("dropin")
    rng = np.random.default_rng(5)
    train, held = root / "train", root / "held"
    train.mkdir()
    held.mkdir()
    for path in sorted(speech_dir.glob("*.wav")):
        speech, rate = sf.read(str(path))
        write_wav(train / path.name, _stereo(speech, rate, rng, 0.6, 0.5), rate)
    for i, (text, rate, cut) in enumerate(zip(HELD_OUT, (16_000, 22_050, 44_100, 22_050), (123, 457, 901, 29))):
        speech, native = sf.read(str(espeak(text, root / f"raw{i}.wav")))
        if rate != native:
            speech = soxr.resample(speech, native, rate)
        audio = _stereo(speech, rate, rng, 0.2, 0.1)
        write_wav(held / f"held{i}.wav", audio[:len(audio) - cut], rate)
    return train, held


@pytest.fixture(scope="module")
def reference(tiny_mhubert, corpus, tmp_path_factory):
    """Centroids trained the audioTokenizer way, saved as its NAME.centroids.npy and NAME.kmeans_faiss.index."""
    train, _ = corpus
    embed = RefEmbedder(tiny_mhubert)
    features = {p.name: embed(ref_audio(p, TRIM_DB)) for p in sorted(train.glob("*.wav"))}
    centroids = ref_kmeans(np.concatenate(list(features.values())), K)
    folder = tmp_path_factory.mktemp("reference")
    np.save(folder / "centroids.tiny.k8.centroids.npy", centroids)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    faiss.write_index(index, str(folder / "centroids.tiny.k8.kmeans_faiss.index"))
    return {"embed": embed, "features": features, "centroids": centroids, "folder": folder}


@pytest.fixture(scope="module")
def reference_bundle(tiny_mhubert, reference):
    bundle = reference["folder"] / "ref.onnx"
    result = run_cli("export", "--model", tiny_mhubert, "--layer", "3", "--centroids",
                     reference["folder"] / "centroids.tiny.k8.centroids.npy", "--pad-last-frame", "--channel", "0",
                     "-o", bundle)
    assert result.returncode == 0, result.stderr.decode()
    return bundle


def test_tokenize_gives_the_reference_units_on_held_out_stereo_files(reference, reference_bundle, corpus,
                                                                      tmp_path):
    _, held = corpus
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", reference_bundle, held, "--format", "jsonl", "-o", out)
    assert result.returncode == 0, result.stderr.decode()
    records = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in out.read_text().splitlines()}
    assert sorted(records) == [f"held{i}.wav" for i in range(4)]
    for name, record in records.items():
        wav = ref_audio(held / name)
        expected = ref_units(reference["embed"](wav), reference["centroids"])
        n16 = round(sf.info(str(held / name)).frames * 16_000 / sf.info(str(held / name)).samplerate)
        assert (n16 - 400) % 320 != 0  # off the grid: the padded frame is there
        assert record["frames"] == len(expected) == math.ceil((n16 - 400) / 320) + 1
        assert record["units"] == expected.tolist(), name


def test_the_faiss_index_is_read_as_the_same_vocabulary(reference, reference_bundle):
    """`audiotok export --centroids NAME.kmeans_faiss.index` exports exactly the vocabulary of NAME.centroids.npy."""
    from audiotok.export.centroids import load_centroids

    from_index = load_centroids(reference["folder"] / "centroids.tiny.k8.kmeans_faiss.index")
    np.testing.assert_array_equal(from_index.array, reference["centroids"])
    info = json.loads(run_cli("info", reference_bundle).stdout)
    assert info["centroids_sha256"] == from_index.sha256
    assert (info["frame_rule"], info["channel"], info["feature_norm"]) == ("pad", 0, "none")


def test_train_extracts_the_reference_features_and_records_the_options(tiny_mhubert, reference, corpus, tmp_path):
    train, _ = corpus
    out = tmp_path / "mine.centroids.npy"
    result = run_cli("train", "--model", tiny_mhubert, "--k", K, "-o", out, train, "--kmeans", "faiss",
                     "--channel", "0", "--trim-silence", TRIM_DB, "--pad-last-frame", "--cache", tmp_path / "cache",
                     "--write-faiss-index")
    assert result.returncode == 0, result.stderr.decode()
    (folder,) = (tmp_path / "cache").iterdir()
    metas = [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*.json"))]
    cached = np.concatenate([np.load(folder / f"shard-{m['index']:05d}.npy") for m in metas]).astype(np.float32)
    rows = [f["rows"] for m in metas for f in m["files"]]
    expected = list(reference["features"].values())
    assert rows == [len(f) for f in expected]
    np.testing.assert_allclose(cached, np.concatenate(expected), rtol=2e-3, atol=2e-3)  # float16 cache
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert (sidecar["backend"], sidecar["channel"], sidecar["trim_silence_db"], sidecar["frame_rule"]) == \
        ("faiss", 0, TRIM_DB, "pad")
    assert sidecar["kmeans"]["nredo"] == 3 and sidecar["kmeans"]["min_points_per_centroid"] == 5
    index = faiss.read_index(str(tmp_path / "mine.kmeans_faiss.index"))
    assert isinstance(index, faiss.IndexFlatL2)
    np.testing.assert_array_equal(faiss.rev_swig_ptr(index.get_xb(), K * index.d).reshape(K, index.d), np.load(out))


def test_feature_norm_l2_is_inside_the_graph(tiny_mhubert, reference, corpus, tmp_path):
    """Centroids clustered on L2-normalised features, imported with --feature-norm l2."""
    _, held = corpus
    unit = {name: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            for name, f in reference["features"].items()}
    centroids = ref_kmeans(np.concatenate(list(unit.values())), K)
    np.save(tmp_path / "l2.centroids.npy", centroids)
    bundle = tmp_path / "l2.onnx"
    result = run_cli("export", "--model", tiny_mhubert, "--layer", "3", "--centroids", tmp_path / "l2.centroids.npy",
                     "--feature-norm", "l2", "--pad-last-frame", "--channel", "0", "-o", bundle)
    assert result.returncode == 0, result.stderr.decode()
    result = run_cli("tokenize", bundle, held / "held1.wav", held / "held3.wav")
    assert result.returncode == 0, result.stderr.decode()
    for line, name in zip(result.stdout.decode().splitlines(), ("held1.wav", "held3.wav")):
        features = reference["embed"](ref_audio(held / name))
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        assert line.split("\t")[1].split() == list(map(str, ref_units(features, centroids)))
