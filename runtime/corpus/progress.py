"""Progress of a corpus run: files, audio hours done, hours of audio per hour of wall time, ETA.

Speech corpora are sized in hours, so the bar counts files (for the ETA) and shows the audio hours
done and the real-time factor as hours per hour, the number that says how long a corpus will take.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class CorpusProgress:
    def __init__(self, total: int, *, desc: str, unit: str = "file") -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.failed = 0
        self.audio_seconds = 0.0
        self.started = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def hours_per_hour(self) -> float:
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def update(self, audio_seconds: float, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        self.audio_seconds += audio_seconds
        postfix = {"audio": f"{self.audio_seconds / 3600:.3f} h", "speed": f"{self.hours_per_hour:.1f} h/h"}
        if self.failed:
            postfix["failed"] = self.failed
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def note(self, message: str) -> None:
        """A line above the bar (a warning about one file) that does not break it."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

    def summary(self) -> str:
        ok = self.done - self.failed
        return (f"{ok} {self.unit}s, {self.audio_seconds / 3600:.3f} h of audio in {_clock(self.elapsed)} "
                f"({self.hours_per_hour:.1f} h/h)" + (f", {self.failed} failed" if self.failed else ""))
