"""Streaming: blocks in, final units out, on the offline frame grid; and `audiotok stream` end to end.

The invariants: with `logmel` (each frame sees only its own 400 samples) streamed units equal
offline units exactly for any block and chunk size; with any encoder, context and lookahead that
cover the whole input give offline units exactly; frame counts always equal offline; every frame
is emitted once, in order. The microphone path runs for real, through PortAudio and ALSA's file
plugin (a headless "microphone" that plays a raw file).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiotok.runtime import SettingsError, Tokenizer
from audiotok.runtime.constants import frame_count
from audiotok.runtime.stream import DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_MS, Stream, StreamSettings
from audiotok.runtime.stream_target import CACHED_LADDER, LADDER
from audiotok.runtime.unit_runs import dedup
from audiotok.runtime.windowing import plan_windows
from conftest import ctrl_c_reaches_it, run_cli, write_wav

RATE = 16_000


def streamed(stream, samples: np.ndarray, block: int) -> tuple[np.ndarray, list[int]]:
    """Feed ``samples`` in blocks; return all units and the first frame of each emitted chunk."""
    chunks = [c for i in range(0, len(samples), block) for c in stream.accept(samples[i:i + block])]
    chunks += stream.flush()
    units = np.concatenate([c.units for c in chunks]) if chunks else np.zeros(0, np.int64)
    starts = [c.frame for c in chunks]
    assert starts == list(np.cumsum([0] + [len(c.units) for c in chunks])[:-1]), "frames not contiguous"
    return units, starts


@pytest.fixture(scope="module")
def logmel(logmel_bundle) -> Tokenizer:
    return Tokenizer(logmel_bundle)


@pytest.fixture(scope="module")
def speech5(speech_16k) -> np.ndarray:
    return speech_16k[: 5 * RATE]


# --- logmel: exact parity for any block and chunk size ------------------------------------------

@pytest.mark.parametrize("chunk_ms, lookahead_ms, context_ms",
                         [(20, 0, 0), (60, 20, 40), (320, 80, 960), (1000, 0, 200), (640, 80, 960)])
@pytest.mark.parametrize("block", [7, 320, 1111, 16_000])
def test_logmel_stream_equals_offline(logmel, speech5, block, chunk_ms, lookahead_ms, context_ms):
    stream = logmel.stream(chunk_ms=chunk_ms, lookahead_ms=lookahead_ms, context_ms=context_ms)
    units, starts = streamed(stream, speech5, block)
    offline = logmel.tokenize(speech5, sample_rate=RATE)
    assert np.array_equal(units, offline)
    assert starts == list(range(0, len(offline), chunk_ms // 20))


@pytest.mark.parametrize("setting", sorted(set(LADDER) | set(CACHED_LADDER)))
@pytest.mark.parametrize("block", [333, 16_000])
def test_every_latency_setting_streams_offline_units(logmel, speech5, block, setting):
    """The settings --latency-ms chooses from: every frame once, in order, logmel units exact."""
    units, starts = streamed(logmel.stream(settings=StreamSettings(*setting)), speech5, block)
    offline = logmel.tokenize(speech5, sample_rate=RATE)
    assert np.array_equal(units, offline)
    assert starts == list(range(0, len(offline), setting[0] // 20))


def test_stream_accepts_a_settings_object(logmel, speech5):
    """settings=StreamSettings(...) gives the same stream as the keywords it stands for."""
    keywords, _ = streamed(logmel.stream(chunk_ms=100, lookahead_ms=40, context_ms=60, sample_rate=8000),
                           speech5[::2], 333)
    settings = StreamSettings(chunk_ms=100, lookahead_ms=40, context_ms=60, sample_rate=8000)
    units, _ = streamed(logmel.stream(settings=settings), speech5[::2], 333)
    assert np.array_equal(units, keywords) and len(units) > 100
    with pytest.raises(SettingsError, match="either as settings= or as keywords"):
        logmel.stream(settings=settings, chunk_ms=60)
    with pytest.raises(SettingsError, match="pad_last_frame=True"):
        logmel.stream(settings=StreamSettings(pad_last_frame=True))


def test_logmel_stream_one_sample_at_a_time(logmel, speech5):
    clip = speech5[: RATE]
    units, _ = streamed(logmel.stream(chunk_ms=100, lookahead_ms=40, context_ms=100), clip, 1)
    assert np.array_equal(units, logmel.tokenize(clip, sample_rate=RATE))


@pytest.mark.parametrize("rate, block", [(22_050, 441), (44_100, 1000), (8_000, 33)])
def test_logmel_stream_resamples_like_offline(logmel, speech5, rate, block):
    """Any input rate: soxr's streaming resampler gives the same 16 kHz samples whatever the blocks."""
    n = int(len(speech5) * rate / RATE)
    audio = np.interp(np.arange(n) * RATE / rate, np.arange(len(speech5)), speech5).astype(np.float32)
    stereo_int16 = (np.stack([audio, audio * 0.5], axis=1) * 32767).astype(np.int16)
    units, _ = streamed(logmel.stream(sample_rate=rate), stereo_int16, block)
    assert np.array_equal(units, logmel.tokenize(stereo_int16, sample_rate=rate))


