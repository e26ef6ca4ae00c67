"""`finetune`: train all layers, or the top N layer groups (`unfreeze=N`), on the Lightning Trainer."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping

from ..config import FitConfig
from ..data.examples import Examples
from ..data.loader import make_loader
from ..model import Classifier
from ..train.module import ClassifierModule, History, RestoreBest
from .base import FitContext, Strategy, register_strategy

DEFAULT_LR = {"image": 2e-4, "text": 3e-5}


def build_trainer(cfg: FitConfig, callbacks: list[pl.Callback], progress: bool) -> pl.Trainer:
    """One place that turns our options into a Lightning Trainer (accelerator/devices pass through)."""
    devices: Any = cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        # stdout is reserved for results (`--json`); progress goes to stderr
        callbacks = [*callbacks, RichProgressBar(leave=False, console_kwargs={"stderr": True})]
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.dist_strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        deterministic=False,
    )


@register_strategy
class FineTune(Strategy):
    name = "finetune"
    trains_backbone = True

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        t0 = time.perf_counter()
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        bb = model.backbone
        groups = bb.layer_groups()
        n_train = len(groups) if cfg.unfreeze < 0 else min(cfg.unfreeze, len(groups))
        bb.freeze(trainable_top=-1 if n_train == len(groups) else n_train)
        frozen = groups[: len(groups) - n_train]
        tr = make_loader(bb, train.inputs, train.modality, train=True, batch_size=cfg.batch_size,
                         targets=ctx.targets(train), num_workers=cfg.num_workers, seed=cfg.seed)
        va = make_loader(bb, val.inputs, val.modality, train=False, batch_size=cfg.batch_size * 2,
                         targets=ctx.targets(val), num_workers=cfg.num_workers)
        steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
        module = ClassifierModule(
            model, lr=cfg.lr or DEFAULT_LR[bb.cfg.modality], head_lr=cfg.head_lr,
            weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, total_steps=steps,
            frozen_groups=frozen)
        with tempfile.TemporaryDirectory(prefix="fmadapt-") as tmp:
            history = History(os.path.join(tmp, "history.json"))
            stop = EarlyStopping("val_loss", patience=cfg.patience, mode="min")
            callbacks = [history, RestoreBest("val_loss", "min"), stop]
            trainer = build_trainer(cfg, callbacks, progress=ctx.progress and sys.stderr.isatty())
            model.train()  # backbones are created in eval mode; the frozen groups go back to eval each epoch
            trainer.fit(module, tr, va)
            epochs = history.recovered()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        losses = [e.get("val_loss", float("inf")) for e in epochs]
        return {
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "trainable_groups": n_train,
            "total_groups": len(groups),
            "epochs_run": len(epochs),
            "best_epoch": int(losses.index(min(losses))) if losses else -1,
            "epochs": epochs,
            "world_size": trainer.world_size,
        }
