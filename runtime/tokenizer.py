"""The tokenizer: audio in, one unit id per 20 ms frame out, with onnxruntime only."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np

from .audio.decode import array_blocks, file_blocks
from .constants import HOP_SAMPLES, RECEPTIVE_FIELD_SAMPLES, SAMPLE_RATE, frame_count
from .errors import AudioError, BundleError, SettingsError
from .process.interrupt import stoppable
from .process.memory_limit import memory_message
from .process.native_stderr import Captured, captured_stderr, library_message
from .audio.preprocess import Preprocess, prepared_blocks
from .bundle.session import INPUT_NAME, OUTPUT_NAME, open_session
from .stream import Stream, StreamSettings, default_lengths
from .stream_cache import CachedEncoder, check_stream_signature
from .stream_target import CACHED_LADDER, KV_LADDER, Prediction, calibrate, calibrate_cached, calibrate_kv, choose, latency_target
from .windowing import OFFLINE_POLICY, WindowPolicy, Windower, one_pass_samples

AudioInput = str | os.PathLike | np.ndarray


def checked_units(output: np.ndarray, n_samples: int, k: int, source: str) -> np.ndarray:
    """``output[0]`` as int64 when it is what a bundle promises for ``n_samples``: integer ids shaped
    ``[1, frame_count(n_samples)]``, each in ``0..k-1``; a BundleError naming ``source`` otherwise."""
    output = np.asarray(output)
    frames = frame_count(n_samples)
    if not np.issubdtype(output.dtype, np.integer):
        raise BundleError(f"{source}: the graph's '{OUTPUT_NAME}' output is {output.dtype}, not integer unit ids")
    if output.shape != (1, frames):
        raise BundleError(f"{source}: the graph gave '{OUTPUT_NAME}' shaped {list(output.shape)} for {n_samples} "
                          f"samples; a bundle gives [1, {frames}] (one unit per 20 ms frame)")
    units = output[0]
    if units.size and (int(units.min()) < 0 or int(units.max()) >= k):
        raise BundleError(f"{source}: the graph gave unit ids in {int(units.min())}..{int(units.max())}, "
                          f"outside its manifest's 0..{k - 1} (k={k})")
    return units.astype(np.int64, copy=False)


class Tokenizer:
    """A loaded bundle. ``Tokenizer("bundle.onnx").tokenize("speech.flac")`` gives int64 unit ids.

    Inputs of different lengths are never padded into one batch: these encoders take no attention
    mask and some normalise over the whole input, so padding would change the units.
    """

    def __init__(self, bundle: str | os.PathLike, *, providers: list[str] | str | None = None,
                 threads: int | None = None, max_pass_seconds: float | None = None,
                 policy: WindowPolicy = OFFLINE_POLICY, channel: int | str | None = None,
                 trim_db: float | None = None) -> None:
        """``max_pass_seconds``: inputs up to this long run in one pass, giving exactly the encoder's
        units for the whole input; longer ones run in ``policy``'s windows. None keeps the policy's
        limit (30 s for the default policy). ``channel`` (``"mean"`` or an index) overrides the
        bundle's; ``trim_db`` trims leading and trailing silence (off by default, as audioTokenizer
        tokenizes). The frame rule is the bundle's."""
        if max_pass_seconds is not None:
            policy = replace(policy, one_pass_samples=one_pass_samples(max_pass_seconds))
        self.path = Path(bundle)
        longest = max(policy.one_pass_samples // HOP_SAMPLES,
                      policy.chunk_frames + policy.context_frames + policy.lookahead_frames)
        self.session, self.manifest = open_session(bundle, providers=providers, threads=threads, run_frames=longest)
        if self.manifest.stream_entry is not None:
            check_stream_signature(self.session, self.manifest.stream_entry, str(self.path))
        self.policy = policy
        self.preprocess = Preprocess(channel=self.manifest.channel if channel is None else channel,
                                     trim_db=trim_db, pad_last_frame=self.manifest.frame_rule == "pad")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def units_for_window(self, samples: np.ndarray) -> np.ndarray:
        """Run the graph once on 16 kHz mono samples; one unit per frame, none under 400 samples.

        The output is checked before anyone sees it (see :func:`checked_units`): a bundle from a
        stranger must fail with its own name, not hand out ids that are not units.
        """
        if len(samples) < RECEPTIVE_FIELD_SAMPLES:
            return np.zeros(0, np.int64)
        batch = np.ascontiguousarray(samples, dtype=np.float32)[None, :]
        return checked_units(self._run_graph(batch), len(samples), self.manifest.k, str(self.path))

    def _run_graph(self, batch: np.ndarray) -> np.ndarray:
        return self.run_outputs([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def run_outputs(self, outputs: list[str], feeds: dict[str, np.ndarray], *,
                    interruptible: bool = True) -> list[np.ndarray]:
        """One session run with onnxruntime's own stderr lines captured: dropped, or the error's reason.

        ``interruptible``: Ctrl-C stops the run at once (:mod:`interrupt`). A cached stream's windows
        run with it off: each is short, and one stopped half-way would lose the units of the windows
        its accept() had already run (the stream command flushes on Ctrl-C instead)."""
        noise = Captured()
        try:
            # stoppable innermost: the signal's Python handler runs as the run ends, in stoppable's exit,
            # so captured_stderr still gets to put fd 2 back
            with captured_stderr() as noise, (stoppable() if interruptible else nullcontext()) as run_options:
                return self.session.run(outputs, feeds, run_options)
        except Exception as exc:  # onnxruntime's private exception types (a node failed, out of memory)
            too_big = memory_message(str(exc), self.session)
            if too_big is not None:
                raise BundleError(f"{self.path}: {too_big}") from None
            seconds = feeds[INPUT_NAME].shape[-1] / SAMPLE_RATE
            raise BundleError(f"{self.path}: the graph failed on {seconds:.2f} s of audio "
                              f"({library_message(exc, noise)})") from None

    def default_lengths(self, kv_cache: bool = True) -> tuple[int, int, int]:
        """(chunk, lookahead, context) ms of this bundle's default stream (with its attention cache, where
        it has one, unless ``kv_cache`` is False)."""
        entry = self.manifest.stream_entry
        return default_lengths(entry is not None, kv_cache and entry is not None and entry.kv is not None)

    def cached_encoder(self, kv_cache: bool = True) -> CachedEncoder | None:
        """A stream's window runner through the bundle's stream entry point (with its attention cache,
        where the bundle has one, unless ``kv_cache`` is False); None for bundles without one."""
        entry = self.manifest.stream_entry
        if entry is None:
            return None

        def check(output: np.ndarray, n_samples: int) -> np.ndarray:
            return checked_units(output, n_samples, self.manifest.k, str(self.path))

        def run(outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return self.run_outputs(outputs, feeds, interruptible=False)

        return CachedEncoder(entry, run, check, str(self.path), kv_cache=kv_cache)

    def settings_for_latency(self, latency_ms: float, sample_rate: int = SAMPLE_RATE, *,
                             kv_cache: bool = True) -> Prediction:
        """The stream settings that keep per-frame p95 latency within ``latency_ms`` on this device,
        with their predicted latency and cost (:mod:`~audiotok.runtime.stream_target`: about a
        second of calibration on this bundle). A SettingsError says what the device can do when
        the target is out of reach."""
        target = latency_target(latency_ms, "latency_ms")
        cached = self.cached_encoder(kv_cache)
        if cached is None:
            return choose(target, calibrate(self.units_for_window), sample_rate)
        if cached.uses_kv:
            return choose(target, calibrate_kv(cached), sample_rate, KV_LADDER)
        return choose(target, calibrate_cached(cached), sample_rate, CACHED_LADDER)

    def stream(self, *, chunk_ms: float | None = None, lookahead_ms: float | None = None,
               context_ms: float | None = None, sample_rate: int = SAMPLE_RATE,
               settings: StreamSettings | None = None, latency_ms: float | None = None,
               kv_cache: bool = True) -> Stream:
        """A :class:`~audiotok.runtime.stream.Stream` over this bundle for live audio at ``sample_rate``.

        Lengths are milliseconds on the 20 ms frame grid; bad values raise SettingsError here,
        before any audio is read. Lengths not given are this bundle's defaults
        (:func:`~audiotok.runtime.stream.default_lengths`: with the attention cache 240/60/1920, with
        a stream entry point without it 240/60/960, without one 640/80/640). ``settings`` passes them as one :class:`StreamSettings` instead
        (then the keyword lengths stay unset). ``latency_ms`` chooses the lengths instead, for a
        per-frame p95 latency target on this device (:meth:`settings_for_latency`). The channel
        and last-frame rule are the bundle's: a ``settings`` that asks for others is refused rather
        than silently overridden. Bundles with a stream entry point compute each CNN frame once
        (:mod:`~audiotok.runtime.stream_cache`); with its attention cache (``kv_cache``, on by default
        where the bundle has one) the transformer runs on chunk + lookahead frames only, attending to
        the keys and values the context's frames had when they were emitted: docs/streaming.md
        measures its agreement with offline units. ``kv_cache=False`` reruns the transformer on the
        whole window (then a window covering the input gives offline units exactly).
        """
        bundle = {"channel": self.preprocess.channel, "pad_last_frame": self.preprocess.pad_last_frame}
        lengths = (chunk_ms, lookahead_ms, context_ms)
        lengths_given = any(v is not None for v in lengths)
        if latency_ms is not None:
            if settings is not None or lengths_given:
                raise SettingsError("pass either latency_ms= or the stream's lengths, not both")
            settings = self.settings_for_latency(latency_ms, sample_rate, kv_cache=kv_cache).settings
        elif settings is None:
            defaults = self.default_lengths(kv_cache)
            settings = StreamSettings(*(d if v is None else v for v, d in zip(lengths, defaults)), sample_rate)
        elif lengths_given or sample_rate != SAMPLE_RATE:
            raise SettingsError("pass the stream's lengths and rate either as settings= or as keywords, not both")
        for name, value in bundle.items():
            given = getattr(settings, name)
            if given != value and given != getattr(StreamSettings, name):
                raise SettingsError(f"stream settings ask for {name}={given!r}, but {self.path} was exported with "
                                    f"{name}={value!r}")
        return Stream(self.units_for_window, replace(settings, **bundle), cached=self.cached_encoder(kv_cache))

    def tokenize(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Units of a file path, or of samples (float or int PCM, ``(n,)`` or ``(n, channels)``).

        Arrays need their ``sample_rate``; files carry their own. Audio is mixed to mono (or one
        channel is taken) and resampled to 16 kHz with soxr, then trimmed and padded as this
        tokenizer's :attr:`preprocess` says. Audio shorter than 400 samples gives zero units.
        """
        return self.tokenize_with_offset(audio, sample_rate)[0]

    def tokenize_with_offset(self, audio: AudioInput, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Units, and the 16 kHz sample the first of them starts at (not 0 only when silence was trimmed)."""
        channel = self.preprocess.channel
        if isinstance(audio, (str, os.PathLike)):
            if sample_rate is not None:
                raise TypeError("sample_rate is read from the file; pass it only with an array")
            source = str(audio)

            def open_blocks():
                return file_blocks(audio, channel=channel)
        else:
            if sample_rate is None:
                raise TypeError("tokenize(samples) needs sample_rate=...")
            source = "samples"

            def open_blocks():
                return array_blocks(audio, sample_rate, channel=channel)
        offset, blocks = prepared_blocks(open_blocks, self.preprocess)
        return self.tokenize_blocks(blocks, source=source), offset

    def tokenize_blocks(self, blocks: Iterable[np.ndarray], *, source: str = "audio") -> np.ndarray:
        """Units of a stream of 16 kHz mono float32 blocks (what :mod:`audio` yields)."""
        windower = Windower(self.policy, self.units_for_window)
        pieces: list[np.ndarray] = []
        received = 0
        for block in blocks:
            received += len(block)
            pieces.extend(units for _, units in windower.push(block))
        if received == 0:
            raise AudioError(f"{source}: empty audio (no samples)")
        pieces.extend(units for _, units in windower.finish())
        return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
