"""Multi-label classification (several labels per input, e.g. news topics): reading the label sets, the 0/1
target matrix, per-label decision thresholds tuned on validation, metrics and prediction columns.

Pure numpy / pandas / scikit-learn, no torch: the fitted model and the evaluation code use the same functions.
The fit pipeline's heads and losses for this task (sigmoid, one-vs-rest probe, binary cross-entropy) build on
them (issue 22, in progress)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

#: the label column's separator when none is given
DEFAULT_SEP = ";"
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def parse_label_sets(values: Sequence[Any], sep: str = DEFAULT_SEP, source: str = "labels"
                     ) -> tuple[list[tuple[str, ...] | None], list[str]]:
    """Each value of a label column ("earn;acq") as a sorted tuple of distinct labels; an empty string is an
    input with no label (valid: every label negative), a missing value (None/NaN) gives None (the row is skipped
    by the caller, which reports it). Returns (label sets, warnings)."""
    if not sep:
        raise DataError("the label separator must not be empty (e.g. --label-sep ';')")
    out: list[tuple[str, ...] | None] = []
    repeated = 0
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(None)
            continue
        parts = [p.strip() for p in str(value).split(sep)]
        labels = [p for p in parts if p]
        repeated += len(labels) != len(set(labels))
        out.append(tuple(sorted(set(labels))))
    warnings = []
    if repeated:
        warnings.append(f"{source}: {repeated} row(s) name a label twice; each label counts once")
    seen = [s for s in out if s is not None]
    if seen and all(len(s) <= 1 for s in seen):
        warnings.append(f"{source}: no row has more than one label (separator {sep!r}): if the labels are "
                        "separated otherwise, give the separator (--label-sep); else this is single-label data")
    return out, warnings


def label_sets_from_columns(df: pd.DataFrame, columns: Sequence[str], source: str = "table"
                            ) -> list[tuple[str, ...] | None]:
    """Several 0/1 columns (one per label: 1/0, true/false, yes/no) as label sets, the labels being the column
    names. A missing cell makes the row's set None (skipped and reported by the caller); any other value is a
    DataError naming the column, the row and the value."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{source}: label column(s) {', '.join(map(repr, missing))} not found; columns are "
                        f"{', '.join(map(repr, map(str, df.columns)))[:300]}")
    if len(columns) < 2:
        raise DataError(f"{source}: multi-label 0/1 columns need at least two columns, got {list(columns)}")
    flags = np.zeros((len(df), len(columns)), dtype=bool)
    absent = np.zeros(len(df), dtype=bool)
    for j, c in enumerate(columns):
        for i, v in enumerate(df[c].tolist()):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                absent[i] = True
                continue
            text = str(v).strip().lower()
            if text in _TRUE:
                flags[i, j] = True
            elif text not in _FALSE:
                raise DataError(f"{source}: column {c!r}, row {i + 2}: {str(v)[:40]!r} is not 0/1 (true/false); "
                                "each label column holds 1 where the label applies, 0 where it does not")
    return [None if absent[i] else tuple(sorted(str(columns[int(j)]) for j in np.flatnonzero(flags[i])))
            for i in range(len(df))]


def label_names(label_sets: Sequence[tuple[str, ...] | None]) -> list[str]:
    """The labels of a training set, sorted (the model's fixed label order)."""
    return sorted({lab for s in label_sets if s for lab in s})


def indicator(label_sets: Sequence[tuple[str, ...]], labels: Sequence[str], unknown: str = "error"
              ) -> np.ndarray:
    """The (n, L) 0/1 target matrix (float32) in `labels`' order. A label outside `labels` raises DataError
    (`unknown="error"`) or is left out (`unknown="ignore"`: evaluation data may carry labels the model never saw,
    which count as missed in no column)."""
    index = {lab: j for j, lab in enumerate(labels)}
    y = np.zeros((len(label_sets), len(labels)), dtype=np.float32)
    for i, s in enumerate(label_sets):
        for lab in s:
            j = index.get(lab)
            if j is None:
                if unknown == "error":
                    raise DataError(f"label {lab!r} (example {i + 1}) is not one of the model's labels")
                continue
            y[i, j] = 1.0
    return y


def tune_thresholds(proba: np.ndarray, y: np.ndarray, grid: np.ndarray | None = None,
                    default: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """Per-label decision thresholds chosen on validation: for each label, the grid value with the best F1 of
    that label (ties: the value nearest `default`). A label with no positive example in validation keeps
    `default` (said in the notes): F1 cannot rank thresholds there."""
    grid = np.round(np.arange(0.05, 0.951, 0.025), 4) if grid is None else np.asarray(grid, dtype=float)
    proba, y = np.asarray(proba, dtype=float), np.asarray(y) > 0.5
    thresholds = np.full(proba.shape[1], default, dtype=float)
    kept = 0
    for j in range(proba.shape[1]):
        pos = y[:, j]
        if not pos.any():
            kept += 1
            continue
        pred = proba[:, j][:, None] >= grid[None, :]  # (n, grid)
        tp = (pred & pos[:, None]).sum(0)
        f1 = 2 * tp / np.maximum(pred.sum(0) + pos.sum(), 1)
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        thresholds[j] = grid[best[np.argmin(np.abs(grid[best] - default))]]
    notes = [f"{kept} label(s) without a positive validation example keep the threshold {default}"] \
        if kept else []
    return thresholds, notes


def decide(proba: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """The predicted 0/1 matrix: each label's probability against its threshold."""
    return (np.asarray(proba) >= np.asarray(thresholds)).astype(np.int8)  # (a scalar or one per column)


def multilabel_metrics(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | float,
                       labels: Sequence[str]) -> dict[str, Any]:
    """Micro- and macro-F1, subset accuracy (every label of an input right), Hamming loss, macro average
    precision (threshold-free) and per-label F1 / AP / support."""
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = (np.asarray(y) > 0.5).astype(np.int8)
    pred = decide(proba, thresholds)
    p, r, f, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    present = y.sum(0) > 0
    ap = np.full(len(labels), np.nan)
    for j in np.flatnonzero(present):
        ap[j] = average_precision_score(y[:, j], proba[:, j])
    return {
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y[:, present], pred[:, present], average="macro", zero_division=0))
        if present.any() else float("nan"),
        "subset_accuracy": float((pred == y).all(1).mean()) if len(y) else float("nan"),
        "hamming_loss": float(hamming_loss(y, pred)) if len(y) else float("nan"),
        "macro_average_precision": float(np.nanmean(ap)) if present.any() else float("nan"),
        "labels_without_positives": int((~present).sum()),
        "n": int(len(y)),
        "per_label": {lab: {"f1": float(f[j]), "precision": float(p[j]), "recall": float(r[j]),
                            "average_precision": None if np.isnan(ap[j]) else float(ap[j]),
                            "support": int(support[j])} for j, lab in enumerate(labels)},
    }


def prediction_columns(proba: np.ndarray, labels: Sequence[str], thresholds: np.ndarray | float,
                       sep: str = DEFAULT_SEP) -> pd.DataFrame:
    """`pred` (the predicted labels joined by `sep`, empty when none passes its threshold) and one
    `prob_<label>` column per label."""
    pred = decide(proba, thresholds)
    joined = [sep.join(labels[int(j)] for j in np.flatnonzero(row)) for row in pred]
    cols: dict[str, Any] = {"pred": joined}
    cols.update({f"prob_{lab}": np.asarray(proba)[:, j] for j, lab in enumerate(labels)})
    return pd.DataFrame(cols)
