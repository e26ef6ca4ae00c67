"""The task-specific steps of the fit pipeline (fitting.FitRun): checks and warnings on the labels before
training, the table columns' encoding, and what each task fits on the honest validation predictions after it —
per-label decision thresholds (multi-label), the prediction intervals (regression)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import FitConfig
from ..data.examples import Examples
from ..data.split import check_trainable
from ..errors import DataError
from .multilabel import label_counts, sets_of, tune_thresholds
from .regression import conformal_halfwidth, looks_continuous

if TYPE_CHECKING:
    from ..predictor import Predictor


def check_classes(train: Examples) -> None:
    """check_trainable, and when the class labels look like a numeric quantity, the suggestion of a regression
    (in the error when the classes cannot train, as a warning otherwise)."""
    continuous = looks_continuous(train.labels or [])
    hint = (f"the labels look like a numeric quantity ({len(set(train.labels or []))} distinct numbers): to predict "
            "it as a number, use --task regression")
    try:
        check_trainable(train)
    except DataError as e:
        if continuous:
            raise DataError(f"{e} ({hint})") from None
        raise
    if continuous:
        train.warnings.append(hint)


def table_encoder(cfg: FitConfig, train: Examples, targets: list[str] | None = None) -> Any:
    """`features`: the table columns read beside the text, and their encoding fitted on the training rows;
    `targets`: every target column of a fit of several targets (never an input of another target's head)."""
    from ..data.tabular import TableEncoder, feature_columns
    from .multilabel import label_columns

    labels = label_columns(cfg.label_col) or ([cfg.label_col] if cfg.label_col else [])
    exclude = [c for c in (cfg.text_col, *labels, *(targets or [])) if c]
    assert train.table is not None
    columns = feature_columns(train.table, str(cfg.features), exclude, train.source)
    if cfg.task != "multilabel" and train.labels is not None:
        train.warnings.extend(stand_in_warnings(train.table[columns], train.labels, cfg.task == "regression"))
    return TableEncoder.fit(train.table[columns])


#: a table column that alone gets this close to the training labels is said (a leak, or another target)
STAND_IN = 0.98


def stand_in_warnings(table: Any, labels: list[Any], regression: bool) -> list[str]:
    """The feature columns that alone almost give the label on the training rows: the label's class by each value
    (numbers in 20 quantile bins) right for >= 98 % of rows (and 10 points above the commonest class), or, for a
    number, |Spearman rho| >= 0.98 — often a column recorded after the outcome, or another target, missing when
    the model is used. Said in the data summary, not refused: the user knows whether it will be there."""
    import numpy as np
    import pandas as pd

    y = pd.Series(labels)
    out = []
    for col in table.columns:
        x = table[col].reset_index(drop=True)
        numeric = pd.api.types.is_numeric_dtype(x)
        if not numeric and x.astype(str).nunique() > len(x) / 5:
            continue  # (nearly one row per value: any label "follows" it; the encoder drops such values anyway)
        if regression:
            xs = x if numeric else x.astype(str).map(pd.Series(y.astype(float)).groupby(x.astype(str)).mean())
            ok = xs.notna() & y.astype(float).notna()
            if ok.sum() < 10 or xs[ok].nunique() < 2:
                continue
            rho = float(pd.Series(xs[ok]).rank().corr(y.astype(float)[ok].rank()))
            if np.isfinite(rho) and abs(rho) >= STAND_IN:
                out.append(f"column {col!r} alone follows the label almost exactly on the training rows (Spearman "
                           f"{rho:+.3f}): if it is not known when the model is used, leave it out of features")
            continue
        keys = pd.qcut(x, 20, duplicates="drop").astype(str) if numeric and x.nunique() > 20 else x.astype(str)
        right = pd.crosstab(keys, y).max(axis=1).sum() / len(y)
        common = y.value_counts().iloc[0] / len(y)
        if right >= STAND_IN and right - common >= 0.1:
            out.append(f"column {col!r} alone gives the label of {right:.1%} of the training rows: if it is not "
                       "known when the model is used (recorded after the outcome, or another target), leave it "
                       "out of features")
    return out


def label_warnings(splits: dict[str, Examples], labels: list[str], sep: str) -> None:
    """Multi-label: labels the model can hardly learn (one training example) or never saw (in validation or
    test data: left out of the targets), said in the data summary's warnings."""
    train = splits["train"]
    rare = [lab for lab, n in label_counts(train.labels or [], sep).items() if n == 1 and lab in labels]
    if rare:
        train.warnings.append(f"{len(rare)} label(s) with a single training example, hardly learnable: "
                              f"{', '.join(map(repr, rare[:10]))}{' ...' if len(rare) > 10 else ''}")
    known = set(labels)
    for name in ("val", "test"):
        if name in splits:
            unseen = sorted({lab for s in sets_of(splits[name].labels or [], sep) for lab in s} - known)
            if unseen:
                splits[name].warnings.append(
                    f"{name} data has {len(unseen)} label(s) never seen in training, left out of its targets: "
                    f"{', '.join(map(repr, unseen[:10]))}{' ...' if len(unseen) > 10 else ''}")


def set_thresholds(out: Predictor, proba: np.ndarray, y: np.ndarray, source: str) -> None:
    """Multi-label: each label's decision threshold, chosen by its F1 on honest validation predictions."""
    thresholds, notes = tune_thresholds(proba, y)
    out.thresholds_ = thresholds
    out.history_["thresholds"] = {"chosen_by": f"each label's F1 on the {source} ({len(y)} examples)",
                                  "median": round(float(np.median(thresholds)), 4), "notes": notes}


def set_intervals(out: Predictor, pred: np.ndarray, y: np.ndarray, coverage: float, source: str) -> None:
    """Regression: the split-conformal half-width of the prediction intervals, from the absolute residuals of
    honest validation predictions (none when there are too few of them for the coverage asked)."""
    q = conformal_halfwidth(np.abs(y - pred[:, 0]), coverage)
    if not np.isfinite(q):
        need = int(np.ceil(coverage / (1 - coverage)))
        out.interval_ = None
        out.history_["interval"] = {"note": f"no prediction intervals: {len(y)} validation example(s), "
                                            f"{coverage:g} coverage needs at least {need}"}
        return
    out.interval_ = {"coverage": coverage, "halfwidth": q, "n": int(len(y)),
                     "method": f"split conformal prediction on the {source}: pred ± the "
                               f"⌈(n+1)·{coverage:g}⌉-th smallest absolute residual"}
    out.history_["interval"] = dict(out.interval_)
