"""The trainable model: a backbone and a linear classification head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backbones.base import Backbone


class Classifier(nn.Module):
    """backbone features (B, D) -> dropout -> linear head -> logits (B, C)."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.cfg.embed_dim, num_classes)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(batch)))

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from precomputed backbone features (probe training, cached prediction)."""
        return self.head(feats)
