"""Self-training on unlabeled data (pseudo-labelling; Lee, 2013; Xie et al., 2020, "Self-training with Noisy
Student"). A first model (the teacher) is trained on the labeled data; it labels the user's unlabeled inputs;
the inputs it is sure about (probability >= `pseudo_threshold`), in the labeled data's class proportions, join
the training data of a second model (the student), trained from the pretrained weights again. The student is
kept only if it does better than the teacher on the labeled validation split, which neither trained on
(on a tie, the teacher).

Only the choice of pseudo-labels lives here (pure functions, no models); the estimator runs the two fits."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections import Counter
from typing import Any

import numpy as np

from ..data.examples import Examples


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def drop_overlap(pool: Examples, *labeled: Examples) -> tuple[Examples, int]:
    """The pool without the inputs that are also labeled ones, and how many were dropped: the same text, or
    the same image (the same file under any name, or a copy with the same bytes). A validation example
    labeled by the teacher and trained on by the student would make the student look better than it is."""
    if pool.modality != "image":
        seen = {v for ex in labeled for v in ex.inputs}
        keep = [i for i, v in enumerate(pool.inputs) if v not in seen]
    else:
        real = {os.path.realpath(v) for ex in labeled for v in ex.inputs}
        by_size: dict[int, list[str]] = {}
        for v in real:
            with contextlib.suppress(OSError):
                by_size.setdefault(os.path.getsize(v), []).append(v)
        digests: dict[int, set[str | None]] = {}  # only files of a size some labeled file has are read
        keep = []
        for i, v in enumerate(pool.inputs):
            r = os.path.realpath(v)
            if r in real:
                continue
            try:
                size = os.path.getsize(r)
            except OSError:
                size = -1
            if size in by_size:
                if size not in digests:
                    digests[size] = {_digest(x) for x in by_size[size]}
                if _digest(r) in digests[size] - {None}:
                    continue
            keep.append(i)
    return (pool if len(keep) == len(pool) else pool.subset(keep)), len(pool) - len(keep)


def sample_pool(pool: Examples, limit: int | None, seed: int) -> Examples:
    """At most `limit` inputs of the pool: a seeded random sample, in the pool's order."""
    if limit is None or len(pool) <= limit:
        return pool
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), size=limit, replace=False))
    return pool.subset([int(i) for i in idx])


def select_pseudo_labels(proba: np.ndarray, classes: list[str], labeled: list[str], threshold: float,
                         balance: bool = True) -> tuple[list[int], list[str], dict[str, Any]]:
    """Which pool inputs to train on, with which label: (row indices, labels, a summary).

    A row qualifies when its largest probability is >= threshold. With `balance`, each class keeps its most
    confident rows in the proportions of the labeled training data (as many in all as the class the teacher is
    least sure of allows): a teacher that favours one class would otherwise hand the student more of it."""
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(1) if len(proba) else np.zeros(0, dtype=int)
    conf = proba.max(1) if len(proba) else np.zeros(0)
    ok = conf >= threshold
    confident = {c: int(np.sum(ok & (pred == k))) for k, c in enumerate(classes)}
    counts = Counter(labeled)
    share = {c: counts.get(c, 0) / max(1, len(labeled)) for c in classes}
    if balance:
        scale = min((confident[c] / share[c] for c in classes if share[c] > 0), default=0.0)
        quota = {c: min(confident[c], int(math.floor(scale * share[c] + 1e-9))) for c in classes}
    else:
        quota = dict(confident)
    rows: list[int] = []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(ok & (pred == k))
        idx = idx[np.argsort(-conf[idx], kind="stable")][: quota[c]]
        rows.extend(int(i) for i in idx)
    rows.sort()
    labels = [classes[int(pred[i])] for i in rows]
    # the class whose few confident rows set the total, when balancing left rows out (or kept none)
    limiting = None
    if balance and len(proba) and (not rows or any(quota[c] < confident[c] for c in classes)):
        limiting = min((c for c in classes if share[c] > 0), key=lambda c: confident[c] / share[c], default=None)
    info = {"threshold": threshold, "balanced": balance, "confident": int(ok.sum()),
            "confident_per_class": confident, "pseudo_labeled": len(rows),
            "per_class": {c: int(n) for c, n in sorted(Counter(labels).items())},
            "limited_by": limiting}
    return rows, labels, info


def pseudo_examples(pool: Examples, rows: list[int], labels: list[str]) -> Examples:
    """The chosen pool inputs as labeled examples (ids marked, so they are told apart from the user's)."""
    sub = pool.subset(rows)
    return Examples(inputs=sub.inputs, labels=list(labels), ids=[f"unlabeled:{i}" for i in sub.ids],
                    source=pool.source, modality=pool.modality)
