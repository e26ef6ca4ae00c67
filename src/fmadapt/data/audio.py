"""Reading users' sound files safely: WAV, FLAC, OGG/Opus, MP3 and AIFF through libsndfile (`soundfile`), any
sample rate resampled to the backbone's (soxr when installed, else SciPy's polyphase filter), stereo mixed to
mono; empty, corrupt and over-long files skipped and listed; silent and clipped clips reported."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from math import gcd
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .examples import Examples, Skipped

#: file suffixes read as audio (a folder of these is audio data)
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"})
#: clips longer than this are skipped before decoding (10 minutes of 16 kHz float32 is 38 MB)
MAX_SECONDS = 600.0
#: a clip whose peak stays below this (about -80 dBFS) is reported as silent
SILENT_PEAK = 1e-4
#: a clip with more than this share of its samples at full scale is reported as clipped
CLIPPED_SHARE = 0.001


class AudioLoadError(Exception):
    """One sound file could not be used; the message says why (shown in the run summary)."""


def _soundfile():  # type: ignore[no-untyped-def]
    try:
        import soundfile
    except ImportError:  # (or libsndfile missing on the system)
        raise ConfigError("reading audio needs the audio extra: pip install 'fmadapt[audio]'") from None
    return soundfile


def load_audio(path: str | os.PathLike[str], rate: int = 16_000, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """float32 mono samples in [-1, 1] at `rate` Hz. AudioLoadError names what is wrong with the file."""
    sf = _soundfile()
    try:
        if not os.path.isfile(path):  # (never a FIFO or a device named in a table)
            raise AudioLoadError("no such file" if not os.path.exists(path) else "not a regular file")
        if os.path.getsize(path) == 0:
            raise AudioLoadError("empty file (0 bytes)")
        info = sf.info(str(path))
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if seconds > max_seconds:
            raise AudioLoadError(f"{seconds:.0f} s long, over the {max_seconds:.0f} s limit; not decoded "
                                 "(cut long recordings into clips)")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioLoadError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError, TypeError) as e:  # soundfile.LibsndfileError: RuntimeError
        raise AudioLoadError(f"corrupt or unsupported audio ({' '.join(str(e).split())[:160]})") from e
    if data.size == 0:
        raise AudioLoadError("no samples (a header without audio)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioLoadError("samples that are not finite numbers (NaN or infinity)")
    return resample(np.ascontiguousarray(wave, dtype=np.float32), int(sr), rate)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """A band-limited resampler: soxr (the SoX resampler, high quality) when installed, else SciPy's polyphase
    filter; unchanged at the same rate."""
    if rate_in == rate_out:
        return wave
    try:
        import soxr

        return np.asarray(soxr.resample(wave, rate_in, rate_out, quality="HQ"), dtype=np.float32)
    except ImportError:
        from scipy.signal import resample_poly

        g = gcd(rate_in, rate_out)
        return resample_poly(wave, rate_out // g, rate_in // g).astype(np.float32)


def pad_clip(wave: np.ndarray, pad: int, min_samples: int) -> np.ndarray:
    """float32 samples with `pad` samples of silence on each side, then zero-padded to at least `min_samples`: what
    the speech embedding reads (backbones/audio.py's AudioPreprocess, and the torch-free runtime/light.py)."""
    wave = np.pad(np.asarray(wave, dtype=np.float32), pad)
    return np.pad(wave, (0, max(0, min_samples - len(wave))))


def batch_clips(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clips of different lengths -> ((B, S_max) float32 zero-padded, (B,) int64 lengths)."""
    lengths = np.asarray([len(w) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w
    return batch, lengths


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def mostly_audio(root: str | os.PathLike[str], sample: int = 200) -> bool:
    """Whether a folder holds sound files rather than images (the first `sample` files, by suffix)."""
    seen = audio = 0
    for _dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            seen += 1
            audio += is_audio_file(f)
            if seen >= sample:
                return audio * 2 > seen
    return seen > 0 and audio * 2 > seen


def check_audio(paths: list[str], rate: int = 16_000, workers: int = 4) -> tuple[dict[str, str], dict[str, str]]:
    """Decode every file once (threads: libsndfile releases the GIL). Returns ({path: why it cannot be used},
    {path: what is odd about a usable clip: silent, clipped})."""

    def one(p: str) -> tuple[str, str | None, str | None]:
        try:
            wave = load_audio(p, rate)
        except AudioLoadError as e:
            return p, str(e), None
        peak = float(np.abs(wave).max())
        if peak < SILENT_PEAK:
            return p, None, "silent (peak below -80 dBFS)"
        share = float((np.abs(wave) >= 0.999).mean())
        if share > CLIPPED_SHARE:
            return p, None, f"clipped ({100 * share:.1f} % of samples at full scale)"
        return p, None, None

    with ThreadPoolExecutor(max_workers=workers) as ex:
        done = list(ex.map(one, paths))
    return {p: r for p, r, _ in done if r}, {p: n for p, _, n in done if n}


def drop_unreadable_audio(ex: Examples, rate: int = 16_000) -> Examples:
    """Remove files that cannot be decoded (each in `ex.skipped` with the reason); silent and clipped clips stay,
    and are said in `ex.warnings`."""
    bad, odd = check_audio(ex.inputs, rate)
    out = ex if not bad else ex.subset([i for i, p in enumerate(ex.inputs) if p not in bad])
    if bad:
        out.skipped = ex.skipped + [Skipped(where=p, reason=r) for p, r in bad.items()]
    for kind in ("silent", "clipped"):
        hit = [p for p, note in odd.items() if note.startswith(kind)]
        if hit:
            out.warnings.append(f"{len(hit)} {kind} clip(s) kept: {', '.join(hit[:3])}"
                                + (" ..." if len(hit) > 3 else "") + (" (check the recordings)"))
    return out
