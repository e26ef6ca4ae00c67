"""Checks before training, and the seeded stratified train/validation split."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import DataError
from .examples import Examples


def check_trainable(ex: Examples, what: str = "training data") -> None:
    """Stop before any training when the data cannot train a classifier."""
    if ex.labels is None:
        raise DataError(f"{ex.source}: {what} has no labels")
    counts = Counter(ex.labels)
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise DataError(f"{ex.source}: {what} has a single class ({only!r}, {len(ex)} examples); "
                        "a classifier needs at least 2 classes.")
    few = {c: n for c, n in counts.items() if n < 2}
    if few:
        listed = ", ".join(f"{c!r} ({n})" for c, n in sorted(few.items()))
        # a stray variant (" pos", "Pos") of a real class is the usual cause: say which class it resembles
        canon = {" ".join(c.split()).casefold(): c for c in sorted(counts, key=lambda c: counts[c])}  # commonest wins
        alike = [f"{c!r} looks like {canon[' '.join(c.split()).casefold()]!r}" for c in sorted(few)
                 if canon[" ".join(c.split()).casefold()] != c]
        raise DataError(f"{ex.source}: class(es) with fewer than 2 examples in {what}: {listed}. "
                        + (f"{'; '.join(alike)} (they differ only by case or spaces): fix the label column. "
                           if alike else "") + "Add examples or remove these classes.")


def stratified_split(ex: Examples, val_fraction: float = 0.2, seed: int = 0) -> tuple[Examples, Examples]:
    """Seeded, stratified split; every class keeps at least one example on each side."""
    check_trainable(ex)
    assert ex.labels is not None
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(ex.labels):
        by_class.setdefault(lab, []).append(i)
    val: list[int] = []
    for lab in sorted(by_class):
        idx = by_class[lab]
        n_val = min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
        val.extend(rng.permutation(idx)[:n_val].tolist())
    chosen = set(val)
    return ex.subset([i for i in range(len(ex)) if i not in chosen]), ex.subset(sorted(chosen))
