"""Speech with exact phone alignments, made by libespeak-ng itself (no downloads, no aligner).

espeak-ng synthesises phoneme by phoneme; initialised with phoneme events enabled, it reports each
phoneme's name and the audio sample where it starts as an event in the synthesis callback. A
phone's interval is [its start, the next event's start); pauses (espeak's ``_`` phonemes) become
unlabelled gaps, as silence is in a forced aligner's output. The result is written as a wav and a
Praat TextGrid (tier ``phones``, as Montreal Forced Aligner writes) with praatio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
INITIALIZE_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
POS_CHARACTER = 1
CHARS_UTF8 = 1
PAUSE_PREFIX = "_"  # espeak's pause phonemes: _, _:, _!, ...


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class AlignedSpeech:
    samples: np.ndarray  # int16 at ``rate``
    rate: int
    phones: list[tuple[float, float, str]]  # (start s, end s, IPA phone), pauses left out

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate


class _Espeak:
    """The library, initialised once per process (espeak-ng keeps global state)."""

    _instance: _Espeak | None = None

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng")
        assert name, "libespeak-ng is required for aligned speech (apt-get install espeak-ng)"
        self.lib = ctypes.CDLL(name)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        flags = INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT
        self.rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, flags)
        assert self.rate > 0, f"espeak_Initialize failed ({self.rate})"
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_synth)  # kept referenced while the library holds it
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_PHONEME:
                self._events.append((event.sample, event.id.string.decode("utf-8", "replace")))
            elif event.type in (EVENT_END, EVENT_MSG_TERMINATED):
                self._events.append((event.sample, PAUSE_PREFIX))
            i += 1
        return 0

    def synth(self, text: str, voice: str) -> AlignedSpeech:
        self._chunks, self._events = [], []
        assert self.lib.espeak_SetVoiceByName(voice.encode()) == 0, f"espeak-ng has no voice {voice!r}"
        data = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        assert status == 0, f"espeak_Synth failed ({status})"
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return AlignedSpeech(samples, self.rate, _intervals(self._events, len(samples), self.rate))


def _intervals(events: list[tuple[int, str]], n_samples: int, rate: int) -> list[tuple[float, float, str]]:
    """Phone intervals from (start sample, name) events: each phone lasts until the next event."""
    events = sorted(events, key=lambda e: e[0])
    phones = []
    for (start, name), (stop, _) in zip(events, events[1:] + [(n_samples, PAUSE_PREFIX)]):
        stop = min(stop, n_samples)
        if name.startswith(PAUSE_PREFIX) or not name or stop <= start:
            continue
        phones.append((start / rate, stop / rate, name))
    return phones


def synthesize(text: str, voice: str = "en") -> AlignedSpeech:
    """``text`` spoken by espeak-ng with each phone's interval as espeak-ng placed it."""
    return _Espeak.get().synth(text, voice)


def write_aligned(text: str, wav: Path, textgrid: Path, voice: str = "en") -> AlignedSpeech:
    """Write the speech (16-bit wav at espeak's rate) and its phones as a TextGrid tier ``phones``."""
    from praatio import textgrid as tgio
    from praatio.utilities.constants import Interval

    speech = synthesize(text, voice)
    sf.write(wav, speech.samples, speech.rate, subtype="PCM_16")
    grid = tgio.Textgrid(0.0, speech.duration)
    grid.addTier(tgio.IntervalTier("phones", [Interval(a, b, p) for a, b, p in speech.phones], 0.0, speech.duration))
    grid.save(str(textgrid), format="long_textgrid", includeBlankSpaces=True)
    return speech
