"""Boosted trees as a torch module of plain tensors (`TreeStack`): the late stack of table columns beside the text
(adapt/tablestack.py fits it). Prediction code: loading a model that has one imports no training code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from . import boosted


class TreeStack(nn.Module):
    """Boosted trees as tensors: per tree (T) and node (M) the feature, threshold, children, leaf flag and value;
    `output` the output each tree adds to; `baseline` the outputs' starting values; `classes` the model's class
    index of each class the trees score (a class absent from their training rows gets none). `logits(text, table)`
    gives the model's logits from the text head's logits and the encoded table columns."""

    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    leaf: torch.Tensor
    missing_left: torch.Tensor
    value: torch.Tensor
    output: torch.Tensor
    baseline: torch.Tensor
    regression: torch.Tensor
    classes: torch.Tensor

    def __init__(self, trees: int, nodes: int, outputs: int, regression: bool, classes: int = 1) -> None:
        super().__init__()
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.int64))
        self.register_buffer("leaf", torch.ones(trees, nodes, dtype=torch.bool))
        self.register_buffer("missing_left", torch.zeros(trees, nodes, dtype=torch.bool))
        self.register_buffer("value", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("output", torch.zeros(trees, dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros(outputs, dtype=torch.float64))
        self.register_buffer("regression", torch.tensor(regression))
        self.register_buffer("classes", torch.arange(classes, dtype=torch.int64))

    @staticmethod
    def from_sklearn(gbm: Any) -> TreeStack:
        """From a fitted HistGradientBoostingClassifier/Regressor on numeric features."""
        predictors = [tree for per_iteration in gbm._predictors for tree in per_iteration]
        k = len(gbm._predictors[0])
        width = max(len(t.nodes) for t in predictors)
        regression = not hasattr(gbm, "classes_")
        classes = [0] if regression else [int(c) for c in gbm.classes_]  # (class indices: the targets it fitted)
        stack = TreeStack(len(predictors), width, k, regression, len(classes))
        with torch.no_grad():
            stack.classes.copy_(torch.tensor(classes, dtype=torch.int64))
            for i, tree in enumerate(predictors):
                n = tree.nodes
                if n["is_categorical"].any():
                    raise ValueError("categorical splits are not supported")
                m = len(n)
                stack.feature[i, :m] = torch.from_numpy(n["feature_idx"].astype(np.int64))
                stack.threshold[i, :m] = torch.from_numpy(n["num_threshold"].astype(np.float64))
                stack.left[i, :m] = torch.from_numpy(n["left"].astype(np.int64))
                stack.right[i, :m] = torch.from_numpy(n["right"].astype(np.int64))
                stack.leaf[i, :m] = torch.from_numpy(n["is_leaf"].astype(bool))
                stack.missing_left[i, :m] = torch.from_numpy(n["missing_go_to_left"].astype(bool))
                stack.value[i, :m] = torch.from_numpy(n["value"].astype(np.float64))
                stack.output[i] = i % k
            stack.baseline.copy_(torch.from_numpy(np.asarray(gbm._baseline_prediction, np.float64).reshape(-1)))
        return stack

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).detach().cpu().numpy() for name in boosted.NAMES}

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) inputs -> (N, outputs) raw scores (scikit-learn's raw predictions), float64 (runtime/boosted.py,
        in numpy: the torch-free path runs the same code)."""
        return torch.from_numpy(boosted.raw(self.arrays(), x.detach().cpu().double().numpy())).to(x.device)

    def inputs(self, text: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """What the trees read: the text head's log-probabilities (its output, for regression) and the table."""
        return torch.from_numpy(boosted.inputs(self.arrays(), text.detach().cpu().numpy(),
                                               table.detach().cpu().numpy())).to(text.device)

    def logits(self, text: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(boosted.logits(self.arrays(), text.detach().cpu().numpy(),
                                               table.detach().cpu().numpy())).to(text.device)
