"""`audiotok evaluate` end to end: numbers checked against an independent computation, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ERROR_PREFIX, REPO, error_line, run_cli
from praatio import textgrid as tgio

from audiotok.runtime.tokenizer import Tokenizer


def evaluate_json(*args) -> dict:
    result = run_cli("evaluate", *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def labels_by_hand(textgrid: Path, n_frames: int) -> list[str | None]:
    """The phone under each frame's centre, read with praatio and searched one interval at a time."""
    tier = tgio.openTextgrid(str(textgrid), includeEmptyIntervals=False).getTier("phones")
    labels = []
    for i in range(n_frames):
        t = (320 * i + 200) / 16_000
        labels.append(next((e.label for e in tier.entries if e.start <= t < e.end), None))
    return labels


def test_scores_equal_an_independent_computation(logmel_bundle, aligned_dir, tmp_path):
    image = tmp_path / "confusion.png"
    report = evaluate_json(logmel_bundle, aligned_dir, "--alignments", aligned_dir, "--confusion", image)
    tokenizer = Tokenizer(logmel_bundle)
    pairs, all_units = Counter(), []
    unlabelled = 0
    for wav in sorted(aligned_dir.glob("*.wav")):
        units = tokenizer.tokenize(wav).tolist()
        all_units += units
        for label, unit in zip(labels_by_hand(wav.with_suffix(".TextGrid"), len(units)), units):
            if label is None:
                unlabelled += 1
            else:
                pairs[label, unit] += 1
    n = sum(pairs.values())
    phone_n, unit_n = Counter(), Counter()
    for (p, u), c in pairs.items():
        phone_n[p] += c
        unit_n[u] += c
    mutual = sum(c / n * math.log2(c * n / (phone_n[p] * unit_n[u])) for (p, u), c in pairs.items())
    h_phone = -sum(c / n * math.log2(c / n) for c in phone_n.values())
    phone_purity = sum(max(c for (p, v), c in pairs.items() if v == u) for u in unit_n) / n
    cluster_purity = sum(max(c for (p, v), c in pairs.items() if p == q) for q in phone_n) / n

    a = report["alignment"]
    assert (a["frames"], a["unlabelled_frames"], a["phones"], a["files"], a["unaligned"]) == (
        n, unlabelled, len(phone_n), 4, [])
    assert a["pnmi"] == pytest.approx(mutual / h_phone)
    assert a["phone_purity"] == pytest.approx(phone_purity)
    assert a["cluster_purity"] == pytest.approx(cluster_purity)
    assert 0.0 < a["pnmi"] < 1.0 and unlabelled > 0  # espeak's pauses are gaps
    s, counts = report["stats"], Counter(all_units)
    entropy = -sum(c / len(all_units) * math.log2(c / len(all_units)) for c in counts.values())
    assert (s["frames"], s["units_used"], s["k"]) == (len(all_units), len(counts), 16)
    assert s["entropy_bits"] == pytest.approx(entropy) and s["bitrate"] == pytest.approx(entropy * 50)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unaligned_files_are_listed_and_the_rest_scored(logmel_bundle, aligned_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(aligned_dir, corpus, ignore=shutil.ignore_patterns("*.TextGrid"))
    shutil.copy(aligned_dir / "utt0.wav", corpus / "extra.wav")
    result = run_cli("evaluate", logmel_bundle, corpus, "--alignments", aligned_dir, "--json")
    assert result.returncode == 0, result.stderr.decode()
    a = json.loads(result.stdout)["alignment"]
    assert a["files"] == 4 and a["unaligned"] == [str(corpus / "extra.wav")]
    assert f"audiotok: warning: {corpus / 'extra.wav'}: no alignment" in result.stderr.decode()
    table = run_cli("evaluate", logmel_bundle, corpus, "--alignments", aligned_dir)
    assert f"unaligned       {corpus / 'extra.wav'}" in table.stdout.decode()


def test_ued_is_zero_against_itself_and_unperturbed_copies(logmel_bundle, aligned_dir, tmp_path):
    args = [logmel_bundle, aligned_dir, "--against", logmel_bundle, "--perturb", "shift:0", "--perturb", "gain:0",
            "--perturb", "speed:1", "--perturb", "noise:10", "--perturb", "reverb:0.4"]
    report = evaluate_json(*args)
    c = report["comparison"]
    assert (c["agreement"], c["ued"], c["frames"]) == (1.0, 0.0, report["stats"]["frames"])
    assert [f["ued"] for f in c["per_file"]] == [0.0] * 4
    st = report["stability"]
    assert list(st) == ["shift:0", "gain:0", "speed:1", "noise:10", "reverb:0.4"]
    assert st["shift:0"]["ued"] == st["gain:0"]["ued"] == st["speed:1"]["ued"] == 0.0
    assert st["noise:10"]["ued"] > 0 and st["reverb:0.4"]["ued"] > 0
    assert st["speed:1"]["agreement"] is None  # speed changes the grid: UED only
    out = tmp_path / "report.json"
    written = subprocess.run([sys.executable, "-m", "audiotok", "evaluate", *map(str, args), "--json", "-o", str(out)],
                             capture_output=True, preexec_fn=lambda: os.umask(0o027))
    assert written.returncode == 0, written.stderr.decode()
    assert json.loads(written.stdout) == report == json.loads(out.read_text())  # seeded: the same numbers again
    assert out.stat().st_mode & 0o777 == 0o640


def test_streamed_units_against_offline(logmel_bundle, aligned_dir):
    report = evaluate_json(logmel_bundle, aligned_dir, "--stream", "640:80:640")
    c = report["comparison"]
    assert c["against"] == "stream 640:80:640" and c["frames"] == report["stats"]["frames"]
    assert c["agreement"] == 1.0 and c["ued"] == 0.0  # the log-mel encoder sees only its own 400 samples


def test_help_teaches(logmel_bundle):
    result = run_cli("evaluate", "--help")
    text = result.stdout.decode()
    assert result.returncode == 0
    for needle in ("PNMI", "--alignments", "noise:SNR_DB", "audiotok evaluate units.onnx speech/ --stream 640:80:640",
                   "(default: phones)"):
        assert needle in text



def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr.decode()
    return error_line(result)[len(ERROR_PREFIX):]


@pytest.fixture
def bad_inputs(tmp_path, aligned_dir, logmel_bundle):
    wav = aligned_dir / "utt0.wav"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "utt0.TextGrid").write_text("File type = \"ooTextFile\"\nthis is not a TextGrid\n")
    long = tmp_path / "long.tsv"
    long.write_text(f"{wav}\t0.0\t99.5\tə\n")
    overlap = tmp_path / "overlap.tsv"
    overlap.write_text(f"{wav}\t0.0\t0.5\tə\n{wav}\t0.4\t0.8\tk\n")
    return wav, junk, long, overlap


