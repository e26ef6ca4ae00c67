"""What an explanation explains, per task, and which inputs a report explains (evaluate/explain.py).

- single-label: the predicted class's logit; right and wrong = the predicted class against the label.
- multi-label: the logit of the label the model is surest of (`explained`); the prediction is the label set at
  the model's thresholds, right = the whole set matches the true one.
- regression: the predicted number (the model's one output, on the standardised scale: attributions compare
  inputs, not units); right = the truth lies inside the prediction interval when the model has one (else not
  said), and the sample is the largest errors and the smallest ones.

Nothing here needs torch: the choice of rows and the items' headline fields."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.examples import Examples


def pick_right_wrong(proba: np.ndarray, y: np.ndarray, n_right: int, n_wrong: int, seed: int = 0) -> list[int]:
    """Indices: up to `n_wrong` misclassified, most confident first, then up to `n_right` correct spread
    evenly over their confidence range (most to least sure), so the sample shows both easy and borderline
    cases. Ties are broken by a seeded shuffle."""
    pred, conf = proba.argmax(1), proba.max(1)
    return _pick(conf, pred == y, n_right, n_wrong, seed)


def _pick(conf: np.ndarray, right: np.ndarray, n_right: int, n_wrong: int, seed: int) -> list[int]:
    order = np.random.default_rng(seed).permutation(len(conf))
    order = order[np.argsort(-conf[order], kind="stable")]  # by confidence, highest first
    wrong = [int(i) for i in order if not right[i]][: max(n_wrong, 0)]
    ok = [int(i) for i in order if right[i]]
    if n_right > 0 and len(ok) > n_right:
        ok = [ok[int(j)] for j in np.unique(np.linspace(0, len(ok) - 1, n_right).round())]
    return wrong + ok[: max(n_right, 0)]


def pick_rows(clf: Any, ex: Examples, proba: np.ndarray, n_right: int, n_wrong: int, seed: int = 0) -> list[int]:
    """The labeled inputs a report explains: wrong ones first (most confident, or the largest errors), then right
    ones (spread over their confidence, or the smallest errors)."""
    task = clf.config_.task
    if task == "regression":
        err = np.abs(clf.labels_of(proba) - clf.encode_labels(ex.labels))
        order = np.argsort(-err, kind="stable")
        wrong = [int(i) for i in order[: max(n_wrong, 0)]]
        return wrong + [int(i) for i in order[::-1] if int(i) not in wrong][: max(n_right, 0)]
    if task == "multilabel":
        right = (proba >= clf.decision_thresholds()).astype(int) == clf.encode_labels(ex.labels)
        return _pick(proba.max(1), right.all(1), n_right, n_wrong, seed)
    return pick_right_wrong(proba, clf.encode_labels(ex.labels, unknown=-1), n_right, n_wrong, seed)


def headline(clf: Any, row: np.ndarray, label: Any) -> dict[str, Any]:
    """The output explained (`target`, an index into the model's outputs) and what the item shows about it:
    pred, confidence, correct, and `explained` (the label whose score is attributed) for multi-label."""
    task = clf.config_.task
    if task == "regression":
        value = float(clf.labels_of(row[None])[0])
        half = clf.interval_halfwidth()
        inside = None if label is None or half is None else bool(abs(float(label) - value) <= half)
        return {"target": 0, "pred": round(value, 6), "confidence": None, "correct": inside}
    target = int(row.argmax())
    if task == "multilabel":
        pred = str(clf.labels_of(row[None])[0])
        sep = clf.config_.label_sep
        same = None if label is None else {s for s in str(label).split(sep) if s} == {s for s in pred.split(sep) if s}
        return {"target": target, "pred": pred, "confidence": round(float(row[target]), 4), "correct": same,
                "explained": str(clf.classes_[target])}
    return {"target": target, "pred": str(clf.classes_[target]), "confidence": round(float(row[target]), 4),
            "correct": None if label is None else bool(label == clf.classes_[target])}
