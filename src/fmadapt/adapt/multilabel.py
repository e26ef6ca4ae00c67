"""The probe for multi-label data (task multilabel): frozen features (cached) and one logistic regression per
label (one-vs-rest, sigmoid outputs). C and the feature scaling are chosen on held-out predictions (the
validation split, or out of fold on small data) by micro-F1 at thresholds tuned per label on those predictions,
ties broken by the lower binary cross-entropy; the head is then refit on all labeled data. The fit pipeline
tunes the decision thresholds the model keeps on its honest validation predictions (fitting.py)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from ..runtime.features import extract_features
from ..tasks.multilabel import tuned_micro_f1
from .base import FitContext
from .headsearch import C_MAX, C_MIN, C_START, MAX_EXTEND, SCALINGS, scale

#: up to this many labeled examples (training + validation), C is chosen out of fold (as the probe does)
CV_MAX = 1000
#: the logit of a label that is constant in the training data (never / always present): sigmoid 0 or 1
CONSTANT_LOGIT = 1e4


class OvrHead:
    """One logistic regression per label on standardised features; a label without positive (or negative)
    training examples is constant."""

    def __init__(self, z: np.ndarray, y: np.ndarray, c: float, seed: int) -> None:
        n_labels = y.shape[1]
        self.coef_ = np.zeros((n_labels, z.shape[1]))
        self.intercept_ = np.zeros(n_labels)
        # one BLAS thread: lbfgs on (N, D<=1280) is overhead-bound (probe.py, benchmarks/throughput.md)
        with threadpool_limits(1):
            for j in range(n_labels):
                pos = int(y[:, j].sum())
                if pos == 0 or pos == len(y):
                    self.intercept_[j] = CONSTANT_LOGIT if pos else -CONSTANT_LOGIT
                    continue
                lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y[:, j] > 0.5)
                self.coef_[j], self.intercept_[j] = lr.coef_[0], lr.intercept_[0]

    def proba(self, z: np.ndarray) -> np.ndarray:
        logits = np.clip(z @ self.coef_.T + self.intercept_, -50, 50)
        return 1.0 / (1.0 + np.exp(-logits))


def _score(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(micro-F1 at thresholds tuned on these predictions, mean binary cross-entropy): the ranking key."""
    f1 = tuned_micro_f1(p, y)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    bce = float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())
    return f1, bce


def fit_multilabel_probe(model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
                         ) -> dict[str, Any]:
    """Train `model`'s head in place (see the module's doc); the history as the probe's."""
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache, "num_workers": cfg.num_workers,
          "progress": ctx.progress, "runtime": cfg.runtime}
    x_tr = ctx.with_table(extract_features(model.backbone, train, desc="train features", **kw), train)
    x_va = ctx.with_table(extract_features(model.backbone, val, desc="val features", **kw), val)
    t_feat = time.perf_counter() - t0
    y_tr, y_va = ctx.indicator(train), ctx.indicator(val)
    refit = bool(cfg.refit and ctx.refit_on_val and len(y_va))
    x_all, y_all = (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])) if refit else (x_tr, y_tr)
    t1 = time.perf_counter()
    if refit and len(y_all) <= CV_MAX:
        folds = min(5, len(y_all))
        selection = f"{folds}-fold cross-validation on training + validation data ({len(y_all)} examples)"
        parts = list(KFold(folds, shuffle=True, random_state=cfg.seed).split(x_all))
        y_held = y_all

        def evaluate(c: float, scaling: str) -> np.ndarray:
            oof = np.zeros(y_all.shape)
            for tr, te in parts:
                mu, sd = scale(x_all[tr], scaling)
                oof[te] = OvrHead((x_all[tr] - mu) / sd, y_all[tr], c, cfg.seed).proba((x_all[te] - mu) / sd)
            return oof
    else:
        selection = f"validation split ({len(y_va)} examples)"
        y_held = y_va

        def evaluate(c: float, scaling: str) -> np.ndarray:
            mu, sd = scale(x_tr, scaling)
            return OvrHead((x_tr - mu) / sd, y_tr, c, cfg.seed).proba((x_va - mu) / sd)

    rows: list[dict[str, Any]] = []
    results: dict[tuple[float, str], tuple[tuple[float, float], np.ndarray]] = {}

    def run(c: float, scaling: str) -> None:
        c = float(f"{c:.3g}")
        if (c, scaling) in results or not C_MIN <= c <= C_MAX:
            return
        p = evaluate(c, scaling)
        f1, bce = _score(p, y_held)
        results[(c, scaling)] = ((f1, -bce), p)
        rows.append({"C": c, "scaling": scaling, "val_micro_f1": round(f1, 4), "val_bce": round(bce, 4)})

    def best(scaling: str) -> float:
        return max((k for k in results if k[1] == scaling), key=lambda k: results[k][0])[0]

    for scaling in SCALINGS:
        if cfg.probe_c is not None:
            run(cfg.probe_c, scaling)
            continue
        for c in C_START:
            run(c, scaling)
        for _ in range(MAX_EXTEND):  # past an edge while the edge wins: the grid does not bound the search
            c = best(scaling)
            if c == min(k[0] for k in results if k[1] == scaling):
                run(c / 10, scaling)
            elif c == max(k[0] for k in results if k[1] == scaling):
                run(c * 10, scaling)
            else:
                break
        c = best(scaling)
        run(c / 10 ** 0.5, scaling)
        run(c * 10 ** 0.5, scaling)
    c, scaling = max(results, key=lambda k: results[k][0])
    held = results[(c, scaling)][1]
    mu, sd = scale(x_all, scaling)
    head = OvrHead((x_all - mu) / sd, y_all, c, cfg.seed)
    _set_head(model, head, mu, sd)
    honest = held[len(y_tr):] if y_held is y_all else held  # out of fold: never seen by its head
    constant = int(((y_all.sum(0) == 0) | (y_all.sum(0) == len(y_all))).sum())
    return ({"_val_proba": honest} if refit else {}) | {
        "feature_seconds": round(t_feat, 2), "head_seconds": round(time.perf_counter() - t1, 2),
        "fit_seconds": round(time.perf_counter() - t0, 2), "C": c, "scaling": scaling, "metric": "micro_f1",
        "head": "one logistic regression per label (one-vs-rest), sigmoid outputs",
        "selection": f"{selection}, by micro-F1 at thresholds tuned per label, ties broken by the lower binary "
                     "cross-entropy",
        "trained_on": (f"training + validation data ({len(y_all)} examples)" if refit
                       else f"training split ({len(y_tr)} examples)"),
        "constant_labels": constant, "candidates": sorted(rows, key=lambda r: (r["scaling"], r["C"]))}


def _set_head(model: Classifier, head: OvrHead, mu: np.ndarray, sd: np.ndarray) -> None:
    """Fold the standardisation into the linear head (as probe._set_head): w·(x-mu)/sd + b."""
    w = head.coef_ / sd
    model.set_linear(w, head.intercept_ - w @ mu)
