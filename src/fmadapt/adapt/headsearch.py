"""The probe head's model selection: the inverse regularisation C on a log scale that is not bounded by a
grid, and class weighting as a candidate rather than a rule, both judged on held-out predictions (the
validation split, or out of fold) by the run's metric (`metric`: accuracy, balanced_accuracy, macro_f1).

Why not a fixed grid: on data none of our benchmarks use, the best C sat at the grid's edge (10 classes of
32 px photos chose 0.01, its lowest value, where 0.003 was 1 point better), and class weighting by a ratio
rule cost a point of accuracy on 6 imbalanced question types. So the search starts from decades, extends
past an edge while the edge wins, then tries the half decades around the winner; weighted and unweighted
heads both run when the classes are imbalanced, features scaled one by one and all alike both run, and the
metric decides."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import log_loss

from ..evaluate.metrics import metric_score

#: the decades every search starts from
C_START = (0.01, 0.1, 1.0, 10.0)
#: the search never leaves this range (C far below it predicts the prior; far above, the loss is unregularised)
C_MIN, C_MAX = 1e-5, 1e4
#: decades added past an edge of the starting grid, at most
MAX_EXTEND = 3
#: under class_weight="auto", a class-weighted head competes once largest/smallest class count exceeds this
#: (below it, weighting changes the fit too little to be worth a second search)
COMPETE_RATIO = 1.5

#: how features are scaled before the regression: "standard" (each feature to unit variance) or "global"
#: (centred, one scale for all: the features' own geometry). Both compete: per-feature scaling won on texts and
#: Fashion-MNIST, and lost 1.5 points on the 8x8 digits, where it inflates features that barely vary
SCALINGS = ("standard", "global")

#: (C, class-weighted, scaling) -> probabilities (N, n_cls) of the held-out rows
Evaluate = Callable[[float, bool, str], np.ndarray]


def weightings(class_weight: str, ratio: float) -> list[bool]:
    """The class weightings that compete: both under "auto" when the classes are imbalanced."""
    if class_weight == "balanced":
        return [True]
    if class_weight == "none" or ratio <= COMPETE_RATIO:
        return [False]
    return [False, True]


def _rounded(c: float) -> float:
    return float(f"{c:.3g}")


def search(evaluate: Evaluate, y: np.ndarray, n_cls: int, metric: str, weighted: list[bool],
           fixed_c: float | None = None, extra: dict[str, Any] | None = None,
           scalings: tuple[str, ...] = SCALINGS) -> tuple[list[dict[str, Any]], tuple[float, bool, str], np.ndarray]:
    """Run the candidates: (rows of the candidates table, the winner's (C, weighted, scaling), its held-out
    probabilities). Each weighting x scaling searches its own C. The ranking key is the metric, ties broken by
    the lower log-loss. With `fixed_c` only the weightings and scalings compete."""
    rows: list[dict[str, Any]] = []
    results: dict[tuple[float, bool, str], tuple[tuple[float, float], np.ndarray]] = {}

    def run(c: float, w: bool, sc: str) -> None:
        c = _rounded(c)
        if (c, w, sc) in results or not C_MIN <= c <= C_MAX:
            return
        p = evaluate(c, w, sc)
        pred = p.argmax(1)
        score = metric_score(metric, y, pred, n_cls)
        clipped = np.clip(p, 1e-12, 1)
        nll = float(log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=range(n_cls)))
        results[(c, w, sc)] = ((score, -nll), p)
        row = {"C": c, "class_weight": "balanced" if w else "none", "scaling": sc,
               "val_acc": round(float((pred == y).mean()), 4), "val_loss": round(nll, 4)}
        if metric != "accuracy":
            row[f"val_{metric}"] = round(score, 4)
        rows.append(row | (extra or {}))

    def best(w: bool, sc: str) -> float:
        return max((k for k in results if k[1:] == (w, sc)), key=lambda k: results[k][0])[0]

    for w in weighted:
        for sc in scalings:
            if fixed_c is not None:
                run(fixed_c, w, sc)
                continue
            for c in C_START:
                run(c, w, sc)
            for _ in range(MAX_EXTEND):  # past an edge while the edge wins
                cs = sorted(k[0] for k in results if k[1:] == (w, sc))
                b = best(w, sc)
                if b == cs[0] and b / 10 >= C_MIN:
                    run(b / 10, w, sc)
                elif b == cs[-1] and b * 10 <= C_MAX:
                    run(b * 10, w, sc)
                else:
                    break
            b = best(w, sc)
            for c in (b / math.sqrt(10), b * math.sqrt(10)):  # the half decades around the winner
                run(c, w, sc)
    winner = max(results, key=lambda k: results[k][0])
    return rows, winner, results[winner][1]


def scale(x: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the rows of x, the scale per feature ("standard") or one for all ("global": the root
    mean square of the features' standard deviations, so that C means about the same under both)."""
    mu, sd = x.mean(0), x.std(0)
    if scaling == "global":
        return mu, np.full_like(sd, np.sqrt(np.mean(sd**2)) + 1e-6)
    if scaling != "standard":
        raise ValueError(f"unknown scaling {scaling!r}")
    return mu, sd + 1e-6
