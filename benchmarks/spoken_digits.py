#!/usr/bin/env python
"""A spoken-digit dataset made on this machine (issue 27: "a spoken-digit set you record synthetically"): the ten
words "zero".."nine" said by espeak-ng (Debian's package) in several English accents and voice variants, at
several speeds and pitches, then placed at a random offset in 1-1.6 s of room tone, at a random gain, with white
noise at 5-30 dB SNR. Files are written the way users' files come: mostly 22,050 Hz mono WAV (espeak-ng's rate),
a fifth as 44,100 Hz stereo FLAC, so the resampler and the stereo mix-down are exercised.

Speakers are disjoint between the splits: the training voices are 4 accents x 3 variants, the test voices 3 other
accents x 2 other variants (a voice = accent + variant).

    python benchmarks/spoken_digits.py --out /tmp/spoken_digits      # root/{train,test}/<digit>/*.wav|flac
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029")
TRAIN_VARIANTS = ("m1", "f2", "m3")
TEST_ACCENTS = ("en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd")
TEST_VARIANTS = ("f4", "m7")
TAKES = 2  #: training recordings per (voice, word): other speed and pitch


def _say(word: str, voice: str, speed: int, pitch: int, tmp: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    path = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
                   check=True, capture_output=True)
    wave, rate = sf.read(str(path), dtype="float32")
    return wave, rate


def _place(wave: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """The word at a random offset in 1-1.6 s (longer words are not cut), a random gain, noise at 5-30 dB SNR."""
    total = max(len(wave) + int(0.05 * rate), int(rng.uniform(1.0, 1.6) * rate))
    out = np.zeros(total, dtype=np.float32)
    start = int(rng.integers(0, total - len(wave) + 1))
    out[start:start + len(wave)] = wave
    out *= 10 ** (rng.uniform(-12, 0) / 20) / max(1e-6, float(np.abs(out).max()))
    power = float((out[start:start + len(wave)] ** 2).mean())  # the word's, after the gain
    snr = rng.uniform(5, 30)
    out += rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), total).astype(np.float32)
    return np.clip(out, -1, 1)


def make(root: Path, seed: int = 0) -> Path:
    """Write root/{train,test}/<word>/ (skipped when root/test exists); returns root."""
    import soundfile as sf

    if (root / "test").exists():
        return root
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed (apt-get install espeak-ng)")
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for split, accents, variants, takes in (("train", TRAIN_ACCENTS, TRAIN_VARIANTS, TAKES),
                                                ("test", TEST_ACCENTS, TEST_VARIANTS, 1)):
            for accent in accents:
                for variant in variants:
                    for word in WORDS:
                        for take in range(takes):
                            wave, rate = _say(word, f"{accent}+{variant}", int(rng.integers(120, 200)),
                                              int(rng.integers(25, 75)), tmp)
                            clip = _place(wave, rate, rng)
                            d = root / split / word
                            d.mkdir(parents=True, exist_ok=True)
                            name = f"{accent}_{variant}_{take}"
                            if rng.random() < 0.2:  # as a 44.1 kHz stereo FLAC
                                from scipy.signal import resample_poly

                                hi = resample_poly(clip, 2, 1).astype(np.float32)
                                sf.write(str(d / f"{name}.flac"), np.stack([hi, 0.8 * hi], 1), 2 * rate)
                            else:
                                sf.write(str(d / f"{name}.wav"), clip, rate, subtype="PCM_16")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    root = make(a.out, a.seed)
    for split in ("train", "test"):
        print(split, sum(1 for _ in (root / split).rglob("*.*")), "files")


if __name__ == "__main__":
    main()
