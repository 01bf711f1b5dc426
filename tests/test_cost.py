"""`audiotok info`'s compute count against an analytic count from the checkpoint's config.

The analytic count is written from the architecture (CNN strides and kernels, positional
convolution, four projections and a feed-forward per layer, two attention products per layer,
the centroid product), not from the graph, so a miscounted or mis-staged node fails here.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from audiotok.runtime.cost import CostModel, node_macs
from audiotok.runtime.constants import SAMPLE_RATE, samples_for_frames
from audiotok.runtime.bundle.session import open_session
from conftest import run_cli


def analytic_macs(config, layer: int, k: int, frames: int) -> dict[str, int]:
    """Multiply-accumulates of a HuBERT/wav2vec2 encoder cut at ``layer`` plus nearest centroid."""
    length, channels, cnn = samples_for_frames(frames), 1, 0
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        cnn += dim * length * channels * kernel
        channels = dim
    assert length == frames
    h, kernel, groups = config.hidden_size, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    positional = h * (frames + 2 * (kernel // 2) - kernel + 1) * (h // groups) * kernel
    linear = frames * channels * h + layer * frames * (4 * h * h + 2 * h * config.intermediate_size)
    return {"cnn": cnn, "positional_conv": positional, "transformer_linear": linear,
            "attention": layer * 2 * frames * frames * h, "nearest_centroid": frames * h * k}


def weight_count(config, layer: int, k: int) -> int:
    """Entries of the matrices and kernels the count multiplies by (biases and norms not included)."""
    channels, total = 1, 0
    for dim, kernel in zip(config.conv_dim, config.conv_kernel):
        total, channels = total + dim * channels * kernel, dim
    h = config.hidden_size
    total += channels * h + h * (h // config.num_conv_pos_embedding_groups) * config.num_conv_pos_embeddings
    return total + layer * (4 * h * h + 2 * h * config.intermediate_size) + h * k


@pytest.fixture(scope="module")
def compute_bundles(tiny_hubert, tiny_wav2vec2, hubert_bundles, wav2vec2_stream_bundles):
    """(checkpoint, layer, k, bundle): HuBERT fp32, int8 and fp16 at layer 3 (its last) and wav2vec2 fp32 cut
    at layer 2 of 3, the bundles conftest shares with other modules (their layer and k from the manifest)."""
    cases = []
    for checkpoint, bundle in [(tiny_hubert, hubert_bundles["fp32"]), (tiny_hubert, hubert_bundles["int8"]),
                               (tiny_wav2vec2, wav2vec2_stream_bundles["yes"]), (tiny_hubert, hubert_bundles["fp16"])]:
        manifest = open_session(bundle)[1]
        cases.append((checkpoint, manifest.layer, manifest.k, bundle))
    assert [layer for _, layer, _, _ in cases] == [3, 3, 2, 3]  # a cut below the last layer is counted too
    return cases


@pytest.fixture(scope="module")
def cost_models(compute_bundles):
    return [CostModel(bundle, open_session(bundle)[1]) for _, _, _, bundle in compute_bundles]


@pytest.mark.parametrize("case", [0, 1, 2, 3], ids=["hubert-fp32", "hubert-int8", "wav2vec2-fp32", "hubert-fp16"])
@pytest.mark.parametrize("frames", [1, 68, 333, 1499])
def test_count_equals_the_analytic_count_per_stage(compute_bundles, cost_models, case, frames):
    checkpoint, layer, k, _ = compute_bundles[case]
    assert cost_models[case].macs(frames) == analytic_macs(AutoConfig.from_pretrained(checkpoint), layer, k, frames)


def test_info_reports_compute_per_audio_second_and_the_default_stream(compute_bundles):
    checkpoint, layer, k, bundle = compute_bundles[1]
    result = run_cli("info", bundle)
    assert result.returncode == 0, result.stderr.decode()
    compute = json.loads(result.stdout)["compute"]
    config = AutoConfig.from_pretrained(checkpoint)
    offline = analytic_macs(config, layer, k, 1499)
    seconds = samples_for_frames(1499) / SAMPLE_RATE
    assert compute["gmac_per_second"] == pytest.approx(sum(offline.values()) / seconds / 1e9, rel=1e-3)
    for stage, macs in offline.items():
        assert compute["stages_gmac_per_second"][stage] == pytest.approx(macs / seconds / 1e9, rel=1e-3)
    window = analytic_macs(config, layer, k, 68)  # 640 ms context + 640 ms chunk + 80 ms lookahead
    stream = compute["stream"]
    assert (stream["chunk_ms"], stream["lookahead_ms"], stream["context_ms"], stream["window_frames"]) == (640, 80, 640, 68)
    assert stream["gmac_per_second"] == pytest.approx(sum(window.values()) * 50 / 32 / 1e9, rel=1e-3)
    assert compute["file_bytes"] == bundle.stat().st_size
    assert compute["uncounted_operators"] == []
    fp32 = json.loads(run_cli("info", compute_bundles[0][3]).stdout)["compute"]
    assert fp32["gmac_per_second"] == compute["gmac_per_second"]  # int8 does the same arithmetic
    weights = weight_count(AutoConfig.from_pretrained(compute_bundles[0][0]), layer, k)
    assert weights <= fp32["parameters"] <= 1.3 * weights  # plus biases, norms, centroid norms
    assert "compute" not in json.loads(run_cli("info", bundle, "--no-compute").stdout)


@pytest.mark.parametrize("op, inputs, outputs, expected", [
    ("MatMul", ((2, 5, 7), (7, 3)), ((2, 5, 3),), 2 * 5 * 3 * 7),
    ("FusedMatMul", ((4, 7, 5), (4, 3, 7)), ((4, 5, 3),), 4 * 5 * 3 * 7),  # transA, transB
    ("DynamicQuantizeMatMul", ((5, 7), (7, 3), (), (), ()), ((5, 3),), 5 * 3 * 7),
    ("QLinearMatMul", ((5, 7), (), (), (7, 3), (), (), (), ()), ((5, 3),), 5 * 3 * 7),
    ("Gemm", ((7, 5), (3, 7)), ((5, 3),), 5 * 3 * 7),  # transA, transB
    ("Conv", ((1, 8, 100), (16, 4, 5)), ((1, 16, 96),), 16 * 96 * 4 * 5),  # group 2
    ("QLinearConv", ((1, 8, 10, 10), (), (), (4, 8, 3, 3)), ((1, 4, 8, 8),), 4 * 64 * 8 * 9),
    ("Softmax", ((5, 7),), ((5, 7),), 0),
])
def test_node_macs_by_operator(op, inputs, outputs, expected):
    assert node_macs(op, inputs, outputs) == expected
