"""Robustness of a sound classifier: accuracy when the user's clips are made noisier, quieter, louder (clipped)
or shifted in time, 3 severities each. The perturbed clips are written as 16 kHz float WAV files to a temporary
folder and go through the model's own inference path (`clf.proba`), as the image corruptions do."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.examples import Examples

RATE = 16_000
#: severity 1..3 of each perturbation: noise at 20/10/0 dB SNR (white, relative to the clip's RMS), the clip made
#: 10/20/30 dB quieter, made 6/12/20 dB louder and clipped at full scale, delayed or advanced by 0.1/0.2/0.4 s
#: (the part pushed out is lost, silence comes in)
AUDIO_CORRUPTIONS: dict[str, dict[str, Any]] = {
    "noise": {"param": "signal-to-noise ratio (dB)", "values": [20, 10, 0]},
    "quieter": {"param": "gain (dB)", "values": [-10, -20, -30]},
    "clipping": {"param": "gain (dB), then clipped to full scale", "values": [6, 12, 20]},
    "time_shift": {"param": "shift (s), direction drawn per clip", "values": [0.1, 0.2, 0.4]},
}


def perturb_audio(wave: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """`wave` (float32 mono at RATE) under perturbation `name` at `severity` (1..3)."""
    v = AUDIO_CORRUPTIONS[name]["values"][severity - 1]
    if name == "noise":
        rms = float(np.sqrt(np.mean(wave ** 2))) or 1e-4
        out = wave + rng.normal(0.0, rms / 10 ** (v / 20), len(wave)).astype(np.float32)
    elif name in ("quieter", "clipping"):
        out = wave * np.float32(10 ** (v / 20))
    elif name == "time_shift":
        n = min(len(wave), int(round(v * RATE)))
        out = np.zeros_like(wave)
        if rng.random() < 0.5:
            out[n:] = wave[:len(wave) - n]
        else:
            out[:len(wave) - n] = wave[n:]
    else:
        raise ValueError(f"unknown audio perturbation {name!r}")
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def audio_corruption_accuracy(clf: Any, ex: Examples, y: np.ndarray, severities: Sequence[int], seed: int,
                              accuracy: Callable[[np.ndarray, np.ndarray], float],
                              say: Callable[[str], None]) -> tuple[dict[str, dict[str, float]], list[dict[str, str]]]:
    """({perturbation: {severity: accuracy}}, clips that could not be decoded). Severities above 3 are left out
    (the audio perturbations have three)."""
    import soundfile as sf

    from ..data.audio import AudioLoadError, load_audio

    waves: list[np.ndarray] = []
    keep: list[int] = []
    skipped: list[dict[str, str]] = []
    for i, p in enumerate(ex.inputs):
        try:
            waves.append(load_audio(p, RATE))
            keep.append(i)
        except AudioLoadError as e:
            skipped.append({"where": p, "reason": str(e)})
    sub, y = ex.subset(keep), y[keep]
    out: dict[str, dict[str, float]] = {}
    levels = [s for s in severities if 1 <= s <= 3]
    with tempfile.TemporaryDirectory(prefix="fmadapt-robust-") as tmp:
        for k, name in enumerate(AUDIO_CORRUPTIONS):
            say(f"audio {name}")
            out[name] = {}
            for s in levels:
                paths = []
                for j, w in enumerate(waves):
                    rng = np.random.default_rng([seed, k, s, j])
                    target = Path(tmp) / f"{name}-{s}-{j}.wav"
                    sf.write(str(target), perturb_audio(w, name, s, rng), RATE, subtype="FLOAT")
                    paths.append(str(target))
                perturbed = Examples(inputs=paths, labels=sub.labels, ids=sub.ids, source=sub.source,
                                     modality="audio")
                out[name][str(s)] = accuracy(clf.proba(perturbed), y)
    return out, skipped
