"""What the multi-label and regression probes share (adapt/multilabel.py, adapt/regression.py): the frozen features
of the training and validation splits (with the table columns the model reads), held-out predictions of a
candidate head (the validation split, or out of fold on small data), and the search of its regularisation strength
on a log scale that extends past the edge of its starting grid while the edge wins (as headsearch.search does for
the single-label probe, whose candidates also compete over class weighting)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from ..config import FitConfig
from ..data.examples import Examples
from ..model import Classifier
from ..runtime.features import extract_features
from .base import FitContext
from .headsearch import MAX_EXTEND, SCALINGS, scale

#: up to this many labeled examples (training + validation), the strength is chosen out of fold
CV_MAX = 1000

#: (standardised training features, their targets, standardised features to predict, strength) -> predictions
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


@dataclass
class ProbeData:
    """The probe's inputs and targets; `x_all`/`y_all` are what the final head trains on (training + validation
    data when the validation split was carved from the training data and `refit` is on)."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    refit: bool
    feature_seconds: float

    @cached_property
    def x_all(self) -> np.ndarray:
        return np.concatenate([self.x_tr, self.x_va]) if self.refit else self.x_tr

    @cached_property
    def y_all(self) -> np.ndarray:
        return np.concatenate([self.y_tr, self.y_va]) if self.refit else self.y_tr

    def trained_on(self) -> str:
        return (f"training + validation data ({len(self.y_tr) + len(self.y_va)} examples)" if self.refit
                else f"training split ({len(self.y_tr)} examples)")


def probe_data(model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext,
               targets: Callable[[Examples], np.ndarray]) -> ProbeData:
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache, "num_workers": cfg.num_workers,
                          "progress": ctx.progress, "runtime": cfg.runtime}
    x_tr = ctx.with_table(extract_features(model.backbone, train, desc="train features", **kw), train)
    x_va = ctx.with_table(extract_features(model.backbone, val, desc="val features", **kw), val)
    y_va = targets(val)
    return ProbeData(x_tr, targets(train), x_va, y_va, bool(cfg.refit and ctx.refit_on_val and len(y_va)),
                     time.perf_counter() - t0)


class HeldOut:
    """Held-out predictions of a head fitted with strength c on features scaled one way: out of fold (k-fold over
    training + validation data) when the final head refits on both and they are few, else on the validation split.
    `y` are the targets of those predictions; `honest(pred)` the validation rows' part (never seen by its head)."""

    def __init__(self, data: ProbeData, fit_predict: FitPredict, seed: int) -> None:
        self.data, self.fit_predict = data, fit_predict
        x_all, y_all = data.x_all, data.y_all
        self.parts: list[Any] | None = None  # (the folds; None: the validation split)
        if data.refit and len(y_all) <= CV_MAX:
            folds = min(5, len(y_all))
            self.selection = f"{folds}-fold cross-validation on training + validation data ({len(y_all)} examples)"
            self.parts = list(KFold(folds, shuffle=True, random_state=seed).split(x_all))
            self.y = y_all
        else:
            self.selection = f"validation split ({len(data.y_va)} examples)"
            self.y = data.y_va

    def predict(self, c: float, scaling: str) -> np.ndarray:
        d = self.data
        if self.parts is None:
            mu, sd = scale(d.x_tr, scaling)
            return self.fit_predict((d.x_tr - mu) / sd, d.y_tr, (d.x_va - mu) / sd, c)
        x, y = d.x_all, d.y_all
        oof = np.zeros(y.shape)
        for tr, te in self.parts:
            mu, sd = scale(x[tr], scaling)
            oof[te] = self.fit_predict((x[tr] - mu) / sd, y[tr], (x[te] - mu) / sd, c)
        return oof

    def honest(self, pred: np.ndarray) -> np.ndarray:
        return pred if self.parts is None else pred[len(self.data.y_tr):]


def search_strength(score: Callable[[float, str], tuple[float, ...]], start: Sequence[float], lo: float, hi: float,
                    fixed: float | None = None) -> tuple[float, str]:
    """The (strength, scaling) with the largest `score` key: per scaling, the `start` grid, then a decade past an
    edge while the edge wins (at most MAX_EXTEND), then the half decades around the best; only `fixed` when given.
    Strengths are rounded to 3 significant digits and kept within [lo, hi]; each is scored once."""
    keys: dict[tuple[float, str], tuple[float, ...]] = {}

    def run(c: float, scaling: str) -> None:
        c = float(f"{c:.3g}")
        if (c, scaling) not in keys and lo <= c <= hi:
            keys[(c, scaling)] = score(c, scaling)

    def tried(scaling: str) -> list[float]:
        return [k[0] for k in keys if k[1] == scaling]

    def best(scaling: str) -> float:
        return max((k for k in keys if k[1] == scaling), key=lambda k: keys[k])[0]

    for scaling in SCALINGS:
        if fixed is not None:
            run(fixed, scaling)
            continue
        for c in start:
            run(c, scaling)
        for _ in range(MAX_EXTEND):  # past an edge while the edge wins: the grid does not bound the search
            c = best(scaling)
            if c == min(tried(scaling)):
                run(c / 10, scaling)
            elif c == max(tried(scaling)):
                run(c * 10, scaling)
            else:
                break
        c = best(scaling)
        run(c / 10 ** 0.5, scaling)
        run(c * 10 ** 0.5, scaling)
    return max(keys, key=lambda k: keys[k])
