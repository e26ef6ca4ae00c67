"""Checks before training, the seeded stratified train/validation split, and the data summary."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import numpy as np

from ..errors import DataError
from ..tasks.multilabel import label_counts
from .examples import Examples, Skipped


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


def group_ids(inputs: list[str], pattern: str) -> list[str]:
    """The group of each input file (option `split_groups`): the first capture group, else the whole match, of
    `pattern` searched in the file's name; a name it does not match is a group of its own."""
    rx = re.compile(pattern)
    out = []
    for path in inputs:
        m = rx.search(os.path.basename(path))
        out.append(f"g:{m.group(1) if m.groups() else m.group(0)}" if m else f"f:{path}")
    return out


def stratified_split(ex: Examples, val_fraction: float = 0.2, seed: int = 0, groups: str | None = None
                     ) -> tuple[Examples, Examples]:
    """Seeded, stratified split; every class keeps at least one example on each side. `groups` (a `split_groups`
    pattern): whole groups go to one side or the other (StratifiedGroupKFold's first fold of round(1 /
    val_fraction)), when there are enough groups and every class keeps a training example; else example by example,
    said in the training examples' warnings."""
    check_trainable(ex)
    assert ex.labels is not None
    if groups:
        from sklearn.model_selection import StratifiedGroupKFold

        g = group_ids(ex.inputs, groups)
        k = max(2, int(round(1 / val_fraction)))
        if len(set(g)) >= k:
            folds = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            tr, va = next(folds.split(np.zeros(len(g)), ex.labels, g))
            if {ex.labels[i] for i in tr} == set(ex.labels):
                return ex.subset(sorted(tr.tolist())), ex.subset(sorted(va.tolist()))
        ex.warnings.append(f"split_groups: {len(set(g))} group(s) cannot make a validation split by group with every "
                           "class on the training side; split example by example")
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


def check_trainable_multilabel(ex: Examples, sep: str, what: str = "training data") -> None:
    """Stop before any training when multi-label data cannot train (no labels, too few examples); a label with a
    single example can hardly be learnt, which the caller's warnings say."""
    if ex.labels is None:
        raise DataError(f"{ex.source}: {what} has no labels")
    if not any(ex.labels):
        raise DataError(f"{ex.source}: no input of the {what} carries a label (separator {sep!r}): check the label "
                        "column(s) and --label-sep")
    if len(ex) < 4:
        raise DataError(f"{ex.source}: {what} has {len(ex)} labeled input(s); multi-label training needs at least 4")


def check_trainable_regression(ex: Examples, what: str = "training data") -> None:
    """Stop before any training when a numeric target cannot train a regression (too few, or all alike)."""
    if ex.labels is None:
        raise DataError(f"{ex.source}: {what} has no targets")
    if len(ex) < 4:
        raise DataError(f"{ex.source}: {what} has {len(ex)} example(s); regression needs at least 4")
    if len(set(ex.labels)) < 2:
        raise DataError(f"{ex.source}: every target of the {what} is {ex.labels[0]!r}: nothing to learn")


def random_split(ex: Examples, val_fraction: float = 0.2, seed: int = 0, groups: str | None = None
                 ) -> tuple[Examples, Examples]:
    """Seeded random split (multi-label data: its label combinations are too many to stratify by; `groups` is for
    files, which are single-label: not used here)."""
    order = np.random.default_rng(seed).permutation(len(ex))
    n_val = min(len(ex) - 1, max(1, int(round(len(ex) * val_fraction))))
    chosen = set(order[:n_val].tolist())
    return ex.subset([i for i in range(len(ex)) if i not in chosen]), ex.subset(sorted(chosen))


def split_by_ids(ex: Examples, val_ids: frozenset[str], what: str) -> tuple[Examples, Examples]:
    """(the examples whose id is not in `val_ids`, those that are): the split several targets of one table share
    (a row without this target's label is in neither); DataError when either side is empty."""
    val = [i for i, x in enumerate(ex.ids) if x in val_ids]
    chosen = set(val)
    train = [i for i in range(len(ex)) if i not in chosen]
    if not val or not train:
        side = "validation" if not val else "training"
        raise DataError(f"{ex.source}: target {what!r} has no labeled row in the {side} split the targets share "
                        f"({len(ex)} labeled row(s)); give more labeled rows or a validation table (--val)")
    return ex.subset(train), ex.subset(val)


def check_known(ex: Examples, classes: list[str], what: str) -> None:
    """Labels of validation/test/evaluation data must be classes the model was trained on."""
    unseen = sorted(set(ex.labels or []) - set(classes))
    if unseen:
        raise DataError(f"{ex.source}: {what} has label(s) never seen in training: "
                        f"{', '.join(repr(u) for u in unseen[:20])}. Known classes: {', '.join(classes[:50])}")


#: a validation split smaller than this gets a warning in the data summary (one example = 2+ points of accuracy)
SMALL_VALIDATION = 50


def data_summary(splits: dict[str, Examples], split_made: bool, label_sep: str | None = None,
                 regression: bool = False) -> dict[str, Any]:
    """What the run summary and metrics.json say about the data: sizes, class counts (multi-label, with
    `label_sep`: inputs per label; regression: the target's mean, spread and range), skips, warnings."""
    skipped: list[Skipped] = []
    seen = set()
    for ex in splits.values():
        for s in ex.skipped:
            if (s.where, s.reason) not in seen:
                seen.add((s.where, s.reason))
                skipped.append(s)
    warnings = sorted({w for ex in splits.values() for w in ex.warnings})
    n_val = len(splits["val"]) if "val" in splits else 0
    if 0 < n_val < SMALL_VALIDATION:
        warnings.append(f"the validation split holds {n_val} examples: one of them is {100 / n_val:.1f} points of "
                        "accuracy, so what is chosen on it (the epochs kept, auto's candidates, a self-trained "
                        "student) can be chance; more labeled data, a larger validation split (--set "
                        "val_fraction=0.3) or a given one (--val FILE) makes those choices firmer")
    return {
        "sizes": {k: len(v) for k, v in splits.items()},
        **({"targets": {k: _target_summary(v.labels or []) for k, v in splits.items()}} if regression else
           {"class_counts": {k: v.class_counts() if label_sep is None else label_counts(v.labels or [], label_sep)
                             for k, v in splits.items()}}),
        "validation": ("given" if not split_made else
                       "stratified split of the training data" if label_sep is None and not regression
                       else "random split of the training data"),
        "skipped": [s.to_dict() for s in skipped],
        "warnings": warnings,
    }


def _target_summary(labels: list[str]) -> dict[str, float]:
    y = np.asarray([float(v) for v in labels], dtype=float)
    if not len(y):
        return {"n": 0}
    return {"n": int(len(y)), "mean": round(float(y.mean()), 6), "std": round(float(y.std()), 6),
            "min": float(y.min()), "max": float(y.max())}
