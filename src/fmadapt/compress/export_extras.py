"""The parts of an exported graph beside the backbones: `auto`'s n-gram TF-IDF model (its linear weights and the
blend with the neural model; the n-gram counting stays in predict.py, as tokenizing does)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the file of an export that holds the n-gram vocabularies and idf weights
NGRAM_FILE = "ngram.json"


class NgramHead(nn.Module):
    """(B, K) column indices + (B, K) TF-IDF values -> (B, C) probabilities: softmax(x · coefᵀ + intercept), with
    one extra column of zero weights (`pad`) for padding."""

    coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, ngram: Any) -> None:
        super().__init__()
        coef = torch.as_tensor(ngram.coef, dtype=torch.float32).T  # (V, C)
        self.pad = int(coef.shape[0])
        self.register_buffer("coef", torch.cat([coef, torch.zeros(1, coef.shape[1])]))
        self.register_buffer("intercept", torch.as_tensor(ngram.intercept, dtype=torch.float32))

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        z = (nn.functional.embedding(index, self.coef) * value.unsqueeze(-1)).sum(1) + self.intercept
        return torch.softmax(z, dim=1)


def ngram_part(model: Any) -> tuple[NgramHead, float, dict[str, Any]] | None:
    """The n-gram model a fitted text model blends in (its head for the graph, its weight and ngram.json's
    content), or None when it blends none."""
    if model.ngram_ is None or float(model.ngram_weight_) <= 0.0:
        return None
    head = NgramHead(model.ngram_)
    return head, float(model.ngram_weight_), {**model.ngram_.spec(), "pad_index": head.pad}


# -- table columns beside the text ----------------------------------------------------------------------
#: the file of an export that holds the table columns' encoding (data/tabular.TableEncoder's JSON)
TABLE_FILE = "table.json"


class TreeGraph(nn.Module):
    """The stacked boosted trees (runtime/trees.TreeStack, predicted in numpy by runtime/boosted.py) in graph
    operations: every tree walked from its root for as many steps as the deepest tree needs, in float64."""

    feature: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    leaf: torch.Tensor
    missing_left: torch.Tensor
    threshold: torch.Tensor
    value: torch.Tensor
    base: torch.Tensor
    baseline: torch.Tensor
    to_output: torch.Tensor

    def __init__(self, stack: Any) -> None:
        super().__init__()
        a = {k: torch.as_tensor(v) for k, v in stack.arrays().items()}
        trees, nodes = a["feature"].shape
        self.regression = bool(a["regression"])
        self.depth = _depth(a["left"].numpy(), a["right"].numpy(), a["leaf"].numpy().astype(bool))
        for k in ("feature", "left", "right"):
            self.register_buffer(k, a[k].reshape(-1).long())
        for k in ("leaf", "missing_left"):
            self.register_buffer(k, a[k].reshape(-1).bool())
        for k in ("threshold", "value"):
            self.register_buffer(k, a[k].reshape(-1).double())
        self.register_buffer("base", torch.arange(trees) * nodes)
        outputs = int(a["baseline"].numel())
        self.register_buffer("baseline", a["baseline"].reshape(-1).double())
        self.register_buffer("to_output", nn.functional.one_hot(a["output"].long(), outputs).double())  # (T, O)
        self.classes = [int(c) for c in a["classes"].reshape(-1)]

    def forward(self, text: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        s = text.double() if self.regression else torch.log_softmax(text.double(), dim=1)
        x = torch.cat([s, table.double()], dim=1)
        node = torch.zeros(x.shape[0], self.base.shape[0], dtype=torch.long)
        for _ in range(self.depth):
            at = self.base + node
            v = torch.gather(x, 1, self.feature[at])
            left = (torch.isnan(v) & self.missing_left[at]) | (v <= self.threshold[at])  # (NaN <= t is false)
            node = torch.where(self.leaf[at], node, torch.where(left, self.left[at], self.right[at]))
        raw = self.baseline + self.value[self.base + node] @ self.to_output
        if self.regression:
            return raw.float()
        if raw.shape[1] == 1:  # binary: softmax([-z/2, z/2]) == sigmoid(z)
            raw = torch.cat([-raw / 2, raw / 2], dim=1)
        cols = [raw[:, self.classes.index(c)] if c in self.classes else torch.full_like(raw[:, 0], -1e4)
                for c in range(text.shape[1])]  # (a class the trees never saw: never predicted)
        return torch.stack(cols, dim=1).float()


def _depth(left: Any, right: Any, leaf: Any) -> int:
    """The most steps from a root to a leaf over all trees ((T, M) children and leaf flags)."""
    deepest = 0
    for t in range(leaf.shape[0]):
        todo = [(0, 0)]
        while todo:
            n, d = todo.pop()
            if leaf[t, n]:
                deepest = max(deepest, d)
            else:
                todo += [(int(left[t, n]), d + 1), (int(right[t, n]), d + 1)]
    return deepest
