"""Reading phone alignments: TextGrids in their forms and encodings, TSV segments, frame labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from praatio import textgrid as tgio
from praatio.utilities.constants import Interval, Point

from audiotok.runtime.evaluation.alignments import AlignmentError, Alignments, Segments, read_textgrid, read_tsv

PHONES = [(0.0, 0.1, ""), (0.1, 0.25, "ʃ"), (0.25, 0.4, "aʊ"), (0.4, 0.55, "t"), (0.55, 0.7, "")]

SHORT_TEXTGRID = """File type = "ooTextFile"
Object class = "TextGrid"

0
0.7
<exists>
2
"IntervalTier"
"phones"
0
0.7
3
0
0.25
"ʃ"
0.25
0.4
"aʊ"
0.4
0.7
""
"TextTier"
"events"
0
0.7
1
0.3
"click"
"""


def write_grid(path: Path, fmt: str = "long_textgrid", with_points: bool = True) -> Path:
    grid = tgio.Textgrid(0.0, 0.7)
    grid.addTier(tgio.IntervalTier("phones", [Interval(*p) for p in PHONES if p[2]], 0.0, 0.7))
    if with_points:
        grid.addTier(tgio.PointTier("events", [Point(0.3, "click")], 0.0, 0.7))
    grid.save(str(path), format=fmt, includeBlankSpaces=True)
    return path


@pytest.mark.parametrize("fmt", ["long_textgrid", "short_textgrid"])
def test_textgrid_forms_read_the_phone_tier_with_utf8_names(tmp_path, fmt):
    segments = read_textgrid(write_grid(tmp_path / "a.TextGrid", fmt))
    assert segments.labels == ("ʃ", "aʊ", "t")  # blank intervals are gaps
    assert segments.starts.tolist() == [0.1, 0.25, 0.4] and segments.ends.tolist() == [0.25, 0.4, 0.55]


def test_hand_written_short_textgrid_with_a_point_tier(tmp_path):
    path = tmp_path / "b.TextGrid"
    path.write_text(SHORT_TEXTGRID, encoding="utf-8")
    assert read_textgrid(path).labels == ("ʃ", "aʊ")
    with pytest.raises(AlignmentError, match=r"b.TextGrid: tier 'events' is a point tier"):
        read_textgrid(path, "events")


@pytest.mark.parametrize("encoding, newline", [("utf-16", "\n"), ("utf-8", "\r\n"), ("utf-16", "\r\n"),
                                               ("utf-8-sig", "\n")])
def test_textgrid_encodings_and_line_ends(tmp_path, encoding, newline):
    text = write_grid(tmp_path / "src.TextGrid").read_text(encoding="utf-8")
    path = tmp_path / "c.TextGrid"
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    assert read_textgrid(path).labels == ("ʃ", "aʊ", "t")


def test_textgrid_problems_name_the_file(tmp_path):
    grid = write_grid(tmp_path / "d.TextGrid")
    with pytest.raises(AlignmentError) as err:
        read_textgrid(grid, "words")
    assert str(err.value) == f"{grid}: no tier 'words' (tiers: 'phones', 'events'); choose one with --tier"
    junk = tmp_path / "junk.TextGrid"
    junk.write_text("not a textgrid at all\n")
    with pytest.raises(AlignmentError, match=r"junk.TextGrid: not a TextGrid that can be read"):
        read_textgrid(junk)
    binary = tmp_path / "bin.TextGrid"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AlignmentError, match=r"bin.TextGrid: "):
        read_textgrid(binary)


def test_overlapping_textgrid_intervals_are_refused(tmp_path):
    text = SHORT_TEXTGRID.replace('0.25\n0.4\n"aʊ"', '0.2\n0.4\n"aʊ"')  # starts before ʃ ends at 0.25
    path = tmp_path / "e.TextGrid"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AlignmentError, match=r"e.TextGrid: "):
        read_textgrid(path)


def test_frame_labels_use_each_frame_centre():
    segments = Segments.build([(0.0, 0.03, "a"), (0.05, 0.1, "b")], "x")
    # frame centres (320 i + 200) / 16000: 0.0125, 0.0325, 0.0525, 0.0725, 0.0925, 0.1125 s
    assert segments.frame_labels(6) == ["a", None, "b", "b", "b", None]
    assert Segments.build([], "x").frame_labels(2) == [None, None]


def test_labels_past_the_audio_are_refused():
    segments = Segments.build([(0.0, 2.5, "a")], "grid.TextGrid")
    segments.check_duration(2.49, "a.wav")  # within a frame's rounding
    with pytest.raises(AlignmentError) as err:
        segments.check_duration(2.0, "a.wav")
    assert str(err.value) == "grid.TextGrid: label 'a' ends at 2.5 s, past the end of a.wav (2.000 s)"


def test_tsv_segments_matched_by_path_or_stem(tmp_path):
    tsv = tmp_path / "phones.tsv"
    tsv.write_bytes("path\tstart\tend\tlabel\r\n"
                    "corpus/a.wav\t0.1\t0.2\tʃ\r\n"
                    "corpus/a.wav\t0.0\t0.1\t\r\n"
                    "b\t0.0\t0.3\tx\r\n"
                    "\r\n"
                    "other.wav\t0\t1\ty\r\n"
                    "Bücher/naïve.flac\t0.5\t0.6\taʊ\r\n".encode("utf-8-sig"))
    found = read_tsv(tsv, ["corpus/a.wav", "speech/b.flac", "Bücher/naïve.flac"])
    assert set(found) == {"corpus/a.wav", "speech/b.flac", "Bücher/naïve.flac"}
    assert found["corpus/a.wav"].labels == ("ʃ",) and found["speech/b.flac"].ends.tolist() == [0.3]
    assert found["Bücher/naïve.flac"].labels == ("aʊ",)


@pytest.mark.parametrize("line, message", [
    ("a.wav\t0.5\tx\tp", ":1: start and end must be seconds"),
    ("a.wav\t0.5\t0.6", ":1: expected 'path<TAB>start_s<TAB>end_s<TAB>label'"),
    ("a.wav\tnan\t0.6\tp", ":1: start and end must be finite seconds"),
    ("a.wav\t0.0\t0.6\tp\na.wav\t0.5\t0.9\tq", " (a.wav): overlapping intervals 'p' 0-0.6 s and 'q' 0.5-0.9 s"),
    ("a.wav\t0.6\t0.5\tp", " (a.wav): interval 'p' at 0.6-0.5 s is not a valid time span"),
])
def test_bad_tsv_lines_name_the_file_and_line(tmp_path, line, message):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text(line + "\n")
    with pytest.raises(AlignmentError) as err:
        read_tsv(tsv, ["a.wav"])
    assert str(err.value) == f"{tsv}{message}" or str(err.value).startswith(f"{tsv}{message}")


def test_textgrid_folder_matches_by_stem_and_refuses_ambiguity(tmp_path):
    (tmp_path / "spk1").mkdir()
    write_grid(tmp_path / "spk1" / "utt1.TextGrid")
    alignments = Alignments(str(tmp_path), ["audio/utt1.flac", "audio/utt2.flac"])
    assert alignments.get("audio/utt1.flac").labels == ("ʃ", "aʊ", "t")
    assert alignments.get("audio/utt2.flac") is None
    (tmp_path / "spk2").mkdir()
    write_grid(tmp_path / "spk2" / "utt1.TextGrid")
    with pytest.raises(AlignmentError, match="2 TextGrids named 'utt1'"):
        Alignments(str(tmp_path), ["audio/utt1.flac"]).get("audio/utt1.flac")
    with pytest.raises(AlignmentError, match="no such alignment file or folder"):
        Alignments(str(tmp_path / "missing"), [])
    assert np.isclose(Alignments(str(tmp_path / "spk1" / "utt1.TextGrid"), []).get("x/utt1.wav").ends[-1], 0.55)


def test_tsv_lines_are_bounded(tmp_path):
    tsv = tmp_path / "huge.tsv"
    tsv.write_text("a.wav\t0\t1\t" + "x" * 100_000 + "\n")
    with pytest.raises(AlignmentError, match=r"huge.tsv:1: line longer than 65536 characters"):
        read_tsv(tsv, ["a.wav"])


def test_espeak_events_give_ordered_phones_over_the_speech():
    from aligned_speech import synthesize

    speech = synthesize("Peter Piper picked a peck of pickled peppers, how many did he pick?")
    starts, ends = [p[0] for p in speech.phones], [p[1] for p in speech.phones]
    assert len(speech.phones) > 30 and speech.rate > 0
    assert starts == sorted(starts) and all(a < b for a, b in zip(starts, ends)) and ends[-1] <= speech.duration
    assert all(b <= a2 for b, a2 in zip(ends, starts[1:]))  # no overlaps
    x = speech.samples.astype(np.float64)
    inside = np.zeros(len(x), bool)
    for a, b, _ in speech.phones:
        inside[int(a * speech.rate):int(b * speech.rate)] = True
    assert inside.mean() > 0.7 and np.sqrt(np.mean(x[inside] ** 2)) > 5 * np.sqrt(np.mean(x[~inside] ** 2))
