"""Fitting the classical text candidate of `auto`: character and word n-gram TF-IDF + a logistic regression
(the model itself, and how it predicts and is saved: runtime/ngram.py), alone and stacked with the embedding
probe.

Why: a frozen sentence encoder does not know every script. On Chinese news titles the packaged MiniLM (whose
vocabulary holds 244 CJK characters) gives a probe of 58.3 % where a character TF-IDF script scores 83.0 %
(benchmarks/notes/defaults.md); on English sentiment the probe is 6 points ahead. So `auto` lets both compete,
with their stack: the weighted average of the two models' probabilities, the weight chosen out of fold on the
training split so that the validation split still judges it fairly against the other candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from ..runtime.ngram import FILES, NgramModel, _softmax, _spec, _transform, blend
from .headsearch import metric_score, search

__all__ = ["FILES", "STACK_WEIGHTS", "NgramModel", "blend", "fit", "fit_weights", "out_of_fold", "select",
           "stack_weight"]

#: the stack's weights of the n-gram model (0: the probe alone, 1: the n-gram model alone)
STACK_WEIGHTS = tuple(i / 10 for i in range(11))


def fit_weights(x: sparse.csr_matrix, y: np.ndarray, n_cls: int, c: float, weighted: bool, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on TF-IDF rows: (coef (n_cls, F), intercept (n_cls,)), a class absent
    from y never predicted."""
    lr = LogisticRegression(C=c, max_iter=1000, random_state=seed,
                            class_weight="balanced" if weighted else None).fit(x, y)
    coef, icpt = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # binary: one logit; softmax([-z/2, z/2]) == sigmoid(z)
        coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
    w, b = np.zeros((n_cls, x.shape[1])), np.full(n_cls, -1e4)
    w[lr.classes_], b[lr.classes_] = coef, icpt
    return w, b


def fit(texts: list[str], y: np.ndarray, n_cls: int, c: float, weighted: bool, seed: int,
        info: dict[str, Any] | None = None) -> NgramModel:
    vecs, x = NgramModel.fit_vectorizers(texts)
    w, b = fit_weights(x, y, n_cls, c, weighted, seed)
    return NgramModel(vecs, w, b, {**(info or {}), "C": c, "class_weighted": weighted, "trained_on": len(y)})


def select(tr: list[str], y_tr: np.ndarray, va: list[str], y_va: np.ndarray, n_cls: int, metric: str,
           weightings: list[bool], seed: int) -> tuple[NgramModel, dict[str, Any], np.ndarray]:
    """C (and class weighting) chosen on the validation split as for the probe (headsearch.search): the model
    trained on `tr`, its history and its validation probabilities."""
    vecs, x_tr = NgramModel.fit_vectorizers(tr)
    x_va = _transform(vecs, va)

    cache: dict[tuple[float, bool], tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(c: float, weighted: bool, _scaling: str) -> np.ndarray:
        cache[(c, weighted)] = w, b = fit_weights(x_tr, y_tr, n_cls, c, weighted, seed)
        return _softmax(np.asarray(x_va @ w.T, dtype=np.float64) + b)

    rows, (c, weighted, _), held = search(evaluate, y_va, n_cls, metric, weightings, scalings=("tf-idf",))
    w, b = cache[(c, weighted)]
    model = NgramModel(vecs, w, b, {"C": c, "class_weighted": weighted, "trained_on": len(y_tr)})
    history = {"C": c, "class_weighted": weighted, "features": x_tr.shape[1], "candidates": rows,
               "analyzers": [_spec(v) for v in vecs], "selection": f"validation split ({len(y_va)} examples)"}
    return model, history, held


def out_of_fold(texts: list[str], y: np.ndarray, n_cls: int, c: float, weighted: bool, seed: int, folds: int
                ) -> np.ndarray:
    """Probabilities of every row of `texts` from a model that did not train on it (stratified k-fold; the
    vectorizers are fitted within each fold, as the final model's are)."""
    out = np.zeros((len(y), n_cls))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        m = fit([texts[i] for i in tr], y[tr], n_cls, c, weighted, seed)
        out[te] = m.proba([texts[i] for i in te])
    return out


def stack_weight(p_probe: np.ndarray, p_ngram: np.ndarray, y: np.ndarray, metric: str, n_cls: int
                 ) -> tuple[float, list[dict[str, Any]]]:
    """The weight of STACK_WEIGHTS with the best `metric` on out-of-fold probabilities (ties: lower log-loss,
    then the weight nearer 0.5), and the table of all of them."""
    rows, best, best_key = [], 0.5, None
    for w in STACK_WEIGHTS:
        p = blend(p_probe, p_ngram, w)
        score = metric_score(metric, y, p.argmax(1), n_cls)
        nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))
        key = (round(score, 10), -round(nll, 10), -abs(w - 0.5))
        rows.append({"weight": w, metric: round(score, 4), "log_loss": round(nll, 4)})
        if best_key is None or key > best_key:
            best, best_key = w, key
    return best, rows


