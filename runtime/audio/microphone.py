"""Capturing from a microphone with sounddevice (PortAudio), for ``audiotok stream``.

PortAudio calls back from its own thread with each captured block. The callback only copies the
block into a bounded queue: inference there would block the audio thread and lose audio. When
the host drops audio (input overflow) or the queue is full because inference fell behind, the
block is counted as an overrun, so the user learns that units are missing instead of silently
getting fewer.

sounddevice is imported here, when a microphone is opened, so the rest of the runtime works
where PortAudio is not installed.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from ..constants import SAMPLE_RATE
from ..errors import AudioError

BLOCK_SECONDS = 0.02  # one 20 ms frame per callback: the queue never holds back a chunk's last samples
QUEUE_SECONDS = 30.0  # audio buffered while inference catches up; beyond this, blocks are dropped
STALL_SECONDS = 5.0  # no audio for this long from a running device is an error, not a wait
SAMPLE_FORMAT = "int16"  # what microphones deliver natively; converted to float once, downstream


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the module is there, the PortAudio library is not
        raise AudioError(
            f"the microphone needs the sounddevice package and the PortAudio library ({exc}): "
            f"pip install sounddevice; on Debian/Ubuntu also apt-get install libportaudio2 "
            f"(or pipe raw PCM in with --input -)"
        ) from None
    return sounddevice


def input_devices(sd: ModuleType) -> list[tuple[int, str]]:
    """(index, name) of every device that can record."""
    return [(i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def _device_list(sd: ModuleType) -> str:
    found = input_devices(sd)
    return ", ".join(f"{i} {name!r}" for i, name in found) if found else "none"


def resolve_device(sd: ModuleType, device: str | None) -> int:
    """A device index from an index, a (unique part of a) name, or None for the default input."""
    if not input_devices(sd):
        raise AudioError("no input devices found (no microphone, or PortAudio cannot see the sound system)")
    wanted: int | str | None = int(device) if device is not None and device.strip().isdigit() else device
    try:
        return int(sd.query_devices(wanted, "input")["index"])
    except (ValueError, sd.PortAudioError) as exc:
        what = "no default input device" if device is None else f"no input device {device!r}"
        reason = str(exc).split("\n")[0]
        if "Multiple" in reason:
            what = f"input device {device!r} matches several devices"
        raise AudioError(f"{what}; input devices: {_device_list(sd)}") from None


def _choose_rate(sd: ModuleType, device: int, channels: int, rate: int | None) -> int:
    """The rate asked for, else 16 kHz when the device offers it, else the device's own default."""
    candidates = [rate] if rate else [SAMPLE_RATE, int(sd.query_devices(device)["default_samplerate"])]
    error = ""
    for candidate in candidates:
        try:
            sd.check_input_settings(device=device, samplerate=candidate, channels=channels, dtype=SAMPLE_FORMAT)
            return candidate
        except (ValueError, sd.PortAudioError) as exc:
            error = str(exc).split("\n")[0]
    name = sd.query_devices(device)["name"]
    raise AudioError(f"input device {device} {name!r} cannot record {candidates[0]} Hz with {channels} "
                     f"channel(s) ({error})")


class Microphone:
    """An open input device: ``with Microphone(...) as mic: for block in mic.blocks(): ...``.

    Blocks are int16 arrays shaped ``(frames, channels)`` at :attr:`rate`.
    """

    def __init__(self, device: str | None = None, *, rate: int | None = None, channels: int = 1) -> None:
        self._sd = sd = _sounddevice()
        self.device = resolve_device(sd, device)
        self.name = sd.query_devices(self.device)["name"]
        self.channels = channels
        self.rate = _choose_rate(sd, self.device, channels, rate)
        block = max(1, int(BLOCK_SECONDS * self.rate))
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, int(QUEUE_SECONDS / BLOCK_SECONDS)))
        self.overflows = 0  # blocks the host reported as overflowed (audio lost before it reached us)
        self.dropped = 0  # blocks dropped because the queue was full (inference fell behind)
        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.rate, channels=channels,
                                          dtype=SAMPLE_FORMAT, blocksize=block, callback=self._callback)
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioError(f"cannot open input device {self.device} {self.name!r}: {str(exc).splitlines()[0]}") \
                from None

    @property
    def overruns(self) -> int:
        return self.overflows + self.dropped

    def _callback(self, indata: np.ndarray, frames: int, time, status) -> None:  # PortAudio's thread
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped += 1

    def __enter__(self) -> Microphone:
        try:
            self._stream.start()
        except self._sd.PortAudioError as exc:
            self._stream.close()
            raise AudioError(f"cannot start input device {self.device} {self.name!r}: {exc}") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self._stream.stop()
        self._stream.close()

    def blocks(self) -> Iterator[np.ndarray]:
        """Captured blocks in order, for as long as the device runs."""
        waited = 0.0
        while True:
            try:
                yield self._queue.get(timeout=0.5)
                waited = 0.0
            except queue.Empty:
                waited += 0.5
                if not self._stream.active or waited >= STALL_SECONDS:
                    raise AudioError(f"input device {self.device} {self.name!r} stopped delivering audio") from None