@pytest.mark.parametrize("rate", [16_000, 44_100])
@pytest.mark.parametrize("block", [100, 4_000])
@pytest.mark.parametrize("seconds", [0.0249, 0.025, 0.0449, 0.045, 1.0, 3.3337])
def test_frame_counts_equal_offline(logmel, speech5, rate, block, seconds):
    n = int(round(seconds * rate))
    audio = np.resize(speech5, n)
    units, _ = streamed(logmel.stream(chunk_ms=60, lookahead_ms=20, context_ms=40, sample_rate=rate), audio, block)
    assert len(units) == len(logmel.tokenize(audio, sample_rate=rate))
    if rate == RATE:
        assert len(units) == frame_count(n)


# --- state, reset, input types -------------------------------------------------------------------

def test_state_reset_and_flush(logmel, speech5):
    stream = logmel.stream(chunk_ms=200, lookahead_ms=100, context_ms=0)
    first = stream.accept(speech5[:8000])  # 0.5 s: frames 0..23 exist; chunk 0 needs frames up to 15
    state = stream.state
    assert [c.frame for c in first] == [0] and len(first[0].units) == 10
    assert (state.samples_accepted, state.samples_16k, state.frames_emitted) == (8000, 8000, 10)
    assert state.frames_pending == frame_count(8000) - 10 and not state.finished
    stream.reset()
    assert stream.state.samples_accepted == 0 and stream.state.frames_emitted == 0
    units, _ = streamed(stream, speech5, 500)
    assert np.array_equal(units, logmel.tokenize(speech5, sample_rate=RATE))
    assert stream.state.finished and stream.state.frames_pending == 0
    assert stream.flush() == []
    with pytest.raises(RuntimeError, match="reset"):
        stream.accept(speech5[:100])


def test_int16_and_multichannel_blocks(logmel, speech5):
    pcm = (speech5 * 32767).astype(np.int16)
    mono, _ = streamed(logmel.stream(), pcm, 1234)
    stereo, _ = streamed(logmel.stream(), np.stack([pcm, pcm], axis=1), 999)
    offline = logmel.tokenize(pcm, sample_rate=RATE)
    assert np.array_equal(mono, offline) and np.array_equal(stereo, offline)


