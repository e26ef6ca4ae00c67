"""Exponential moving average of the weights during fine-tuning, on Lightning's `WeightAveraging`.

Lightning keeps the average (a `torch.optim.swa_utils.AveragedModel`), swaps it in for every validation
epoch, stores it in checkpoints and copies it into the model when training ends; this module only adds
timm's warm-up of the decay. A fixed decay of 0.999 averages over ~1,000 steps, more than a whole
fine-tuning run on a few thousand examples, so the average would be dominated by the first steps' weights;
with the warm-up, update n uses min(decay, (1 + n) / (10 + n)) and the average follows the model early on."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging


def warmup_ema(decay: float) -> Any:
    """AveragedModel `multi_avg_fn`: EMA with timm's warm-up of the decay (ModelEmaV3)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's batch counter): follow the model
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class EMA(WeightAveraging):
    """Weight EMA updated after every optimizer step. Validation metrics (so early stopping and the kept
    epoch) are those of the average, and the trained model ends with the average's weights."""

    def __init__(self, decay: float) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=warmup_ema(decay))

    def averaged_state(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """The averaged weights, under `pl_module`'s state-dict keys (what `RestoreBest` keeps). Outside
        training (no average yet) the module's own."""
        model = self._average_model.module if self._average_model is not None else pl_module
        return dict(model.state_dict())
