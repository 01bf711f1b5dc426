"""The measures behind `audiotok evaluate`, on tables small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audiotok.runtime.errors import SettingsError
from audiotok.runtime.evaluation.perturb import Perturbation, apply, expand, parse_perturbation, seeded_rng
from audiotok.runtime.evaluation.phone_metrics import PhoneUnitCounts, cluster_purity, phone_purity, pnmi
from audiotok.runtime.evaluation.unit_compare import compare, frame_agreement, unit_edit_distance
from audiotok.runtime.evaluation.unit_stats import UnitCounter


def mutual_information_by_hand(table: list[list[int]]) -> float:
    total = sum(map(sum, table))
    rows = [sum(r) / total for r in table]
    cols = [sum(r[j] for r in table) / total for j in range(len(table[0]))]
    return sum(c / total * math.log2(c / total / (rows[i] * cols[j]))
               for i, r in enumerate(table) for j, c in enumerate(r) if c)


def test_pnmi_is_one_when_units_are_phones_and_zero_for_a_constant_unit():
    assert pnmi(np.diag([5, 3, 2])) == pytest.approx(1.0)
    assert pnmi(np.array([[5, 0], [3, 0], [2, 0]])) == pytest.approx(0.0, abs=1e-12)
    assert pnmi(np.array([[7, 1, 4]])) is None  # one phone: H(phone) = 0, nothing to explain


def test_pnmi_and_purities_on_a_hand_computed_table():
    table = [[3, 1, 0], [0, 2, 2]]  # 2 phones x 3 units, 8 frames
    h_phone = 1.0  # 4 and 4 frames
    assert pnmi(np.array(table)) == pytest.approx(mutual_information_by_hand(table) / h_phone)
    assert phone_purity(np.array(table)) == pytest.approx((3 + 2 + 2) / 8)  # each unit's top phone
    assert cluster_purity(np.array(table)) == pytest.approx((3 + 2) / 8)  # each phone's top unit


def test_constant_unit_purities():
    table = np.array([[6, 0, 0], [2, 0, 0]])
    assert phone_purity(table) == pytest.approx(6 / 8)
    assert cluster_purity(table) == 1.0


def test_phone_unit_counts_leave_unlabelled_frames_out():
    counts = PhoneUnitCounts(k=4)
    counts.add(["a", "a", None, "b", "ʃ"], np.array([0, 0, 3, 1, 1]))
    counts.add(["ʃ", None], np.array([2, 2]))
    assert counts.phones == ["a", "b", "ʃ"]
    assert counts.table.tolist() == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0]]
    scores = counts.scores()
    assert (scores.frames, scores.unlabelled_frames, scores.phones) == (5, 2, 3)
    assert scores.phone_purity == pytest.approx((2 + 1 + 1) / 5)


def test_unit_statistics_by_hand():
    counter = UnitCounter(k=4)
    counter.add(np.array([0, 0, 1, 1]))
    s = counter.stats()
    assert (s.frames, s.units_used, s.dedup_units) == (4, 2, 2)
    assert s.entropy_bits == pytest.approx(1.0) and s.perplexity == pytest.approx(2.0)
    assert s.bitrate == pytest.approx(50.0)  # 1 bit x 50 frames/s
    assert s.dedup_bitrate == pytest.approx(1.0 * 2 / 0.08)  # 2 units of 1 bit in 80 ms
    assert s.mean_run_frames == 2.0
    counter.add(np.array([3]))  # pooled: runs do not continue across files
    assert counter.stats().dedup_units == 3 and counter.stats().units_used == 3


def test_unit_edit_distance_and_agreement_by_hand():
    a, b = np.array([1, 1, 2, 3]), np.array([1, 2, 2, 4])
    assert unit_edit_distance(a, b) == (1, 3)  # [1 2 3] -> [1 2 4]
    assert frame_agreement(a, b) == (2, 4)
    result = compare(a, b)
    assert result.ued == pytest.approx(1 / 3) and result.agreement == 0.5
    same = compare(a, a.copy())
    assert same.ued == 0.0 and same.agreement == 1.0
    assert frame_agreement(np.array([0, 1, 2, 3]), np.array([1, 2, 3]), offset=1) == (3, 3)
    assert frame_agreement(np.array([1, 2, 3]), np.array([9, 1, 2, 3]), offset=-1) == (3, 3)
    assert compare(a, b, offset=None).agreement is None


def test_ued_of_long_sequences_is_fast_and_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, 10_000)
    b = a.copy()
    changed = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])[:7]  # seven run starts
    b[changed] = 99  # a unit no run has: each substitution is one edit
    edits, length = unit_edit_distance(a, b)
    assert edits == 7 and length == len(np.flatnonzero(np.r_[True, a[1:] != a[:-1]]))


@pytest.mark.parametrize("spec, message", [
    ("noise:abc", "--perturb noise:abc: SNR in dB must be a number, got 'abc'"),
    ("speed:0", "--perturb speed:0: speed factor must be in [0.5, 2], got 0"),
    ("speed:nan", "--perturb speed:nan: speed factor must be finite"),
    ("shift:1.5", "--perturb shift:1.5: shift must be a whole number of samples, got '1.5'"),
    ("reverb:0", "--perturb reverb:0: RT60 in seconds must be in (0, 3], got 0"),
    ("pitch:2", "--perturb pitch:2: expected KIND:VALUE with KIND one of noise, speed, gain, shift, reverb "
                "(e.g. noise:10, speed:1.1, gain:-6, shift:160, reverb:0.3)"),
    ("noise", "--perturb noise: expected KIND:VALUE"),
    ("gain:3:4", "--perturb gain:3:4: too many fields"),
])
def test_bad_perturbation_specs_are_refused(spec, message):
    with pytest.raises(SettingsError) as err:
        parse_perturbation(spec)
    assert str(err.value).startswith(message)


def test_recorded_noise_needs_a_noise_dir_and_twins_white_noise():
    with pytest.raises(SettingsError, match="needs --noise-dir"):
        expand(["noise:10:recorded"], with_recorded_noise=False)
    names = [p.name for p in expand(["noise:10", "speed:1.1", "noise:10"], with_recorded_noise=True)]
    assert names == ["noise:10", "noise:10:recorded", "speed:1.1"]


def test_perturbations_are_seeded_and_do_what_they_say():
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    noise = parse_perturbation("noise:10")
    once = apply(noise, x, seeded_rng(0, "a.wav", noise))
    assert np.array_equal(once, apply(noise, x, seeded_rng(0, "a.wav", noise)))
    assert not np.array_equal(once, apply(noise, x, seeded_rng(1, "a.wav", noise)))
    added = once.astype(np.float64) - x
    assert 10 * math.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added ** 2)) == pytest.approx(10, abs=0.01)
    assert len(apply(parse_perturbation("speed:1.25"), x, rng)) == pytest.approx(16_000 / 1.25, abs=2)
    assert np.allclose(apply(parse_perturbation("gain:-20"), x, rng), x * 0.1, rtol=1e-6)
    assert np.array_equal(apply(parse_perturbation("shift:160"), x, rng), x[160:])
    assert np.array_equal(apply(parse_perturbation("shift:-5"), x, rng)[5:], x)
    wet = apply(parse_perturbation("reverb:0.3"), x, seeded_rng(0, "a.wav", Perturbation("reverb", 0.3)))
    power = np.mean(x.astype(np.float64) ** 2)
    assert len(wet) == len(x) and np.mean(wet.astype(np.float64) ** 2) == pytest.approx(power)
    assert parse_perturbation("shift:480").frame_offset == 1 and parse_perturbation("speed:0.9").frame_offset is None


def test_recorded_noise_is_drawn_reproducibly_at_the_asked_ratio(tmp_path):
    import soundfile as sf

    from audiotok.runtime.evaluation.perturb import NoiseBank

    rng = np.random.default_rng(2)
    sf.write(tmp_path / "hum.wav", (0.05 * np.sin(np.arange(8_000) * 0.3)).astype(np.float32), 8_000)
    sf.write(tmp_path / "hiss.flac", (0.01 * rng.standard_normal(16_000)).astype(np.float32), 16_000)
    bank = NoiseBank(str(tmp_path))
    assert len(bank.files) == 2
    x = (0.1 * rng.standard_normal(40_000)).astype(np.float32)  # longer than either file: noise is looped
    spec = parse_perturbation("noise:5:recorded")
    noisy = apply(spec, x, seeded_rng(3, "a.wav", spec), bank)
    assert np.array_equal(noisy, apply(spec, x, seeded_rng(3, "a.wav", spec), bank))
    added = noisy.astype(np.float64) - x
    assert 10 * math.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added ** 2)) == pytest.approx(5, abs=0.01)
    with pytest.raises(SettingsError, match="no such folder"):
        NoiseBank(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SettingsError, match="no audio files in it"):
        NoiseBank(str(tmp_path / "empty"))


def test_bundles_of_other_vocabularies_are_refused_or_flagged():
    from types import SimpleNamespace

    from audiotok.runtime.evaluation.measure import check_comparable

    def bundle(path, k=100, sha="a", hop=320):
        manifest = SimpleNamespace(sample_rate=16_000, hop=hop, receptive_field=400, k=k, centroids_sha256=sha)
        return SimpleNamespace(path=path, manifest=manifest)

    assert check_comparable(bundle("a.onnx"), bundle("b.onnx")) is None
    assert "centroids differ" in check_comparable(bundle("a.onnx"), bundle("b.onnx", sha="b"))
    with pytest.raises(SettingsError, match=r"^b.onnx: k=50 but a.onnx has k=100"):
        check_comparable(bundle("a.onnx"), bundle("b.onnx", k=50))
    with pytest.raises(SettingsError, match=r"^b.onnx: frame grid"):
        check_comparable(bundle("a.onnx"), bundle("b.onnx", hop=160))


def test_confusion_order_puts_units_under_their_phone():
    from audiotok.runtime.plotting.confusion_plot import sorted_table

    table = np.array([[1, 0, 4, 0, 0], [0, 6, 0, 2, 0]])  # phones a (5 frames), b (8); unit 4 unused
    rows, names, units = sorted_table(table, ["a", "b"])
    assert names == ["b", "a"] and units.tolist() == [1, 3, 0, 2]
    assert np.allclose(rows, [[6 / 8, 2 / 8, 0, 0], [0, 0, 1 / 5, 4 / 5]])
