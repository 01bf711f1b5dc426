"""Corpus-scale tokenization: folders and file lists, parallel jobs, resume after SIGKILL, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_cli, write_wav
from corpus_audio import write_corpus

from audiotok.runtime import Tokenizer
from audiotok.runtime.corpus.listing import list_corpus
from audiotok.runtime.errors import AudioError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_16k):
    """80 files of 15 s in nested folders."""
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, speech_16k, files=80, seconds=15.0)
    return folder


@pytest.fixture(scope="module")
def reference(corpus, logmel_bundle):
    """Every file tokenized one by one with the Python API: what each record must hold."""
    tok = Tokenizer(logmel_bundle)
    return {str(p): tok.tokenize(p).tolist() for p in sorted(corpus.rglob("*.wav"))}


def read_records(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the last record is torn"
    return [json.loads(line) for line in text.splitlines()]


def units_by_path(records: list[dict]) -> dict[str, list[int]]:
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)), "a file was written twice"
    return {r["path"]: r["units"] for r in records}


def test_jobs_2_equals_one_by_one(corpus, reference, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, corpus, "--format", "jsonl", "-o", out, "--jobs", "2")
    assert result.returncode == 0, result.stderr.decode()
    records = read_records(out)
    assert units_by_path(records) == reference
    for r in records:
        assert r["frames"] == len(r["units"]) and r["seconds"] == round(len(r["units"]) * 0.02, 2)
    summary = result.stderr.decode().strip().splitlines()[-1]
    assert "80 files" in summary and "2 local processes" in summary and "h/h" in summary
    assert not (tmp_path / "units.errors.jsonl").exists()


def test_killed_run_resumes_with_every_file_exactly_once(corpus, reference, logmel_bundle, tmp_path):
    out = tmp_path / "units.jsonl"
    command = [sys.executable, "-m", "audiotok", "tokenize", str(logmel_bundle), str(corpus), "--format", "jsonl",
               "-o", str(out), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, mid-run
        proc.wait()
    at_kill = out.read_bytes()
    complete = at_kill.count(b"\n")
    assert 3 <= complete < len(reference), f"the kill did not land mid-run ({complete} records)"

    again = run_cli(*command[3:])
    assert again.returncode == 0, again.stderr.decode()
    assert f"{complete} of {len(reference)} files already done" in again.stderr.decode()
    final = out.read_bytes()
    assert final.startswith(at_kill[:at_kill.rfind(b"\n") + 1])  # finished records are kept, not redone
    assert units_by_path(read_records(out)) == reference


def test_torn_last_line_is_cut_and_redone(corpus, reference, logmel_bundle, tmp_path):
    files = sorted(corpus.rglob("*.wav"))[:4]
    out = tmp_path / "units.jsonl"
    assert run_cli("tokenize", logmel_bundle, *files[:2], "--format", "jsonl", "-o", out).returncode == 0
    torn = json.dumps({"path": str(files[2]), "units": reference[str(files[2])]})[:40]
    with open(out, "a") as f:
        f.write(torn)  # what a crash in the middle of a write leaves
    result = run_cli("tokenize", logmel_bundle, *files, "--format", "jsonl", "-o", out)
    assert result.returncode == 0, result.stderr.decode()
    assert f"torn last record ({len(torn)} bytes)" in result.stderr.decode()
    assert "2 of 4 files already done" in result.stderr.decode()
    assert units_by_path(read_records(out)) == {str(p): reference[str(p)] for p in files}


def test_corrupt_file_is_reported_and_the_rest_complete(corpus, reference, logmel_bundle, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(corpus.rglob("*.wav"))[:5]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, folder, "--format", "jsonl", "-o", out, "--jobs", "2")
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr.decode()
    assert any(line.startswith("audiotok: warning: ") and "corrupt.wav" in line for line in err)
    assert err[-1] == f"audiotok: error: 1 of 6 files failed, listed in {tmp_path / 'units.errors.jsonl'} " \
                      "(the others are done; run again to retry them)"
    expected = {str(folder / p.name): reference[str(p)] for p in good}
    assert units_by_path(read_records(out)) == expected
    errors = read_records(tmp_path / "units.errors.jsonl")
    assert [e["path"] for e in errors] == [str(folder / "corrupt.wav")]
    assert "not a readable audio file" in errors[0]["error"]

    (folder / "corrupt.wav").unlink()  # fixed: the next run retries nothing else and clears the error list
    again = run_cli("tokenize", logmel_bundle, folder, "--format", "jsonl", "-o", out)
    assert again.returncode == 0 and "5 of 5 files already done" in again.stderr.decode()
    assert units_by_path(read_records(out)) == expected
    assert not (tmp_path / "units.errors.jsonl").exists()


def test_resuming_with_other_settings_is_refused(corpus, logmel_bundle, tmp_path):
    files = sorted(corpus.rglob("*.wav"))[:2]
    out = tmp_path / "units.jsonl"
    assert run_cli("tokenize", logmel_bundle, *files, "--format", "jsonl", "-o", out).returncode == 0
    before = out.read_bytes()
    result = run_cli("tokenize", logmel_bundle, *files, "--format", "jsonl", "--dedup", "-o", out)
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1].startswith(
        f"audiotok: error: {out} was made with other settings (dedup=False)")
    assert out.read_bytes() == before
    fresh = run_cli("tokenize", logmel_bundle, *files, "--format", "jsonl", "--dedup", "-o", out, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr.decode()
    assert all("durations" in r for r in read_records(out)) and len(read_records(out)) == 2


def test_manifest_lists_the_same_records_as_the_folder(corpus, reference, logmel_bundle, tmp_path):
    import soundfile as sf

    files = sorted(corpus.rglob("*.wav"))[:6]
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{corpus}\n" + "".join(f"{p.relative_to(corpus)}\t{sf.info(p).frames}\n" for p in files)
                        + "missing/gone.wav\t16000\n")
    listed = list_corpus([f"@{manifest}"])
    assert [c.path for c in listed] == [str(p) for p in files] + [str(corpus / "missing/gone.wav")]
    assert listed[0].n_samples == sf.info(files[0]).frames
    out = tmp_path / "units.jsonl"
    result = run_cli("tokenize", logmel_bundle, f"@{manifest}", "--format", "jsonl", "-o", out)
    assert result.returncode == 1  # the stale manifest line fails alone
    assert "gone.wav: no such file" in (tmp_path / "units.errors.jsonl").read_text()
    assert units_by_path(read_records(out)) == {str(p): reference[str(p)] for p in files}


def test_bad_file_list_is_one_clear_error(tmp_path, logmel_bundle):
    manifest = tmp_path / "bad.tsv"
    manifest.write_text("/data\nclip.wav\tnot-a-number\n")
    result = run_cli("tokenize", logmel_bundle, f"@{manifest}")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (f"audiotok: error: @{manifest}:2: sample count 'not-a-number' "
                                             "is not a non-negative integer")
    missing = run_cli("tokenize", logmel_bundle, f"@{tmp_path / 'none.tsv'}")
    assert missing.stderr.decode().strip() == f"audiotok: error: @{tmp_path / 'none.tsv'}: no such file list"


@pytest.mark.parametrize("content, needle", [
    (b"/data\nclip.wav\t-5\n", ":2: sample count '-5' is not a non-negative integer"),
    (b"/data\nclip.wav\t" + b"9" * 40 + b"\n", ":2: sample count '" + "9" * 40 + "' is not a non-negative integer"),
    (b"/data\n" + b"a" * (1 << 20) + b".wav\n", ":2: a line of more than 65536 characters"),
    (b"/data\nok.wav\n\xff\xfe.wav\n", ": cannot read the file list ("),
    (b"", ": empty file list (line 1 must be the root folder)"),
])
def test_a_file_list_from_a_stranger_is_bounded_and_checked(content, needle, tmp_path):
    """Read line by line with a bound per line: a list with a gigabyte-long line costs one line's bound."""
    listed = tmp_path / "list.tsv"
    listed.write_bytes(content)
    with pytest.raises(AudioError) as info:
        list_corpus([f"@{listed}"])
    assert str(info.value).startswith(f"@{listed}") and needle in str(info.value), str(info.value)


