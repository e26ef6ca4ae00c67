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
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from ..tasks.multilabel import tuned_micro_f1
from .base import FitContext
from .headsearch import C_MAX, C_MIN, C_START, scale
from .heldout import HeldOut, probe_data, search_strength

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
    data = probe_data(model, train, val, cfg, ctx, ctx.indicator)
    held = HeldOut(data, lambda z_tr, y_tr, z_te, c: OvrHead(z_tr, y_tr, c, cfg.seed).proba(z_te), cfg.seed)
    t1 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    preds: dict[tuple[float, str], np.ndarray] = {}

    def score(c: float, scaling: str) -> tuple[float, float]:
        p = preds[(c, scaling)] = held.predict(c, scaling)
        f1, bce = _score(p, held.y)
        rows.append({"C": c, "scaling": scaling, "val_micro_f1": round(f1, 4), "val_bce": round(bce, 4)})
        return f1, -bce

    c, scaling = search_strength(score, C_START, C_MIN, C_MAX, cfg.probe_c)
    x_all, y_all = data.x_all, data.y_all
    mu, sd = scale(x_all, scaling)
    _set_head(model, OvrHead((x_all - mu) / sd, y_all, c, cfg.seed), mu, sd)
    constant = int(((y_all.sum(0) == 0) | (y_all.sum(0) == len(y_all))).sum())
    return ({"_val_proba": held.honest(preds[(c, scaling)])} if data.refit else {}) | {
        "feature_seconds": round(data.feature_seconds, 2), "head_seconds": round(time.perf_counter() - t1, 2),
        "fit_seconds": round(time.perf_counter() - t0, 2), "C": c, "scaling": scaling, "metric": "micro_f1",
        "head": "one logistic regression per label (one-vs-rest), sigmoid outputs",
        "selection": f"{held.selection}, by micro-F1 at thresholds tuned per label, ties broken by the lower binary "
                     "cross-entropy",
        "trained_on": data.trained_on(), "constant_labels": constant,
        "candidates": sorted(rows, key=lambda r: (r["scaling"], r["C"]))}


def _set_head(model: Classifier, head: OvrHead, mu: np.ndarray, sd: np.ndarray) -> None:
    """Fold the standardisation into the linear head (as probe._set_head): w·(x-mu)/sd + b."""
    w = head.coef_ / sd
    model.set_linear(w, head.intercept_ - w @ mu)
