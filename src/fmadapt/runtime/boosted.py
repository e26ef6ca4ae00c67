"""Boosted trees in numpy: the prediction of the late stack of table columns (runtime/trees.py holds the trees as
a torch module's tensors; the torch-free `fmadapt predict` reads the same tensors from model.safetensors). Per
tree (T) and node (M): `feature`, `threshold`, `left`, `right`, `leaf`, `missing_left`, `value`; `output` the
output each tree adds to; `baseline` the outputs' starting values; `regression` whether the outputs are a number
(else class scores: one for two classes, as scikit-learn's binary raw score); `classes` the model's class index of
each class the trees score."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NAMES = ("feature", "threshold", "left", "right", "leaf", "missing_left", "value", "output", "baseline",
         "regression", "classes")


def problem(trees: Mapping[str, np.ndarray], n_classes: int, columns: int) -> str | None:
    """Why `trees` cannot be the stacked trees of a model with `n_classes` outputs whose trees read `columns`
    inputs (the text head's outputs, then the table's encoded columns), or None: what loading checks, with and
    without torch."""
    if set(trees) != set(NAMES):
        return f"need exactly the tensors {', '.join(NAMES)}"
    feature = np.asarray(trees["feature"])
    if feature.ndim != 2 or any(np.shape(trees[k]) != feature.shape for k in NAMES[:7]) \
            or np.shape(trees["output"]) != feature.shape[:1]:
        return "have tensors of mismatched shapes"
    leaf = np.asarray(trees["leaf"]).astype(bool)
    inner = feature[~leaf]
    if inner.size and not 0 <= inner.min() <= inner.max() < columns:
        return f"read column {int(inner.max())}, past the {columns} the head's outputs and 'table_features' give"
    children = np.concatenate([np.asarray(trees["left"])[~leaf], np.asarray(trees["right"])[~leaf]])
    output, classes = np.asarray(trees["output"]), np.asarray(trees["classes"])
    outputs = np.asarray(trees["baseline"]).size
    if (children.size and not 0 <= children.min() <= children.max() < feature.shape[1]) \
            or not 1 <= outputs <= n_classes or (output.size and not 0 <= output.min() <= output.max() < outputs) \
            or classes.ndim != 1 or (classes.size and not 0 <= classes.min() <= classes.max() < n_classes) \
            or len(set(classes.tolist())) != classes.size:
        return "point at nodes, outputs or classes they do not have"
    if not all(np.isfinite(np.asarray(trees[k], dtype=np.float64)).all() for k in ("threshold", "value", "baseline")):
        return "hold non-finite values"
    return None


def raw(trees: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(N, F) inputs -> (N, outputs) raw scores (scikit-learn's raw predictions), float64."""
    x = np.asarray(x, dtype=np.float64)
    feature, threshold, leaf = trees["feature"], trees["threshold"], trees["leaf"].astype(bool)
    n, n_trees = len(x), feature.shape[0]
    t = np.broadcast_to(np.arange(n_trees), (n, n_trees))
    node = np.zeros((n, n_trees), dtype=np.int64)
    rows = np.arange(n)[:, None]
    for _ in range(feature.shape[1]):  # (a tree is never deeper than its node count)
        at_leaf = leaf[t, node]
        if at_leaf.all():
            break
        v = x[rows, feature[t, node]]
        go_left = np.where(np.isnan(v), trees["missing_left"].astype(bool)[t, node], v <= threshold[t, node])
        node = np.where(at_leaf, node, np.where(go_left, trees["left"][t, node], trees["right"][t, node]))
    out = np.repeat(np.asarray(trees["baseline"], np.float64)[None], n, axis=0)
    np.add.at(out, (rows, np.broadcast_to(trees["output"], (n, n_trees))), trees["value"][t, node])
    return out


def inputs(trees: Mapping[str, np.ndarray], text: np.ndarray, table: np.ndarray) -> np.ndarray:
    """What the trees read: the text head's log-probabilities (its output, for regression), then the table."""
    s = np.asarray(text, dtype=np.float64)
    if not bool(trees["regression"]):
        s = s - s.max(1, keepdims=True)
        s = s - np.log(np.exp(s).sum(1, keepdims=True))
    return np.concatenate([s, np.asarray(table, dtype=np.float64)], axis=1)


def logits(trees: Mapping[str, np.ndarray], text: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The model's logits (float32, as many as the text head's) from the text head's logits and the encoded table
    columns; a class the trees never saw gets -1e4 (never predicted), as in the probe's head."""
    r = raw(trees, inputs(trees, text, table))
    if bool(trees["regression"]):
        return r.astype(np.float32)
    if r.shape[1] == 1:  # binary: softmax([-z/2, z/2]) == sigmoid(z)
        r = np.concatenate([-r / 2, r / 2], axis=1)
    out = np.full((len(r), np.shape(text)[1]), -1e4)
    out[:, np.asarray(trees["classes"], dtype=np.int64)] = r
    return out.astype(np.float32)
