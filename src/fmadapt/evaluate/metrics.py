"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, ECE."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

#: what chooses between candidates and epochs on validation (`--metric`)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def metric_score(metric: str, y: np.ndarray, pred: np.ndarray, n_cls: int) -> float:
    """The run's metric of predicted class indices `pred` against `y`."""
    if metric == "accuracy":
        return float((pred == y).mean())
    if metric == "balanced_accuracy":
        present = np.unique(y)  # mean recall of the classes present (sklearn's, without its warnings)
        return float(np.mean([(pred[y == k] == k).mean() for k in present]))
    if metric == "macro_f1":
        return float(f1_score(y, pred, labels=sorted(set(y.tolist())), average="macro", zero_division=0))
    raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins: sum_b |B|/N * |acc(B) - conf(B)|."""
    conf = proba.max(1)
    correct = (proba.argmax(1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    labels = list(range(len(classes)))
    pred = proba.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        # mean recall of the classes present in y (what `--metric balanced_accuracy` chooses by)
        "balanced_accuracy": float(r[s > 0].mean()) if (s > 0).any() else 0.0,
        "ece": expected_calibration_error(proba, y),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(s[i])} for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def format_metrics(m: dict[str, Any], title: str = "") -> str:
    """A plain-text table of the headline and per-class metrics (for terminals and logs)."""
    lines = [title] if title else []
    if m.get("task") == "regression":
        line = (f"n={m['n']}  rmse={m['rmse']:.4f}  mae={m['mae']:.4f}  r2={m['r2']:.4f}  "
                f"spearman={m['spearman']:.4f}")
        if "interval_coverage" in m:
            line += f"  interval: coverage={m['interval_coverage']:.4f} width={m['interval_width']:.4g}"
        return "\n".join([*lines, line])
    if m.get("task") == "multilabel":
        lines.append(f"n={m['n']}  micro_f1={m['micro_f1']:.4f}  macro_f1={m['macro_f1']:.4f}  "
                     f"subset_accuracy={m['subset_accuracy']:.4f}  hamming_loss={m['hamming_loss']:.4f}")
        width = max([5, *(len(c) for c in m["per_class"])])
        lines.append(f"{'label':<{width}}  precision  recall     f1  support")
        for c, v in sorted(m["per_class"].items(), key=lambda kv: -kv[1]["support"]):
            lines.append(f"{c:<{width}}  {v['precision']:9.4f}  {v['recall']:6.4f}  {v['f1']:.4f}  "
                         f"{v['support']:7d}")
        return "\n".join(lines)
    balanced = f"  balanced_acc={m['balanced_accuracy']:.4f}" if "balanced_accuracy" in m else ""
    lines.append(f"n={m['n']}  accuracy={m['accuracy']:.4f}  macro_f1={m['macro_f1']:.4f}{balanced}  "
                 f"ece={m['ece']:.4f}")
    width = max([5, *(len(c) for c in m["per_class"])])
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for c, v in m["per_class"].items():
        lines.append(f"{c:<{width}}  {v['precision']:9.4f}  {v['recall']:6.4f}  {v['f1']:.4f}  {v['support']:7d}")
    return "\n".join(lines)
