"""`finetune`: train all layers, or the top N layer groups (`unfreeze=N`), on the Lightning Trainer."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping

from ..config import FitConfig
from ..data.examples import Examples
from ..data.loader import make_loader
from ..model import Classifier
from ..train.module import ClassifierModule, EpochTimer, History, RestoreBest, evaluation_loss
from .base import FitContext, Strategy, register_strategy
from .cached import SuffixClassifier, cached_loaders, split_is_exact
from .probe import Probe

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
        # LP-FT (Kumar et al., 2022): start from the probe's head, not a random one. A random head's
        # gradients first distort the pretrained features; and on L2-normalised embeddings (MiniLM) a fresh
        # head barely moves at usual learning rates. The probe's features come from the cache/fast path.
        probe = Probe().fit(model, train, val, cfg, ctx) if cfg.head_init == "probe" else None
        bb = model.backbone
        groups = bb.layer_groups()
        n_train = len(groups) if cfg.unfreeze < 0 else min(cfg.unfreeze, len(groups))
        bb.freeze(trainable_top=-1 if n_train == len(groups) else n_train)
        frozen = groups[: len(groups) - n_train]
        split = self._cached_split(bb, n_train, len(groups), train, cfg)
        t_cache = 0.0
        if split is not None:
            t1 = time.perf_counter()
            prefix, suffix = split
            tr, va = cached_loaders(bb, prefix, train, val, ctx.targets(train), ctx.targets(val), cfg.batch_size,
                                    cfg.seed, cfg.num_workers)
            t_cache = time.perf_counter() - t1
            trained: torch.nn.Module = SuffixClassifier(suffix, model.dropout, model.head)
            frozen = []
        else:
            augment = cfg.augment and bb.cfg.modality == "image"
            tr = make_loader(bb, train.inputs, train.modality, train=augment, shuffle=True,
                             batch_size=cfg.batch_size, targets=ctx.targets(train), num_workers=cfg.num_workers,
                             seed=cfg.seed)
            va = make_loader(bb, val.inputs, val.modality, train=False, batch_size=cfg.batch_size * 2,
                             targets=ctx.targets(val), num_workers=cfg.num_workers)
            trained = model
        steps = cfg.epochs * max(1, len(tr))
        module = ClassifierModule(
            trained, lr=cfg.lr or DEFAULT_LR[bb.cfg.modality], head_lr=cfg.head_lr,
            weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, total_steps=steps,
            frozen_groups=frozen, freeze_bn=cfg.bn == "frozen")
        # the starting point (the probe's head) competes with every epoch: fine-tuning never makes it worse
        initial_loss = evaluation_loss(trained, va) if probe else None
        with tempfile.TemporaryDirectory(prefix="fmadapt-") as tmp:
            history = History(os.path.join(tmp, "history.json"))
            stop = EarlyStopping("val_loss", patience=cfg.patience, mode="min")
            timer = EpochTimer()
            best = RestoreBest("val_loss", "min")
            if initial_loss is not None:
                best.seed(initial_loss, module)
            callbacks = [history, best, stop, timer]
            trainer = build_trainer(cfg, callbacks, progress=ctx.progress and sys.stderr.isatty())
            trained.train()  # backbones are created in eval mode; the frozen groups go back to eval each epoch
            trainer.fit(module, tr, va)
            epochs = history.recovered()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if bb.cfg.sha256:
            # the weights are no longer the checksummed pretrained file: nothing may cache or look them up by it
            bb.cfg.extra["initial_sha256"] = bb.cfg.sha256
            bb.cfg.sha256 = ""
        losses = [e.get("val_loss", float("inf")) for e in epochs]
        start = initial_loss if initial_loss is not None else float("inf")
        best_epoch = int(losses.index(min(losses))) if losses and min(losses) < start else -1
        return {
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "trainable_groups": n_train,
            "total_groups": len(groups),
            "epochs_run": len(epochs),
            "best_epoch": best_epoch,  # -1: no epoch beat the starting point, which was kept
            "initial_val_loss": None if initial_loss is None else round(initial_loss, 6),
            "epochs": epochs,
            "world_size": trainer.world_size,
            "cached_activations": split is not None,
            "activation_seconds": round(t_cache, 2),
            "epoch_seconds": timer.seconds,
            "augmentation": split is None and cfg.augment and bb.cfg.modality == "image",
            "head_init": cfg.head_init,
            "probe_val_acc": max(r["val_acc"] for r in probe["candidates"]) if probe else None,
        }

    @staticmethod
    def _cached_split(bb: Any, n_train: int, n_groups: int, train: Examples, cfg: FitConfig) -> Any:
        """The (prefix, suffix) split when cached activations apply: a frozen prefix exists, one process,
        and (images) no random augmentation, since cached inputs cannot be re-augmented each epoch."""
        if cfg.cache_activations == "off" or n_train >= n_groups:
            return None
        single = cfg.num_nodes == 1 and str(cfg.devices) in ("auto", "1")
        if cfg.cache_activations == "auto" and (not single or (cfg.augment and bb.cfg.modality == "image")):
            return None
        split = bb.split(n_train)
        if split is None or not split_is_exact(bb, split[0], split[1], train):
            return None
        return split
