"""Gradual unfreezing (strategy "progressive"): a Lightning callback."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class ProgressiveUnfreeze(pl.Callback):
    """Gradual unfreezing, top groups first (ULMFiT): epoch e trains the top min(e+1, N) of the N groups
    the run may train (plus the head); the rest stay frozen, in inference mode."""

    def __init__(self, groups_top_first: list[torch.nn.Module]) -> None:
        self.groups = groups_top_first
        self.schedule: list[int] = []  # trainable groups per epoch, for the run summary

    def _apply(self, epoch: int) -> int:
        k = min(len(self.groups), epoch + 1)
        for i, g in enumerate(self.groups):
            g.train(i < k)
            for p in g.parameters():
                p.requires_grad_(i < k)
        return k

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer.current_epoch)  # a run resumed mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.schedule.append(self._apply(trainer.current_epoch))

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule = list(state["schedule"])
