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
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from ..runtime.features import extract_features
from .base import FitContext
from .headsearch import MAX_EXTEND, SCALINGS, scale

#: up to this many labeled examples (training + validation), α is chosen out of fold
CV_MAX = 1000
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
    kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache, "num_workers": cfg.num_workers,
                          "progress": ctx.progress, "runtime": cfg.runtime}
    x_tr = ctx.with_table(extract_features(model.backbone, train, desc="train features", **kw), train)
    x_va = ctx.with_table(extract_features(model.backbone, val, desc="val features", **kw), val)
    t_feat = time.perf_counter() - t0
    y_tr, y_va = ctx.standardised(train), ctx.standardised(val)
    refit = bool(cfg.refit and ctx.refit_on_val and len(y_va))
    x_all, y_all = (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])) if refit else (x_tr, y_tr)
    t1 = time.perf_counter()
    if refit and len(y_all) <= CV_MAX:
        folds = min(5, len(y_all))
        selection = f"{folds}-fold cross-validation on training + validation data ({len(y_all)} examples)"
        parts = list(KFold(folds, shuffle=True, random_state=cfg.seed).split(x_all))
        y_held = y_all

        def evaluate(alpha: float, scaling: str) -> np.ndarray:
            oof = np.zeros(len(y_all))
            for tr, te in parts:
                mu, sd = scale(x_all[tr], scaling)
                oof[te] = _ridge((x_all[tr] - mu) / sd, y_all[tr], alpha).predict((x_all[te] - mu) / sd)
            return oof
    else:
        selection = f"validation split ({len(y_va)} examples)"
        y_held = y_va

        def evaluate(alpha: float, scaling: str) -> np.ndarray:
            mu, sd = scale(x_tr, scaling)
            return _ridge((x_tr - mu) / sd, y_tr, alpha).predict((x_va - mu) / sd)

    rows: list[dict[str, Any]] = []
    results: dict[tuple[float, str], tuple[float, np.ndarray]] = {}

    def run(alpha: float, scaling: str) -> None:
        alpha = float(f"{alpha:.3g}")
        if (alpha, scaling) in results or not ALPHA_MIN <= alpha <= ALPHA_MAX:
            return
        p = evaluate(alpha, scaling)
        rmse = float(np.sqrt(((p - y_held) ** 2).mean()))
        results[(alpha, scaling)] = (rmse, p)
        rows.append({"alpha": alpha, "scaling": scaling, "val_rmse_std": round(rmse, 4)})

    def best(scaling: str) -> float:
        return min((k for k in results if k[1] == scaling), key=lambda k: results[k][0])[0]

    for scaling in SCALINGS:
        if cfg.probe_c is not None:  # given (or chosen before a refit): α = 1 / C, only the scaling competes
            run(1.0 / cfg.probe_c, scaling)
            continue
        for a in ALPHA_START:
            run(a, scaling)
        for _ in range(MAX_EXTEND):  # past an edge while the edge wins
            a = best(scaling)
            tried = [k[0] for k in results if k[1] == scaling]
            if a == min(tried):
                run(a / 10, scaling)
            elif a == max(tried):
                run(a * 10, scaling)
            else:
                break
        a = best(scaling)
        run(a / 10 ** 0.5, scaling)
        run(a * 10 ** 0.5, scaling)
    alpha, scaling = min(results, key=lambda k: results[k][0])
    held = results[(alpha, scaling)][1]
    mu, sd = scale(x_all, scaling)
    head = _ridge((x_all - mu) / sd, y_all, alpha)
    w = head.coef_ / sd
    model.set_linear(w[None, :], [head.intercept_ - w @ mu])
    honest = held[len(y_tr):] if y_held is y_all else held  # out of fold: never seen by its head
    return ({"_val_proba": ctx.unstandardise(honest)[:, None]} if refit else {}) | {
        "feature_seconds": round(t_feat, 2), "head_seconds": round(time.perf_counter() - t1, 2),
        "fit_seconds": round(time.perf_counter() - t0, 2), "alpha": alpha, "scaling": scaling, "metric": "rmse",
        # (the equivalent C = 1/α: what a refit on more data passes back as probe_c, keeping the chosen strength)
        "C": float(f"{1.0 / alpha:.6g}"),
        "head": "ridge regression on the standardised target",
        "selection": f"{selection}, by RMSE",
        "trained_on": (f"training + validation data ({len(y_all)} examples)" if refit
                       else f"training split ({len(y_tr)} examples)"),
        "candidates": sorted(rows, key=lambda r: (r["scaling"], r["alpha"]))}
