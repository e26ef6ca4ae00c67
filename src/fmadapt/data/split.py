"""Checks before training, and the seeded stratified train/validation split."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

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
        raise DataError(f"{ex.source}: class(es) with fewer than 2 examples in {what}: {listed}. Add examples "
                        "or remove these classes.")


def stratified_split(ex: Examples, val_fraction: float = 0.2, seed: int = 0) -> tuple[Examples, Examples]:
    """Seeded, stratified split; every class keeps at least one example on each side."""
    check_trainable(ex)
    assert ex.labels is not None
    n_classes = len(set(ex.labels))
    n_val = max(n_classes, int(round(len(ex) * val_fraction)))
    if len(ex) - n_val < n_classes:
        raise DataError(f"{ex.source}: {len(ex)} examples are too few to split into training and "
                        f"validation for {n_classes} classes; provide a separate validation set.")
    idx = list(range(len(ex)))
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=ex.labels)
    return ex.subset(sorted(tr)), ex.subset(sorted(va))
