"""Multi-label classification (several labels per input, e.g. news topics): reading the label sets, the 0/1
target matrix, per-label decision thresholds tuned on validation, metrics and prediction columns.

Pure numpy / pandas / scikit-learn, no torch: the fitted model and the evaluation code use the same functions.
The fit pipeline (config `task="multilabel"`) builds on them: the one-vs-rest probe (adapt/multilabel.py), binary
cross-entropy fine-tuning (train/module.py), the thresholds tuned in fitting.py and kept by the Predictor."""

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


def tuned_micro_f1(proba: np.ndarray, y: np.ndarray) -> float:
    """Micro-F1 of held-out predictions at thresholds tuned per label on them: how multi-label candidates (the
    probe's C, the fine-tuning epochs) are ranked, since the model keeps thresholds tuned that way."""
    from sklearn.metrics import f1_score

    thresholds, _ = tune_thresholds(proba, y)
    return float(f1_score(np.asarray(y) > 0.5, decide(proba, thresholds), average="micro", zero_division=0))


def decide(proba: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """The predicted 0/1 matrix: each label's probability against its threshold."""
    return (np.asarray(proba) >= np.asarray(thresholds)).astype(np.int8)  # (a scalar or one per column)


def multilabel_metrics(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | float,
                       labels: Sequence[str]) -> dict[str, Any]:
    """Micro- and macro-F1, subset accuracy (every label of an input right; also under "accuracy", as
    scikit-learn's accuracy_score counts it), Hamming loss, macro average precision (threshold-free) and per label
    ("per_class", the key single-label metrics use) F1 / precision / recall / AP / support."""
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = (np.asarray(y) > 0.5).astype(np.int8)
    pred = decide(proba, thresholds)
    p, r, f, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    present = y.sum(0) > 0
    ap = np.full(len(labels), np.nan)
    for j in np.flatnonzero(present):
        ap[j] = average_precision_score(y[:, j], proba[:, j])
    subset = float((pred == y).all(1).mean()) if len(y) else float("nan")
    return {
        "task": "multilabel",
        # (scikit-learn's accuracy_score on multi-label data is the subset accuracy: the report's headline)
        "accuracy": subset,
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y[:, present], pred[:, present], average="macro", zero_division=0))
        if present.any() else float("nan"),
        "subset_accuracy": subset,
        "hamming_loss": float(hamming_loss(y, pred)) if len(y) else float("nan"),
        "macro_average_precision": float(np.nanmean(ap)) if present.any() else float("nan"),
        "labels_without_positives": int((~present).sum()),
        "n": int(len(y)),
        "per_class": {lab: {"f1": float(f[j]), "precision": float(p[j]), "recall": float(r[j]),
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


#: what a row of the 0/1-columns form without any label is while the table's rows are cleaned (a label cell must
#: not be empty there, where an empty cell means a missing label)
_NO_LABEL = "\x00no label"


def label_columns(label_col: str | None) -> list[str] | None:
    """The 0/1 label columns named by `label_col` ("earn,acq,grain"), or None when it names one column."""
    if not label_col or "," not in label_col:
        return None
    return [c.strip() for c in label_col.split(",") if c.strip()]


def joined_column(df: pd.DataFrame, columns: Sequence[str], sep: str, source: str) -> list[Any]:
    """The 0/1 columns as one label column of `sep`-joined labels (None where a cell is missing), for the table
    reader; `canonical` turns it into the examples' labels."""
    bad = [c for c in columns if sep in c]
    if bad:
        raise DataError(f"{source}: label column name(s) {', '.join(map(repr, bad))} contain the label separator "
                        f"{sep!r}: rename them or choose another --label-sep")
    return [None if s is None else (sep.join(s) if s else _NO_LABEL)
            for s in label_sets_from_columns(df, columns, source)]


def canonical(labels: Sequence[str], sep: str, source: str) -> tuple[list[str], list[str]]:
    """A table's label strings as the examples' canonical form — each input's labels sorted, distinct, joined by
    `sep`; "" for an input with none — and the reading's warnings. (The canonical string is what splits, ids and
    manifests carry; `sets_of` reads it back.)"""
    sets, warnings = parse_label_sets(["" if v == _NO_LABEL else v for v in labels], sep, source)
    return [sep.join(s or ()) for s in sets], warnings


def sets_of(labels: Sequence[str], sep: str) -> list[tuple[str, ...]]:
    """The label sets of canonical label strings ("" is the empty set)."""
    return [tuple(v.split(sep)) if v else () for v in labels]


def label_counts(labels: Sequence[str], sep: str) -> dict[str, int]:
    """How many inputs carry each label (and "(none)": inputs without any)."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for s in sets_of(labels, sep):
        counts.update(s or ("(none)",))
    return dict(sorted(counts.items()))