@pytest.mark.parametrize("kwargs, message", [
    (dict(chunk_ms=0), "chunk must be at least 20 ms"),
    (dict(chunk_ms=10), "chunk must be at least 20 ms"),
    (dict(chunk_ms=250), "chunk 250 ms is not a whole number of 20 ms frames; use 240 or 260"),
    (dict(lookahead_ms=-20), "lookahead must not be negative, got -20 ms"),
    (dict(context_ms=-1), "context must not be negative"),
    (dict(context_ms=30), "context 30 ms is not a whole number of 20 ms frames; use 20 or 40"),
    (dict(chunk_ms=float("nan")), "chunk must be a number of milliseconds"),
    (dict(sample_rate=0), "sample rate must be a positive whole number of Hz, got 0"),
    (dict(sample_rate=44100.5), "sample rate must be a positive whole number of Hz"),
])
def test_settings_that_cannot_work(logmel, kwargs, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        logmel.stream(**kwargs)


# --- transformers encoders: full context is exact; windows are normalised on their own -----------

@pytest.fixture(scope="module", params=["hubert", "wav2vec2"])
def tiny(request) -> Tokenizer:
    """conftest's shared tiny bundles: HuBERT (group-norm CNN) at layer 2 with 30 centroids drawn from its
    features, wav2vec2 (layer-norm CNN, normalized waveform) at layer 2 with 100."""
    bundle = (request.getfixturevalue("hubert_stream_bundle") if request.param == "hubert"
              else request.getfixturevalue("wav2vec2_stream_bundles")["yes"])
    tokenizer = Tokenizer(bundle)
    assert tokenizer.manifest.normalization == ("utterance" if request.param == "wav2vec2" else "none")
    return tokenizer


@pytest.mark.parametrize("chunk_ms, block", [(100, 500), (640, 3_333), (2_000, 16_000)])
def test_context_covering_the_input_gives_offline_units(tiny, speech_16k, chunk_ms, block):
    clip = speech_16k[: 4 * RATE]
    stream = tiny.stream(chunk_ms=chunk_ms, lookahead_ms=4_000, context_ms=4_000)
    units, _ = streamed(stream, clip, block)
    assert np.array_equal(units, tiny.tokenize(clip, sample_rate=RATE))


@pytest.mark.parametrize("setting", LADDER[::3])
def test_every_frame_once_in_order_with_a_transformer_encoder(tiny, speech_16k, setting):
    clip = speech_16k[: 3 * RATE]
    units, starts = streamed(tiny.stream(settings=StreamSettings(*setting)), clip, 1_234)
    assert len(units) == frame_count(len(clip)) and starts == list(range(0, len(units), setting[0] // 20))


def test_each_window_is_computed_on_its_own_samples(tiny, speech_16k):
    """Without the stream entry point (fp16, int8 and older bundles stream this way), short windows: the
    stream's units are those of each window run alone (normalised on its own statistics when the bundle
    normalises), whatever the block size."""
    clip = speech_16k[: 4 * RATE]
    stream = Stream(tiny.units_for_window, StreamSettings(320, 80, 480))  # no stream entry point: recomputed
    expected = np.concatenate([
        tiny.units_for_window(clip[w.sample_start:w.sample_stop])[w.emit_start - w.start: w.emit_stop - w.start]
        for w in plan_windows(stream.policy, len(clip))])
    for block in (320, 4_999):
        stream.reset()
        units, _ = streamed(stream, clip, block)
        assert np.array_equal(units, expected)
    assert len(units) == len(tiny.tokenize(clip, sample_rate=RATE))


# --- the command ---------------------------------------------------------------------------------

def _units(stdout: bytes) -> list[int]:
    return [int(u) for u in stdout.decode().split()]


@pytest.fixture(scope="module")
def pcm(speech_16k) -> np.ndarray:
    """4 s of speech as int16, a whole number of 10 ms."""
    return (speech_16k[: 4 * RATE] * 32767).astype(np.int16)


def test_stdin_pipe_equals_offline(logmel_bundle, logmel, pcm):
    result = run_cli("stream", logmel_bundle, "--input", "-", input=pcm.astype("<i2").tobytes())
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    offline = logmel.tokenize(pcm, sample_rate=RATE)
    assert _units(result.stdout) == offline.tolist()
    assert len(lines) == -(-len(offline) // (DEFAULT_CHUNK_MS // 20))  # one line per chunk


def test_stdin_f32le_stereo_at_another_rate(logmel_bundle, logmel, speech_16k):
    audio = np.stack([speech_16k[:2 * RATE], -speech_16k[:2 * RATE]], axis=1)[::2] * 0.5  # 8 kHz stereo
    audio = np.ascontiguousarray(audio, dtype="<f4")
    result = run_cli("stream", logmel_bundle, "--input", "-", "--f32le", "--rate", "8000", "--channels", "2",
                     input=audio.tobytes())
    assert result.returncode == 0, result.stderr.decode()
    assert _units(result.stdout) == logmel.tokenize(audio, sample_rate=8000).tolist()


def test_stdin_odd_trailing_byte_flushes_what_is_complete(logmel_bundle, logmel, pcm):
    result = run_cli("stream", logmel_bundle, "--input", "-", input=pcm.astype("<i2").tobytes() + b"\x07")
    assert result.returncode == 0
    assert _units(result.stdout) == logmel.tokenize(pcm, sample_rate=RATE).tolist()
    assert "ignored its last 1 byte(s)" in result.stderr.decode()


def test_seconds_jsonl_and_dedup(logmel_bundle, logmel, pcm):
    result = run_cli("stream", logmel_bundle, "--input", "-", "--seconds", "2.5", "--format", "jsonl",
                     "--dedup", "--chunk-ms", "200", input=pcm.astype("<i2").tobytes())
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    offline = logmel.tokenize(pcm[: int(2.5 * RATE)], sample_rate=RATE)
    assert [r["frame"] for r in records] == list(range(0, len(offline), 10))
    assert sum(r["frames"] for r in records) == len(offline)
    shown, lengths = dedup(offline)
    assert [u for r in records for u in r["units"]] == shown.tolist()
    assert [s for r in records for s in r["starts"]] == np.r_[0, np.cumsum(lengths)[:-1]].tolist()


def test_file_input_equals_tokenize(logmel_bundle, speech_dir):
    wav = sorted(speech_dir.glob("*.wav"))[1]  # 22.05 kHz
    streamed_out = run_cli("stream", logmel_bundle, "--input", wav, "--chunk-ms", "320")
    offline = run_cli("tokenize", logmel_bundle, wav)
    assert streamed_out.returncode == 0 and offline.returncode == 0
    assert _units(streamed_out.stdout) == [int(u) for u in offline.stdout.decode().split("\t")[1].split()]


def test_audio_error_mid_stream_prints_the_frames_before_it(logmel_bundle, logmel, speech_16k, tmp_path):
    audio = speech_16k[: 3 * RATE].copy()
    audio[2 * RATE] = np.nan
    result = run_cli("stream", logmel_bundle, "--input", write_wav(tmp_path / "nan.wav", audio))
    assert result.returncode == 1
    assert result.stderr.decode().strip().endswith("nan.wav: NaN or Inf sample at 2.000 s")
    assert _units(result.stdout) == logmel.tokenize(audio[: 2 * RATE], sample_rate=RATE).tolist()


def test_ctrl_c_flushes_and_exits_zero(logmel_bundle, logmel, pcm):
    proc = subprocess.Popen([sys.executable, "-m", "audiotok", "stream", str(logmel_bundle), "--input", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_reaches_it)
    proc.stdin.write(pcm.astype("<i2").tobytes())
    proc.stdin.flush()  # stdin stays open: the stream waits for more audio
    chunk, lookahead = DEFAULT_CHUNK_MS // 20, DEFAULT_LOOKAHEAD_MS // 20  # logmel has a stream entry point
    full_chunks = (frame_count(len(pcm)) - lookahead) // chunk  # those whose lookahead has arrived
    lines = [proc.stdout.readline() for _ in range(full_chunks)]
    time.sleep(0.5)  # let it read the rest and wait on the pipe
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()  # through the reader readline() used: it may hold lines read ahead
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert _units(b"".join(lines) + rest) == logmel.tokenize(pcm, sample_rate=RATE).tolist()


@pytest.mark.parametrize("args, message", [
    (["--chunk-ms", "10"], "chunk must be at least 20 ms (one 320-sample frame), got 10 ms"),
    (["--lookahead-ms", "-40"], "lookahead must not be negative, got -40 ms"),
    (["--context-ms", "50"], "context 50 ms is not a whole number of 20 ms frames; use 40 or 60"),
    (["--seconds", "0"], "--seconds must be positive, got 0"),
    (["--rate", "0", "--input", "-"], "--rate must be 1000..768000 Hz, got 0"),
    (["--rate", "10000000", "--input", "-"], "--rate must be 1000..768000 Hz, got 10000000"),
    (["--channels", "100000000", "--input", "-"], "--channels must be 1..64, got 100000000"),
    (["--f32le"], "--f32le describes raw PCM on stdin; use it with --input -"),
    (["--latency-ms", "0"], "--latency-ms must be positive, got 0"),
    (["--latency-ms", "-5"], "--latency-ms must be positive, got -5"),
    (["--latency-ms", "abc"], "--latency-ms must be a number of milliseconds, got 'abc'"),
    (["--latency-ms", "50"], "--latency-ms 50 is below what any stream setting can reach: the shortest "
                             "(chunk/lookahead/context 80/40/160 ms) waits 97 ms per frame (p95) before any compute"),
    (["--latency-ms", "250", "--chunk-ms", "320"],
     "--latency-ms chooses --chunk-ms, --lookahead-ms and --context-ms; pass one or the other"),
])
def test_bad_settings_fail_before_any_audio_is_read(tmp_path, args, message):
    """The default input is the microphone, which does not exist here: the settings error comes first."""
    result = run_cli("stream", tmp_path / "missing.onnx", *args, env={"HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [f"audiotok: error: {message}"]


def test_a_target_this_device_cannot_reach_fails_before_any_audio_is_read(logmel_bundle, tmp_path):
    """97 ms is the shortest setting's wait with free compute: any real compute puts it out of reach.
    The calibration runs on the bundle; the microphone (absent here) is never opened."""
    result = run_cli("stream", logmel_bundle, "--latency-ms", "97", env={"HOME": str(tmp_path)})
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("audiotok: error: --latency-ms 97 is below what this device can do with this "
                               "bundle: at best chunk/lookahead/context 80/40/160 ms: per-frame p95 ~")


def test_latency_target_streams_offline_units(logmel_bundle, logmel, pcm):
    result = run_cli("stream", logmel_bundle, "--input", "-", "--latency-ms", "300", input=pcm.astype("<i2").tobytes())
    assert result.returncode == 0, result.stderr.decode()
    assert _units(result.stdout) == logmel.tokenize(pcm, sample_rate=RATE).tolist()
    said = result.stderr.decode().strip().splitlines()
    assert len(said) == 1 and said[0].startswith("audiotok: --latency-ms 300: chunk/lookahead/context ")


# --- the microphone, through PortAudio and ALSA's file plugin ------------------------------------

def _portaudio() -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.fail("the PortAudio library is not installed (apt-get install libportaudio2): the microphone path cannot be tested")


@pytest.fixture
def mic_home(tmp_path, pcm) -> Path:
    """A HOME whose .asoundrc makes ALSA's default capture device play ``pcm`` (see shared/mic-emulation.md)."""
    _portaudio()
    raw = tmp_path / "mic.raw"
    raw.write_bytes(pcm.astype("<i2").tobytes())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        f'pcm.filemic {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{raw}"\n format "raw"\n}}\n'
        'pcm.!default { type plug; slave.pcm "filemic" }\n')
    return home


def test_microphone_equals_stdin_and_offline(logmel_bundle, logmel, pcm, mic_home):
    seconds = f"{len(pcm) / RATE:g}"  # exactly the file: the plugin returns silence after it
    mic = run_cli("stream", logmel_bundle, "--seconds", seconds, env={"HOME": str(mic_home)})
    assert mic.returncode == 0, mic.stderr.decode()
    pipe = run_cli("stream", logmel_bundle, "--input", "-", input=pcm.astype("<i2").tobytes())
    offline = logmel.tokenize(pcm, sample_rate=RATE).tolist()
    assert _units(mic.stdout) == _units(pipe.stdout) == offline
    assert "listening on input device" in mic.stderr.decode()


def test_unknown_microphone_lists_the_devices(logmel_bundle, mic_home):
    result = run_cli("stream", logmel_bundle, "--device", "nosuch", env={"HOME": str(mic_home)})
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("audiotok")]
    assert errors == ["audiotok: error: no input device 'nosuch'; input devices: 0 'filemic', 1 'default'"]
