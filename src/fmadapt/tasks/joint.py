"""Several targets fine-tuned together (`targets=` with a fine-tuning strategy): one backbone, one head whose
outputs are the targets' outputs side by side, a loss that is the weighted sum of each target's own loss
(cross-entropy, binary cross-entropy per label, or squared error on the standardised target) over the rows that
have that target's label, and one validation score, the weighted mean of each target's score (accuracy,
micro-F1 at 0.5, or R² of the standardised target: 1 is perfect for each, so they average on one scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class JointSpec:
    """The targets of a joint head, in order: name, task, output width, loss weight; `rows` maps an example id
    to its target row (float32: one-hot class, 0/1 labels, or the standardised number; NaN where the row has no
    label for that target)."""

    names: list[str]
    tasks: list[str]
    sizes: list[int]
    weights: list[float]
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    #: with table columns beside the text (`features`): their encoding (data.tabular.TableEncoder), which every
    #: target's table head reads
    table_encoder: Any = None

    @property
    def slices(self) -> list[slice]:
        ends = np.cumsum([0, *self.sizes])
        return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]

    @property
    def width(self) -> int:
        return int(sum(self.sizes))

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the targets' mean losses over their labeled rows (a target with no labeled row
        in the batch adds nothing)."""
        total = logits.new_zeros(())
        for s, task, w in zip(self.slices, self.tasks, self.weights, strict=True):
            out, target = logits[:, s].float(), y[:, s].float()
            have = ~torch.isnan(target).any(1)
            if not bool(have.any()):
                continue
            out, target = out[have], target[have]
            if task == "classification":
                part = nn.functional.cross_entropy(out, target.argmax(1))
            elif task == "multilabel":
                part = nn.functional.binary_cross_entropy_with_logits(out, target)
            else:
                part = nn.functional.mse_loss(out, target)
            total = total + w * part
        return total

    def scores(self, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Each target's validation score on its labeled rows: accuracy, micro-F1 at 0.5, or R² (of the
        standardised target)."""
        out = {}
        for name, s, task in zip(self.names, self.slices, self.tasks, strict=True):
            z, t = logits[:, s].astype(np.float64), y[:, s].astype(np.float64)
            have = ~np.isnan(t).any(1)
            z, t = z[have], t[have]
            if not len(t):
                continue
            if task == "classification":
                out[name] = float((z.argmax(1) == t.argmax(1)).mean())
            elif task == "multilabel":
                pred, true = z > 0, t > 0.5
                tp = float((pred & true).sum())
                denom = float(pred.sum() + true.sum())
                out[name] = 2 * tp / denom if denom else 1.0
            else:
                var = float(((t - t.mean()) ** 2).mean()) or 1.0
                out[name] = 1.0 - float(((z - t) ** 2).mean()) / var
        return out

    def score(self, logits: np.ndarray, y: np.ndarray) -> float:
        """The weighted mean of the targets' scores (larger is better)."""
        per = self.scores(logits, y)
        w = {n: wt for n, wt in zip(self.names, self.weights, strict=True)}
        total = sum(w[n] for n in per)
        return sum(w[n] * v for n, v in per.items()) / total if total else 0.0


class JointLoss(nn.Module):
    """nn.Module face of JointSpec.loss (what the training module calls `loss_fn`)."""

    def __init__(self, spec: JointSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.spec.loss(logits, y)


def joint_rows(ids: list[str], per_target: list[dict[str, np.ndarray]], sizes: list[int]) -> dict[str, np.ndarray]:
    """{id: the concatenated target row} from each target's {id: row}; NaN where a target has no row for it."""
    out = {}
    for i in ids:
        parts = [rows.get(i, np.full(n, np.nan, dtype=np.float32)) for rows, n in zip(per_target, sizes, strict=True)]
        out[i] = np.concatenate(parts).astype(np.float32)
    return out


def head_of(model: Any, spec: JointSpec, index: int) -> tuple[Any, Any, Any]:
    """The rows of the joint model's heads that are target `index`'s: (weight, bias, the table head's weight or
    None when the model reads no table columns)."""
    s = spec.slices[index]
    table = model.table_head.weight[s].clone() if model.table_head is not None else None
    return model.head.weight[s].clone(), model.head.bias[s].clone(), table
