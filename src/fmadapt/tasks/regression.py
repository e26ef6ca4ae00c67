"""Regression (a numeric target: a rating, a price, a grade): reading the target, its standardisation, metrics,
split-conformal prediction intervals and prediction columns.

Pure numpy / scikit-learn / scipy, no torch: the fit pipeline (config `task="regression"`) and the fitted model use
the same functions. Intervals: split conformal prediction (Vovk et al.; Lei et al., 2018) — the absolute residuals
of honest validation predictions give one half-width q, the ⌈(n+1)·coverage⌉-th smallest of n, so that a new
input's interval ŷ ± q holds its target with probability ≥ coverage when the data are exchangeable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

#: how many (target, prediction) pairs the metrics keep for the report's residual plot
RESIDUAL_SAMPLE = 500


def parse_targets(labels: Sequence[str], ids: Sequence[str], source: str) -> np.ndarray:
    """The targets of label strings as float64; a value that is not a finite number is a DataError naming the
    row and the value."""
    out = np.empty(len(labels), dtype=np.float64)
    for i, v in enumerate(labels):
        try:
            x = float(str(v).strip().replace(",", "")) if not isinstance(v, (int, float)) else float(v)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            raise DataError(f"{source}: row {_row(ids[i] if i < len(ids) else i)}: target {str(v)[:40]!r} is not a "
                            "number; task regression needs a numeric label column (or use --task classification)")
        out[i] = x
    return out


def _row(example_id: str | int) -> str:
    """A table example's id is its row position among the data rows: the file's line is 2 further (header)."""
    try:
        return str(int(example_id) + 2)
    except ValueError:
        return str(example_id)


def canonical(labels: Sequence[str], ids: Sequence[str], source: str) -> list[str]:
    """Target strings in one form ("4", "3.5"), checked numeric (what splits, ids and manifests carry)."""
    return [format(x, ".12g") for x in parse_targets(labels, ids, source)]


def looks_continuous(labels: Sequence[str]) -> bool:
    """Whether class labels look like a numeric, continuous target (every label a number, and more than 20
    distinct values or any fractional one among more than 10): `fit` then suggests `--task regression`."""
    values = []
    for v in labels:
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            return False
    distinct = set(values)
    if len(distinct) <= 10:
        return False
    return len(distinct) > 20 or any(not float(x).is_integer() for x in distinct)


def conformal_halfwidth(abs_residuals: np.ndarray, coverage: float) -> float:
    """Split conformal: the ⌈(n+1)·coverage⌉-th smallest absolute residual (inf when n is too small for the
    coverage asked: intervals cannot be promised from so few validation examples)."""
    r = np.sort(np.abs(np.asarray(abs_residuals, dtype=float)))
    k = math.ceil((len(r) + 1) * coverage)
    return float(r[k - 1]) if 1 <= k <= len(r) else math.inf


def regression_metrics(y: np.ndarray, pred: np.ndarray, halfwidth: float | None = None) -> dict[str, Any]:
    """RMSE, MAE, R², Spearman's rank correlation; with an interval half-width, the share of targets inside
    pred ± halfwidth (`interval_coverage`) and the interval's width."""
    from scipy.stats import spearmanr

    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    n = len(y)
    out: dict[str, Any] = {"task": "regression", "n": int(n)}
    if n == 0:
        return out | {"rmse": math.nan, "mae": math.nan, "r2": math.nan, "spearman": math.nan}
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    rho = spearmanr(y, pred).statistic if n > 1 and np.ptp(y) > 0 and np.ptp(pred) > 0 else math.nan
    out |= {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean()),
            "r2": float(1.0 - (err ** 2).sum() / ss_tot) if ss_tot > 0 else math.nan, "spearman": float(rho),
            "target_mean": float(y.mean()), "target_std": float(y.std())}
    if halfwidth is not None and math.isfinite(halfwidth):
        out["interval_coverage"] = float((np.abs(err) <= halfwidth).mean())
        out["interval_width"] = float(2 * halfwidth)
    # (the report's residual plot: up to RESIDUAL_SAMPLE pairs, evenly spaced over the examples)
    pick = np.linspace(0, n - 1, min(n, RESIDUAL_SAMPLE)).astype(int)
    out["residual_sample"] = {"target": [round(float(v), 4) for v in y[pick]],
                              "pred": [round(float(v), 4) for v in pred[pick]]}
    return out


def prediction_columns(pred: np.ndarray, halfwidth: float | None) -> pd.DataFrame:
    """`pred`, and `lower` / `upper` (the prediction interval) when the model has one."""
    cols: dict[str, Any] = {"pred": np.asarray(pred, dtype=float)}
    if halfwidth is not None:
        cols["lower"] = cols["pred"] - halfwidth
        cols["upper"] = cols["pred"] + halfwidth
    return pd.DataFrame(cols)
