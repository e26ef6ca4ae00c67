"""The trainable model: a backbone and a linear classification head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backbones.base import Backbone


@dataclass
class WithTable:
    """A training batch of a model that reads table columns beside the text (`features`): the backbone's
    collated inputs and the encoded table columns of the same rows (B, table_dim)."""

    inputs: Any
    table: torch.Tensor


class Classifier(nn.Module):
    """backbone features (B, D) -> dropout -> linear head -> logits (B, C); with `table_dim`, encoded table
    columns (B, table_dim) add their own linear term (`table_head`, no bias) to the logits."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0, table_dim: int = 0,
                 stack: Any = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.cfg.embed_dim, num_classes)
        self.table_head = nn.Linear(table_dim, num_classes, bias=False) if table_dim else None
        #: table columns stacked late instead (runtime.trees.TreeStack): boosted trees over the text head's
        #: outputs and the encoded table columns give the logits (a probe's model; never fine-tuned)
        self.stack = stack

    @property
    def reads_table(self) -> bool:
        """Whether the model reads table columns beside the text (a linear table head or stacked trees)."""
        return self.table_head is not None or self.stack is not None

    def forward(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, WithTable):
            return self.forward_features(self.dropout(self.backbone(batch.inputs)), batch.table)
        if self.reads_table:
            raise ValueError("this model reads table columns beside the text: give it WithTable batches")
        return self.head(self.dropout(self.backbone(batch)))

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters of the head(s) over the features: `head`, and `table_head` when there is one (they
        train at the head's learning rate, the rest at the body's)."""
        return [*self.head.parameters(), *(self.table_head.parameters() if self.table_head is not None else [])]

    def forward_features(self, feats: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from precomputed backbone features (probe training, cached prediction) and, for a model with
        table inputs, the encoded table columns of the same rows."""
        logits = self.head(feats)
        if self.stack is not None:
            if table is None:
                raise ValueError("this model reads table columns beside the text: pass them (encoded)")
            return self.stack.logits(logits, table.to(logits.device))
        if self.table_head is not None:
            if table is None:
                raise ValueError("this model reads table columns beside the text: pass them (encoded)")
            logits = logits + self.table_head(table.to(logits.dtype))
        return logits

    def set_linear(self, weight: Any, bias: Any) -> None:
        """Set the head from one linear map over [backbone features, table columns] (a probe's fit): the first
        embed_dim columns of `weight` go to `head`, the rest to `table_head`."""
        w = torch.as_tensor(weight, dtype=torch.float32)
        d = self.head.in_features
        with torch.no_grad():
            self.head.weight.copy_(w[:, :d])
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            if self.table_head is not None:
                self.table_head.weight.copy_(w[:, d:])
