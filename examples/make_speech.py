"""Regenerate ``examples/speech/``: the small speech sample README's first commands run on.

The clips are synthetic speech from espeak-ng (Debian package ``espeak-ng``) reading Harvard
sentences (IEEE 1969 "Recommended Practice for Speech Quality Measurements", free to use) in
several voices, pitches and rates, stored as Ogg Vorbis at espeak-ng's 22.05 kHz so the whole
sample stays far below 2 MB. The runtime resamples to 16 kHz itself, as it would for any user file.

    python examples/make_speech.py            # rewrites examples/speech/*.ogg
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "Large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
]
# (voice, pitch 0-99, words per minute): British, American, Scottish, Caribbean and RP voices.
VOICES = [("en-gb", 50, 165), ("en-us", 35, 150), ("en-gb-scotland", 60, 175),
          ("en-029", 45, 160), ("en-gb-x-rp", 70, 140), ("en-us", 80, 185)]
QUALITY = 0.3  # Vorbis quality (0..1): speech stays intelligible at a few kB per second


def synthesize(text: str, voice: tuple[str, int, int], target: Path, espeak: str) -> None:
    name, pitch, rate = voice
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        subprocess.run([espeak, "-v", name, "-p", str(pitch), "-s", str(rate), "-w", str(wav), text],
                       check=True, capture_output=True)
        samples, rate_hz = sf.read(wav, dtype="float32")
    sf.write(target, samples, rate_hz, format="OGG", subtype="VORBIS", compression_level=1.0 - QUALITY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "speech")
    args = parser.parse_args()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("make_speech.py: error: espeak-ng is not installed (apt-get install espeak-ng)")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(SENTENCES):
        synthesize(text, VOICES[i % len(VOICES)], args.out / f"harvard-{i:02d}.ogg", espeak)
    total = sum(p.stat().st_size for p in args.out.glob("*.ogg"))
    print(f"wrote {len(SENTENCES)} clips to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
