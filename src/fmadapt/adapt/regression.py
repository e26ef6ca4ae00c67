"""The probe for a numeric target (task regression): frozen features (cached) and a ridge regression on the
standardised target. The ridge strength α (1 / `probe_c` when that is set) and the feature scaling are chosen on
held-out predictions (the validation split, or out of fold on small data) by RMSE; α's search starts from decades
and extends past an edge while the edge wins, as the classification probe's C; the head is then refit on all
labeled data. The head predicts the standardised target; the fitted model turns it back
(`Predictor.target_scale_`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from .base import FitContext
from .headsearch import scale
from .heldout import HeldOut, probe_data, search_strength

#: the decades every search starts from; it never leaves [ALPHA_MIN, ALPHA_MAX]
ALPHA_START = (0.1, 1.0, 10.0, 100.0, 1000.0)
ALPHA_MIN, ALPHA_MAX = 1e-4, 1e7


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> Ridge:
    with threadpool_limits(1):  # (small dense solves: threads cost more than they give on 2 cores)
        return Ridge(alpha=alpha).fit(z, y)


def fit_ridge_probe(model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
                    ) -> dict[str, Any]:
    """Train `model`'s one-output head in place (see the module's doc); the history as the probe's."""
    t0 = time.perf_counter()
    data = probe_data(model, train, val, cfg, ctx, ctx.standardised)
    held = HeldOut(data, lambda z_tr, y_tr, z_te, a: _ridge(z_tr, y_tr, a).predict(z_te), cfg.seed)
    t1 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    preds: dict[tuple[float, str], np.ndarray] = {}

    def score(alpha: float, scaling: str) -> tuple[float]:
        p = preds[(alpha, scaling)] = held.predict(alpha, scaling)
        rmse = float(np.sqrt(((p - held.y) ** 2).mean()))
        rows.append({"alpha": alpha, "scaling": scaling, "val_rmse_std": round(rmse, 4)})
        return (-rmse,)

    # (probe_c given, or passed back by a refit: α = 1 / C, only the scaling competes)
    alpha, scaling = search_strength(score, ALPHA_START, ALPHA_MIN, ALPHA_MAX,
                                     None if cfg.probe_c is None else 1.0 / cfg.probe_c)
    x_all = data.x_all
    honest = held.honest(preds[(alpha, scaling)])
    stacked: dict[str, Any] = {}
    if ctx.table is not None and cfg.table_head != "linear" and cfg.strategy == "probe" and len(data.y_va):
        from .probe import try_stack

        def text_head(x_fit: np.ndarray, y_fit: np.ndarray, x_pred: np.ndarray) -> np.ndarray:
            m, s = scale(x_fit, scaling)
            r = _ridge((x_fit - m) / s, y_fit, alpha)
            return (x_pred @ (r.coef_ / s) + (r.intercept_ - (r.coef_ / s) @ m))[:, None]

        stacked = try_stack(model, text_head, data.x_tr, data.y_tr, data.x_va, data.y_va, x_all, data.y_all,
                            honest, cfg, 1, regression=True)
        honest = stacked.pop("val", honest)
        x_all = x_all[:, :model.head.in_features] if model.stack is not None else x_all
    mu, sd = scale(x_all, scaling)
    head = _ridge((x_all - mu) / sd, data.y_all, alpha)
    w = head.coef_ / sd
    model.set_linear(w[None, :], [head.intercept_ - w @ mu])
    return ({"_val_proba": ctx.unstandardise(honest)[:, None]} if data.refit else {}) | stacked | {
        "feature_seconds": round(data.feature_seconds, 2), "head_seconds": round(time.perf_counter() - t1, 2),
        "fit_seconds": round(time.perf_counter() - t0, 2), "alpha": alpha, "scaling": scaling, "metric": "rmse",
        # (the equivalent C = 1/α: what a refit on more data passes back as probe_c, keeping the chosen strength)
        "C": float(f"{1.0 / alpha:.6g}"),
        "head": "ridge regression on the standardised target",
        "selection": f"{held.selection}, by RMSE", "trained_on": data.trained_on(),
        "candidates": sorted(rows, key=lambda r: (r["scaling"], r["alpha"]))}
