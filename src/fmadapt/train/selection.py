"""Which fine-tuned weights are kept: the validation key that ranks epochs, the callback that keeps and restores
the chosen weights, and how a run's history describes the choice (config `keep`, `select_by`, `patience`)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import FitConfig


def selection_key(metrics: dict[str, Any], select_by: str) -> tuple[float, ...] | None:
    """What "better" means for a validation epoch (larger is better): "metric", the run's metric (`val_score`
    when the module logged one, else accuracy), or "accuracy", ties broken by the lower loss; or "loss" alone.
    None when the metrics are missing."""
    loss = metrics.get("val_loss")
    acc = metrics.get("val_score", metrics.get("val_acc")) if select_by == "metric" else metrics.get("val_acc")
    if loss is None or (select_by != "loss" and acc is None):
        return None
    return (round(float(acc), 6), -float(loss)) if select_by != "loss" else (-float(loss),)


class RestoreBest(pl.Callback):
    """Keeps the weights to restore in memory and puts them back when training ends (no checkpoint files:
    nothing pickled on disk). `keep="best"`: the best validation epoch (see `selection_key`; the first of
    ties), or the start (`seed`) when no epoch beats it. `keep="start_or_last"`: the last validated epoch,
    unless the start validates strictly better (ties go to the later, annealed weights). With `ema`, the
    weights kept are the average's (they are what validation scored)."""

    def __init__(self, select_by: str = "accuracy", ema: Any = None, keep: str = "best") -> None:
        if keep not in ("best", "start_or_last"):
            raise ValueError(f"keep must be 'best' or 'start_or_last', not {keep!r}")
        self.select_by = select_by
        self.keep = keep
        #: with a weight average (`train.ema.EMA`) validation scores the average, so the average is kept
        self.ema = ema
        self.best: list[float] | None = None
        self.best_epoch: int = -1
        self._state: dict[str, torch.Tensor] | None = None
        #: keep="start_or_last": the last validated epoch's key, epoch and weights
        self._last: tuple[list[float], int, dict[str, torch.Tensor]] | None = None

    def seed(self, metrics: dict[str, float], module: nn.Module) -> None:
        """Start from a known point (the probe-initialised model): epochs must beat it to be kept."""
        key = selection_key(metrics, self.select_by)
        self.best, self.best_epoch = (list(key) if key else None), -1
        self._state = {k: t.detach().to("cpu", copy=True) for k, t in module.state_dict().items()}

    def _weights(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        state = self.ema.averaged_state(pl_module) if self.ema is not None else pl_module.state_dict()
        return {k: t.detach().to("cpu", copy=True) for k, t in state.items()}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        key = selection_key({k: float(v) for k, v in trainer.callback_metrics.items()}, self.select_by)
        if key is None:
            return
        if self.keep == "start_or_last":
            self._last = (list(key), trainer.current_epoch, self._weights(pl_module))
        elif self.best is None or key > tuple(self.best):
            self.best, self.best_epoch = list(key), trainer.current_epoch
            self._state = self._weights(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.keep == "start_or_last" and self._last is not None:
            key, epoch, state = self._last
            if self.best is None or tuple(key) >= tuple(self.best):
                self.best, self.best_epoch, self._state = key, epoch, state
            self._last = None
        if self._state is not None:
            pl_module.load_state_dict(copy.copy(self._state))

    # saved in checkpoints (Lightning stores callback states), so a resumed run keeps its best epoch
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self._state, "last": self._last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self._state = state["best"], state["best_epoch"], state["state"]
        self._last = state.get("last")


def epochs_chosen_by(cfg: FitConfig) -> str:
    """How the history says the number of epochs and the weights kept were chosen."""
    if not cfg.restore_best:
        return f"{cfg.how_set('epochs')}, the last kept"
    judged = f"validation {cfg.metric if cfg.select_by == 'metric' else cfg.select_by}"
    if cfg.keep == "start_or_last":
        return (f"{cfg.how_set('epochs')}, the last kept unless the probe start has a better {judged} "
                f"({cfg.how_set('keep')})")
    return (f"at most {cfg.how_set('epochs')}, stopped after {cfg.how_set('patience')} without a better {judged}; "
            f"the best epoch kept ({cfg.how_set('keep')})")


def best_epoch_kept(epochs: list[dict[str, float]], initial: dict[str, float] | None, select_by: str,
                keep: str = "best") -> int:
    """The epoch RestoreBest kept: the first with the best selection key ("best"), or the last one unless
    the start is strictly better ("start_or_last"); -1 when the start was kept."""
    best, best_epoch = (selection_key(initial, select_by) if initial else None), -1
    if keep == "start_or_last":
        keyed = [(k, key) for k, e in enumerate(epochs) if (key := selection_key(e, select_by)) is not None]
        if not keyed:
            return -1
        last, last_key = keyed[-1]
        return last if best is None or last_key >= best else -1
    for k, e in enumerate(epochs):
        key = selection_key(e, select_by)
        if key is not None and (best is None or key > best):
            best, best_epoch = key, k
    return best_epoch