def test_bad_input_is_one_line_naming_the_problem(logmel_bundle, aligned_dir, bad_inputs):
    wav, junk, long, overlap = bad_inputs
    cases = {
        ("--alignments", junk): f"{junk / 'utt0.TextGrid'}: not a TextGrid that can be read",
        ("--alignments", aligned_dir, "--tier", "words"):
            f"{aligned_dir / 'utt0.TextGrid'}: no tier 'words' (tiers: 'phones'); choose one with --tier",
        ("--alignments", long): f"{long} ({wav}): label 'ə' ends at 99.5 s, past the end of {wav}",
        ("--alignments", overlap): f"{overlap} ({wav}): overlapping intervals 'ə' 0-0.5 s and 'k' 0.4-0.8 s",
        ("--perturb", "noise:abc"): "--perturb noise:abc: SNR in dB must be a number, got 'abc'",
        ("--perturb", "speed:0"): "--perturb speed:0: speed factor must be in [0.5, 2], got 0",
        ("--stream", "650:80:640"): "--stream 650:80:640: chunk 650 ms is not a whole number of 20 ms frames",
        ("--stream", "640:80"): "--stream 640:80: expected CHUNK:LOOKAHEAD:CONTEXT in ms",
        ("--confusion", "x.png"): "--confusion draws phones x units; it needs --alignments",
        ("--seed", "-1"): "--seed must be a non-negative integer, got -1",
    }
    for args, message in cases.items():
        assert one_error_line(run_cli("evaluate", logmel_bundle, wav, *args)).startswith(message), args


def test_bundles_of_other_grids_are_refused_under_against(logmel_bundle, aligned_dir, tmp_path):
    import onnx

    model = onnx.load(str(logmel_bundle))
    for prop in model.metadata_props:
        if prop.key == "audiotok":
            manifest = json.loads(prop.value)
            manifest["hop"] = 160
            prop.value = json.dumps(manifest)
    other = tmp_path / "hop160.onnx"
    onnx.save(model, str(other))
    message = one_error_line(run_cli("evaluate", logmel_bundle, aligned_dir / "utt0.wav", "--against", other))
    assert message.startswith(f"{other}: frame grid (rate 16000, hop 160, field 400) differs")


def test_the_eval_extra_is_named_when_missing():
    blocker = ("import importlib.abc, sys\n"
               "class B(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'rapidfuzz': raise ModuleNotFoundError('blocked', name=name)\n"
               "sys.meta_path.insert(0, B())\n"
               "from audiotok.runtime.commands.dispatcher import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", blocker, "evaluate", "--help"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip() == ("audiotok: error: 'audiotok evaluate' needs rapidfuzz, which is not installed: "
                                     "pip install 'audiotok[eval]'")