def test_parallel_txt_keeps_input_order_and_fails_fast(corpus, reference, logmel_bundle, tmp_path):
    files = sorted(corpus.rglob("*.wav"))[:6]
    result = run_cli("tokenize", logmel_bundle, *files, "--jobs", "2")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in files]
    assert all(list(map(int, line.split("\t")[1].split())) == reference[str(p)] for line, p in zip(lines, files))

    bad = write_wav(tmp_path / "nan.wav", np.full(16_000, np.nan, np.float32))
    out = tmp_path / "out.txt"
    failed = run_cli("tokenize", logmel_bundle, *files, bad, "-o", out, "--jobs", "2")
    assert failed.returncode == 1
    assert failed.stderr.decode().strip().splitlines()[-1].startswith(f"audiotok: error: {bad}: NaN or Inf")
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["nan.wav"]


def test_a_file_audiotok_did_not_write_is_never_resumed_into(corpus, logmel_bundle, tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text('{"title": "my notes"}\n')
    result = run_cli("tokenize", logmel_bundle, sorted(corpus.rglob("*.wav"))[0], "--format", "jsonl", "-o", out)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"audiotok: error: {out} exists and does not hold audiotok records: choose another -o")
    assert out.read_text() == '{"title": "my notes"}\n'
    forced = run_cli("tokenize", logmel_bundle, sorted(corpus.rglob("*.wav"))[0], "--format", "jsonl", "-o", out,
                     "--overwrite")  # --overwrite replaces audiotok's records only
    assert forced.returncode == 1 and forced.stderr.decode().strip() == (
        f"audiotok: error: {out} exists and does not hold audiotok records; --overwrite would replace it: "
        "move it away or choose another -o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]
    assert out.read_text() == '{"title": "my notes"}\n'
