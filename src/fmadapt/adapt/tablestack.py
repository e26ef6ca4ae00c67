"""Table columns beside the text, stacked late (`table_head` "stack", or "auto" when it wins on validation): a
gradient-boosted model (scikit-learn's HistGradientBoosting) over the text head's outputs and the encoded table
columns, instead of the table's linear term in the head. Trees find what a linear term cannot (thresholds,
interactions of the columns with each other and with the text's score); a linear head over both keeps what is
additive. The probe tries both and keeps the better on validation by the run's metric (RMSE for regression).

The text head's outputs that the trees read are those of a head that never saw the row (out of fold), as at
prediction time on new rows. The fitted trees become runtime.trees.TreeStack, a torch module of plain tensors
(saved in the model's safetensors with the head; no pickle) whose outputs are checked against scikit-learn's before
it is kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from ..evaluate.metrics import metric_score
from ..runtime.trees import TreeStack

#: (features to fit on, their targets, features to predict) -> the text-only head's logits (N, K)
TextHead = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: the boosting settings (scikit-learn's defaults, without early stopping: the validation split judges the result)
GBM = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": False}
FOLDS = 5


def _scores(logits: np.ndarray, regression: bool) -> np.ndarray:
    if regression:
        return logits
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _out_of_fold(text_head: TextHead, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    parts = list(KFold(min(FOLDS, len(y)), shuffle=True, random_state=seed).split(x))
    out: np.ndarray | None = None
    for tr, te in parts:
        s = text_head(x[tr], y[tr], x[te])
        out = np.zeros((len(y), s.shape[1])) if out is None else out
        out[te] = s
    assert out is not None
    return out


def _gbm(x: np.ndarray, y: np.ndarray, regression: bool, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    with threadpool_limits(2):
        return cls(random_state=seed, **GBM).fit(x, y)


def stack_candidate(text_head: TextHead, dim: int, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                    y_va: np.ndarray, fused_va: np.ndarray, *, regression: bool, metric: str, n_cls: int,
                    seed: int, force: bool) -> dict[str, Any]:
    """Judge the stack against the fused linear head on the validation split (`fused_va`: the fused head's
    probabilities, or standardised predictions, of x_va from a head fitted on x_tr). Columns past `dim` of x are
    the encoded table's. Returns {"won": bool, "row": the candidates table's row, "val": the stack's validation
    probabilities / predictions}."""
    tab_tr, tab_va = x_tr[:, dim:], x_va[:, dim:]
    oof = _scores(_out_of_fold(text_head, x_tr[:, :dim], y_tr, seed), regression)
    gbm = _gbm(np.concatenate([oof, tab_tr], axis=1), y_tr, regression, seed)
    z_va = np.concatenate([_scores(text_head(x_tr[:, :dim], y_tr, x_va[:, :dim]), regression), tab_va], axis=1)
    if regression:
        val = gbm.predict(z_va)
        stack_score, fused_score = (-float(np.sqrt(((p - y_va) ** 2).mean())) for p in (val, fused_va.reshape(-1)))
        name = "val_rmse_std"
    else:
        val = np.zeros((len(z_va), n_cls))
        val[:, gbm.classes_] = gbm.predict_proba(z_va)
        stack_score, fused_score = (metric_score(metric, y_va, p.argmax(1), n_cls) for p in (val, fused_va))
        name = f"val_{metric}"
    shown = (lambda s: round(-s, 4)) if regression else (lambda s: round(s, 4))
    won = force or stack_score > fused_score
    row = {"head": "stack: boosted trees over the text head's out-of-fold outputs and the table columns",
           name: shown(stack_score), "linear head over text and table": shown(fused_score),
           "kept": "stack" if won else "linear", "chosen_by": "given (table_head stack)" if force else
           f"validation split ({len(y_va)} examples): the stack is kept only when strictly better", **GBM}
    return {"won": won, "row": row, "val": val}


def fit_stack(text_head: TextHead, dim: int, x: np.ndarray, y: np.ndarray, *, regression: bool, seed: int
              ) -> TreeStack:
    """The final stack on all of x (the text head's outputs out of fold), checked against scikit-learn."""
    oof = _scores(_out_of_fold(text_head, x[:, :dim], y, seed), regression)
    z = np.concatenate([oof, x[:, dim:]], axis=1)
    gbm = _gbm(z, y, regression, seed)
    stack = TreeStack.from_sklearn(gbm)
    sample = z[: min(len(z), 512)]
    with torch.no_grad():
        ours = stack.raw(torch.from_numpy(sample)).numpy()
    theirs = np.asarray(gbm._raw_predict(sample), dtype=np.float64).reshape(len(sample), -1)
    if not np.allclose(ours, theirs, atol=1e-6, rtol=1e-6):
        raise RuntimeError(f"the stacked trees disagree with scikit-learn's by {np.abs(ours - theirs).max():.3g}")
    return stack
