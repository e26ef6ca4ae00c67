"""`probe`: frozen backbone features (cached on disk) + a multinomial logistic-regression head."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from .base import FitContext, Strategy, register_strategy
from .features import extract_features
from .imbalance import imbalance

C_GRID = (0.01, 0.1, 1.0, 10.0)


@register_strategy
class Probe(Strategy):
    """Linear probe: frozen backbone features (cached) and a logistic-regression head whose C is chosen on
    validation. Fastest; the default."""

    name = "probe"
    trains_backbone = False

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        t0 = time.perf_counter()
        kw = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache, "num_workers": cfg.num_workers,
              "progress": ctx.progress, "runtime": cfg.runtime}
        x_tr = extract_features(model.backbone, train, desc="train features", **kw)
        x_va = extract_features(model.backbone, val, desc="val features", **kw)
        t_feat = time.perf_counter() - t0
        y_tr, y_va = np.asarray(ctx.targets(train)), np.asarray(ctx.targets(val))
        mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
        z_tr, z_va = (x_tr - mu) / sd, (x_va - mu) / sd
        grid = [cfg.probe_c] if cfg.probe_c else list(C_GRID)
        balance = imbalance(y_tr, len(ctx.classes), cfg)
        rows, best = [], None
        t1 = time.perf_counter()
        for c in grid:
            # one BLAS thread: lbfgs on (N, D<=1280) is overhead-bound, and multi-threaded OpenBLAS made these
            # fits 10-40x slower on the 2-core machine (benchmarks/throughput.md)
            with threadpool_limits(1):
                lr = LogisticRegression(C=c, max_iter=2000, random_state=cfg.seed,
                                        class_weight="balanced" if balance["weighted"] else None).fit(z_tr, y_tr)
            p = lr.predict_proba(z_va)
            full = np.zeros((len(y_va), len(ctx.classes)))
            full[:, lr.classes_] = p
            acc = float((full.argmax(1) == y_va).mean())
            # imbalanced data: choose C by balanced accuracy (mean per-class recall), else plain accuracy
            score = float(balanced_accuracy_score(y_va, full.argmax(1))) if balance["weighted"] else acc
            clipped = np.clip(full, 1e-12, 1)
            nll = float(log_loss(y_va, clipped / clipped.sum(1, keepdims=True), labels=range(len(ctx.classes))))
            rows.append({"C": c, "val_acc": round(acc, 4), "val_loss": round(nll, 4)}
                        | ({"val_balanced_acc": round(score, 4)} if balance["weighted"] else {}))
            if best is None or (score, -nll) > (best[0], -best[1]):
                best = (score, nll, c, lr)
        assert best is not None
        _set_head(model, best[3], mu, sd, len(ctx.classes))
        return {"feature_seconds": round(t_feat, 2), "head_seconds": round(time.perf_counter() - t1, 2),
                "fit_seconds": round(time.perf_counter() - t0, 2),
                "C": best[2], "candidates": rows, "imbalance": balance}


def _set_head(model: Classifier, lr: LogisticRegression, mu: np.ndarray, sd: np.ndarray, n: int) -> None:
    """Fold the standardisation into the linear head: w·(x-mu)/sd + b = (w/sd)·x + (b - (w/sd)·mu)."""
    coef, icpt = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one logit; softmax([-z/2, z/2]) == sigmoid(z)
        coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
    w = np.zeros((n, coef.shape[1]))
    b = np.full(n, -1e4)  # a class absent from training can never be predicted
    w[lr.classes_] = coef / sd
    b[lr.classes_] = icpt - (coef / sd) @ mu
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
