"""The probe head's search: C past the starting grid, half decades, class weighting judged by the metric."""

import numpy as np
import pytest

from fmadapt import ConfigError
from fmadapt.adapt.headsearch import C_MAX, C_MIN, metric_score, search, weightings
from fmadapt.adapt.probe import _val_evaluator
from fmadapt.config import FitConfig


def _peaked(best_c: float, n_cls: int = 2):
    """An evaluate() whose held-out accuracy falls with the distance (in decades) of C from best_c."""
    y = np.array([0, 1] * 50)
    seen = []

    def evaluate(c, weighted, scaling):
        seen.append((c, weighted))
        wrong = min(len(y), int(round(10 * abs(np.log10(c) - np.log10(best_c)))))
        pred = y.copy()
        pred[:wrong] = 1 - pred[:wrong]
        return np.eye(n_cls)[pred] * 0.8 + 0.1

    return evaluate, y, seen


@pytest.mark.parametrize("best_c, found", [(1e-3, 1e-3), (0.3, 0.316), (300.0, 316.0), (1e-7, C_MIN)])
def test_search_leaves_the_starting_grid_when_its_edge_wins(best_c, found):
    evaluate, y, seen = _peaked(best_c)
    rows, (c, weighted, _), _ = search(evaluate, y, 2, "accuracy", [False], scalings=("standard",))
    assert c == pytest.approx(found, rel=0.01) and weighted is False
    assert all(C_MIN <= s[0] <= C_MAX for s in seen)
    assert len(seen) == len(set(seen)) == len(rows)  # every candidate once, each in the table


def test_fixed_c_runs_only_the_weightings():
    evaluate, y, seen = _peaked(1.0)
    rows, (c, _, _), _ = search(evaluate, y, 2, "accuracy", [False, True], fixed_c=0.5, scalings=("standard",))
    assert c == 0.5 and seen == [(0.5, False), (0.5, True)]


def test_weightings_compete_only_on_imbalanced_auto():
    assert weightings("auto", 1.2) == [False]
    assert weightings("auto", 4.0) == [False, True]
    assert weightings("none", 10.0) == [False] and weightings("balanced", 1.0) == [True]


def test_metric_scores():
    y, pred = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0])
    assert metric_score("accuracy", y, pred, 2) == 0.8
    assert metric_score("balanced_accuracy", y, pred, 2) == 0.5
    assert metric_score("macro_f1", y, pred, 2) == pytest.approx((8 / 9 + 0) / 2)
    with pytest.raises(ConfigError):
        FitConfig(metric="auc")


def test_the_metric_decides_the_class_weighting():
    """Overlapping classes 10:1: the unweighted head has the higher accuracy (it favours the large class),
    the weighted one the higher balanced accuracy; each metric picks its own."""
    rng = np.random.default_rng(0)

    def draw(n0, n1):
        x = np.vstack([rng.normal(0, 1, (n0, 8)), rng.normal(0.8, 1, (n1, 8))])
        return x, np.array([0] * n0 + [1] * n1)

    x_tr, y_tr = draw(2000, 200)
    x_va, y_va = draw(2000, 200)
    evaluate = _val_evaluator(x_tr, y_tr, x_va, 2, 0)
    chosen = {}
    for metric in ("accuracy", "balanced_accuracy"):
        rows, (_, weighted, _), _ = search(evaluate, y_va, 2, metric, [False, True], scalings=("standard",))
        chosen[metric] = weighted
        assert {r["class_weight"] for r in rows} == {"none", "balanced"}
    assert chosen == {"accuracy": False, "balanced_accuracy": True}


def test_global_scaling_wins_where_per_feature_scaling_inflates_noise():
    """5 informative features and 300 that barely vary: scaled one by one, the noise gets as loud as the
    signal and 60 examples overfit it; scaled all alike it stays quiet. Both scalings run; the better wins."""
    rng = np.random.default_rng(0)

    def draw(n):
        y = np.arange(n) % 2
        x = np.hstack([rng.normal(0, 1, (n, 5)) + 0.8 * y[:, None], rng.normal(0, 0.01, (n, 300))])
        return x, y

    (x_tr, y_tr), (x_va, y_va) = draw(60), draw(400)
    rows, (_, _, scaling), _ = search(_val_evaluator(x_tr, y_tr, x_va, 2, 0), y_va, 2, "accuracy", [False])
    assert {r["scaling"] for r in rows} == {"standard", "global"}
    best = {sc: max(r["val_acc"] for r in rows if r["scaling"] == sc) for sc in ("standard", "global")}
    assert scaling == "global" and best["global"] > best["standard"] + 0.03
