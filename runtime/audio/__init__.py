"""Audio in: decoding files, raw PCM, the microphone, processor options and file checks, before any bundle."""
