"""An output is never one of the inputs (by identity on disk, not by spelling); a resumed jsonl run is the same
job or is refused naming what differs; an input changed since its record was written is tokenized again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest

from hostile_bundles import manifest_of, replace_field, run_in_process, with_manifest

from audiotok.runtime.formats.run_identity import UNIT_FIELDS

ERROR = "audiotok: error: "
REFUSED = "an output must not be one of the inputs; nothing was changed: choose another output name"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry under ``folder`` (hidden ones and links too): bytes, mode and mtime, so "untouched" is exact."""
    state = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b"<dir>"
        state[str(path.relative_to(folder))] = (data, info.st_mode, info.st_mtime_ns)
    return state


def one_error(code: int, err: str) -> str:
    """The single error line of a refused in-process run (exit 1, no traceback, nothing after it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert lines and lines[-1].startswith(ERROR) and sum(line.startswith(ERROR) for line in lines) == 1, err
    return lines[-1][len(ERROR):]


@pytest.fixture(scope="module")
def clips(speech_dir) -> list[Path]:
    return sorted(speech_dir.glob("*.wav"))[:3]


@pytest.fixture
def work(tmp_path, clips) -> Path:
    """A folder with copies of three clips (a.wav, b.wav, c.wav), the cwd of the test."""
    for name, clip in zip("abc", clips):
        (tmp_path / f"{name}.wav").write_bytes(clip.read_bytes())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def refused(capsys, *args) -> str:
    return one_error(*run_in_process(capsys, *args)[::2])


# --- collisions ---------------------------------------------------------------------------------------------


def test_txt_output_onto_an_audio_input_is_refused_untouched(work, logmel_bundle, capsys):
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "a.wav", "b.wav", "-o", "a.wav")
    assert line == f"-o a.wav is the same file on disk as the input a.wav: {REFUSED}"
    assert snapshot(work) == before


def test_output_onto_the_bundle_is_refused(work, logmel_bundle, capsys):
    bundle = work / "units.onnx"
    bundle.write_bytes(logmel_bundle.read_bytes())
    before = snapshot(work)
    line = refused(capsys, "tokenize", "units.onnx", "a.wav", "-o", "./units.onnx")
    assert line == f"-o units.onnx is the same file on disk as the bundle units.onnx: {REFUSED}"
    assert snapshot(work) == before


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "fairseq"])
def test_a_hard_link_to_an_input_is_the_input(fmt, work, logmel_bundle, capsys):
    os.link(work / "b.wav", work / "units.out")
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "a.wav", "b.wav", "--format", fmt, "-o", "units.out")
    assert line == f"-o units.out is the same file on disk as the input b.wav: {REFUSED}"
    assert snapshot(work) == before


def test_an_input_given_through_a_symbolic_link_is_still_the_input(work, logmel_bundle, capsys):
    (work / "link.wav").symlink_to(work / "c.wav")
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "a.wav", "link.wav", "-o", "c.wav")
    assert line == f"-o c.wav is the same file on disk as the input link.wav: {REFUSED}"
    assert snapshot(work) == before


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_an_output_that_is_a_symbolic_link_to_an_input_names_the_input(fmt, work, logmel_bundle, capsys):
    (work / "out.txt").symlink_to(work / "b.wav")
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "a.wav", "b.wav", "--format", fmt, "-o", "out.txt")
    assert line == f"-o out.txt is the same file on disk as the input b.wav: {REFUSED}"
    assert snapshot(work) == before


def test_a_resumable_runs_side_file_that_is_an_input_is_refused(work, logmel_bundle, capsys):
    file_list = work / "u.run.json"
    file_list.write_text(f"{work}\na.wav\t1000\n")  # a file list named like u.jsonl's run file
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "@u.run.json", "--format", "jsonl", "-o", "u.jsonl")
    assert line == f"u.run.json (beside -o u.jsonl) is the same file on disk as the file list u.run.json: {REFUSED}"
    assert snapshot(work) == before


def test_an_npy_folder_holding_an_input_is_refused(work, logmel_bundle, capsys):
    (work / "units").mkdir()  # looks like a units folder audiotok wrote, but its index.tsv is audio given as input
    (work / "units" / "meta.json").write_text(json.dumps({"format": "audiotok-units", "version": 1}))
    (work / "units" / "index.tsv").write_bytes((work / "a.wav").read_bytes())
    before = snapshot(work)
    line = refused(capsys, "tokenize", logmel_bundle, "b.wav", "units/index.tsv", "--format", "npy", "-o", "units")
    assert line == f"-o units holds the input units/index.tsv: {REFUSED}"
    assert snapshot(work) == before


def test_info_centroids_onto_the_bundle_is_refused(work, logmel_bundle, capsys):
    (work / "units.onnx").write_bytes(logmel_bundle.read_bytes())
    before = snapshot(work)
    line = refused(capsys, "info", "units.onnx", "--centroids", "units.onnx", "--no-compute")
    assert line == f"--centroids units.onnx is the same file on disk as the bundle units.onnx: {REFUSED}"
    assert snapshot(work) == before


def test_evaluate_report_onto_an_input_is_refused(work, logmel_bundle, capsys):
    before = snapshot(work)
    line = refused(capsys, "evaluate", logmel_bundle, "a.wav", "b.wav", "-o", "b.wav")
    assert line == f"-o b.wav is the same file on disk as the input b.wav: {REFUSED}"
    assert snapshot(work) == before


def test_export_onto_its_centroids_or_their_sidecar_is_refused(work, logmel_units, capsys):
    (work / "km.npy").write_bytes(logmel_units.read_bytes())
    (work / "km.json").write_bytes(logmel_units.with_suffix(".json").read_bytes())
    before = snapshot(work)
    line = refused(capsys, "export", "--centroids", "km.npy", "-o", "km.npy")
    assert line == f"-o km.npy is the same file on disk as --centroids km.npy: {REFUSED}"
    line = refused(capsys, "export", "--centroids", "km.npy", "-o", "km.json")
    assert line == f"-o km.json is the same file on disk as the sidecar km.json (beside --centroids): {REFUSED}"
    assert snapshot(work) == before


def test_export_into_its_checkpoint_folder_is_refused(work, logmel_units, tiny_hubert, capsys):
    (work / "km.npy").write_bytes(logmel_units.read_bytes())
    before = snapshot(tiny_hubert)
    line = refused(capsys, "export", "--model", tiny_hubert, "--centroids", "km.npy", "-o", tiny_hubert / "u.onnx")
    assert line == f"-o {tiny_hubert / 'u.onnx'} lies inside the checkpoint folder {tiny_hubert}: {REFUSED}"
    assert snapshot(tiny_hubert) == before


def test_train_whose_sidecar_or_cache_would_be_an_input_is_refused(work, capsys):
    os.link(work / "b.wav", work / "km.json")
    before = snapshot(work)
    line = refused(capsys, "train", "--model", "logmel", "--k", "4", "-o", "km.npy", "a.wav", "b.wav")
    assert line == f"km.json (beside -o km.npy) is the same file on disk as the input b.wav: {REFUSED}"
    line = refused(capsys, "train", "--model", "logmel", "--k", "4", "-o", "new.npy", "--cache", ".", "a.wav")
    assert line == f"the feature cache . holds the input a.wav: {REFUSED}"
    assert snapshot(work) == before


# --- resume identity ----------------------------------------------------------------------------------------


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def pad_bundle(logmel_bundle, tmp_path_factory) -> Path:
    """The same centroids, encoder and k as logmel_bundle, with frame rule "pad": other units, other bytes."""
    model = onnx.load(str(logmel_bundle))
    path = tmp_path_factory.mktemp("pad") / "units.onnx"
    return with_manifest(model, replace_field(manifest_of(model), "frame_rule", '"pad"'), path)


def test_the_run_file_records_every_setting_that_decides_units(work, logmel_bundle, capsys):
    assert run_in_process(capsys, "tokenize", logmel_bundle, "a.wav", "--format", "jsonl", "-o", "u.jsonl")[0] == 0
    run = json.loads((work / "u.run.json").read_text())
    assert run["bundle_sha256"] == hashlib.sha256(logmel_bundle.read_bytes()).hexdigest()
    assert {k: run[k] for k in UNIT_FIELDS if k != "bundle_sha256"} == {
        "channel": "mean", "trim_silence_db": None, "frame_rule": "floor", "feature_norm": "none",
        "max_pass_seconds": 30.0}
    (record,) = records(work / "u.jsonl")
    info = os.stat(work / "a.wav")
    assert (record["input_size"], record["input_mtime_ns"]) == (info.st_size, info.st_mtime_ns)


@pytest.mark.parametrize("first, second, named", [
    ((), ("--channel", "0"), "(channel='mean'), not these (channel=0)"),
    (("--channel", "0"), (), "(channel=0), not these (channel='mean')"),
    (("--trim-silence", "30"), (), "(trim_silence_db=30.0), not these (trim_silence_db=None)"),
    ((), ("--max-pass-seconds", "60"), "(max_pass_seconds=30.0), not these (max_pass_seconds=60.0)"),
])
def test_a_resume_with_other_processor_options_is_refused(first, second, named, work, logmel_bundle, capsys):
    args = ("tokenize", logmel_bundle, "a.wav", "b.wav", "--format", "jsonl", "-o", "u.jsonl")
    assert run_in_process(capsys, *args[:3], *args[4:], *first)[0] == 0  # a.wav only
    before = snapshot(work)
    line = refused(capsys, *args, *second)
    assert line.startswith(f"u.jsonl was made with other settings {named}; resuming would mix them"), line
    assert snapshot(work) == before


def test_a_resume_with_a_bundle_of_another_frame_rule_is_refused(work, logmel_bundle, pad_bundle, capsys):
    assert run_in_process(capsys, "tokenize", logmel_bundle, "a.wav", "--format", "jsonl", "-o", "u.jsonl")[0] == 0
    before = snapshot(work)
    line = refused(capsys, "tokenize", pad_bundle, "a.wav", "b.wav", "--format", "jsonl", "-o", "u.jsonl")
    fields = line.split(" was made with other settings (")[1].split(")")[0]
    assert [f.split("=")[0] for f in fields.split(", ")] == ["bundle_sha256", "frame_rule"], line
    assert "frame_rule='floor'" in fields and "frame_rule='pad'" in line.split("not these")[1]
    assert snapshot(work) == before


def test_an_old_run_file_is_refused_until_overwrite(work, logmel_bundle, capsys):
    args = ("tokenize", logmel_bundle, "a.wav", "b.wav", "--format", "jsonl", "-o", "u.jsonl")
    assert run_in_process(capsys, *args[:3], *args[4:])[0] == 0
    run = json.loads((work / "u.run.json").read_text())
    old = {k: v for k, v in run.items() if k not in UNIT_FIELDS}  # what an older audiotok wrote
    (work / "u.run.json").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    before = snapshot(work)
    line = refused(capsys, *args)
    assert line == ("u.run.json was written by an older audiotok and does not record bundle_sha256, channel, "
                    "trim_silence_db, frame_rule, feature_norm, max_pass_seconds, so this resume cannot be proven "
                    "the same job: --overwrite to start over, or use another -o")
    assert snapshot(work) == before
    assert run_in_process(capsys, *args, "--overwrite")[0] == 0
    assert [r["path"] for r in records(work / "u.jsonl")] == ["a.wav", "b.wav"]
    assert json.loads((work / "u.run.json").read_text()) == run


def test_overwrite_interrupted_before_its_run_file_leaves_no_records_under_new_settings(work, logmel_bundle, capsys,
                                                                                        monkeypatch):
    import audiotok.runtime.formats.resumable as resumable

    args = ("tokenize", logmel_bundle, "a.wav", "--format", "jsonl", "-o", "u.jsonl")
    assert run_in_process(capsys, *args)[0] == 0
    old_run = (work / "u.run.json").read_bytes()

    def killed(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(resumable, "atomic_path", killed)  # stopped just before the new run file is written
    assert run_in_process(capsys, *args, "--dedup", "--overwrite")[0] == 130
    assert (work / "u.jsonl").read_bytes() == b"" and (work / "u.run.json").read_bytes() == old_run
    monkeypatch.undo()
    code, _, err = run_in_process(capsys, *args, "--dedup")  # starts afresh: no old record is kept under --dedup
    assert code == 0, err
    assert [r["path"] for r in records(work / "u.jsonl")] == ["a.wav"] and "durations" in records(work / "u.jsonl")[0]
    assert json.loads((work / "u.run.json").read_text())["dedup"] is True


def test_an_input_changed_since_its_record_is_tokenized_again(work, logmel_bundle, clips, capsys):
    args = ("tokenize", logmel_bundle, "a.wav", "b.wav", "--format", "jsonl", "-o", "u.jsonl")
    assert run_in_process(capsys, *args)[0] == 0
    first = {r["path"]: r for r in records(work / "u.jsonl")}
    (work / "a.wav").write_bytes(clips[2].read_bytes())  # replaced between the runs: other audio, other size
    code, _, err = run_in_process(capsys, *args[:4], "c.wav", *args[4:])
    assert code == 0, err
    assert "resuming u.jsonl: 1 of 3 files already done; 1 changed since their records were written" in err
    again = records(work / "u.jsonl")
    assert sorted(r["path"] for r in again) == ["a.wav", "b.wav", "c.wav"]  # every path exactly once
    by_path = {r["path"]: r for r in again}
    assert by_path["b.wav"] == first["b.wav"]  # kept as it was
    assert by_path["a.wav"]["units"] == by_path["c.wav"]["units"] != first["a.wav"]["units"]  # the new audio's
    assert by_path["a.wav"]["input_size"] == os.stat(work / "a.wav").st_size
    assert sorted(p.name for p in work.iterdir()) == ["a.wav", "b.wav", "c.wav", "u.jsonl", "u.run.json"]

