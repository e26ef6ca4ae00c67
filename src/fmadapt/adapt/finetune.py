"""`finetune`: train all layers, or the top N layer groups (`unfreeze=N`), on the Lightning Trainer."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping

from ..config import FitConfig
from ..data.augment import mixup_fn
from ..data.examples import Examples
from ..data.loader import length_grouping, make_loader
from ..data.textnoise import TextNoise
from ..model import Classifier
from ..runtime.features import token_counts
from ..train.checkpoint import BatchSeeds, SafeCheckpointIO, data_hash
from ..train.ema import EMA
from ..train.loggers import make_logger
from ..train.module import ClassifierModule, EpochTimer, History, evaluation_metrics
from ..train.selection import RestoreBest, best_epoch_kept, epochs_chosen_by
from ..train.unfreeze import ProgressiveUnfreeze
from .base import FitContext, Strategy, register_strategy
from .cached import SuffixClassifier, cached_loaders, split_is_exact
from .imbalance import imbalance
from .probe import Probe

DEFAULT_LR = {"image": 2e-4, "text": 3e-5, "audio": 1e-3}
#: new_token_lr default, as a multiple of the body's learning rate: embeddings added by extend_vocab start at
#: the mean and must travel much further than pretrained weights in the same few epochs
NEW_TOKEN_LR_SCALE = 20.0


def build_trainer(cfg: FitConfig, callbacks: list[pl.Callback], progress: bool, max_steps: int = -1
                  ) -> pl.Trainer:
    """One place that turns our options into a Lightning Trainer (accelerator/devices pass through).
    Checkpoints, when a `Checkpoint` callback asks for them, go through SafeCheckpointIO: never pickle."""
    devices: Any = cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        # stdout is reserved for results (`--json`); progress goes to stderr
        callbacks = [*callbacks, RichProgressBar(leave=False, console_kwargs={"stderr": True})]
    return pl.Trainer(
        max_epochs=cfg.epochs,
        max_steps=max_steps,
        accelerator=cfg.accelerator,
        precision=cfg.precision,
        devices=devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.dist_strategy,
        logger=make_logger(cfg.log_to, cfg.log_dir),
        log_every_n_steps=10,  # small user datasets have few steps per epoch; Lightning's 50 logged none
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        plugins=[SafeCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        deterministic=False,
        gradient_clip_val=cfg.grad_clip,
        max_time=None if cfg.max_time is None else timedelta(seconds=cfg.max_time),
    )


def layer_lr_scale(bb: Any, decay: float) -> dict[int, float]:
    """id(param) -> decay**k for the k-th layer group from the top (k = 0 for the top group)."""
    if decay >= 1.0:
        return {}
    groups = bb.layer_groups()
    return {id(p): decay ** (len(groups) - 1 - i) for i, g in enumerate(groups) for p in g.parameters()}


@register_strategy
class FineTune(Strategy):
    """Fine-tuning of all layers, or of the top `unfreeze` layer groups, starting from the probe's head
    (LP-FT). Optimizer, schedule, layer-wise LR decay, label smoothing and clipping are options."""

    name = "finetune"
    trains_backbone = True
    #: pull the trained body toward the pretrained weights (strategy "l2sp")
    l2sp = False
    #: body learning rate when `lr` is not given and the backbone has no `finetune_lr` of its own
    default_lr = DEFAULT_LR
    #: whether a backbone's own `finetune_lr` applies (it was measured for fine-tuning its weights)
    uses_backbone_lr = True
    max_tokens = 128  #: texts: the loop's; Reuters 0.96x its time, 2.26x at 256 (notes/defaults_max_tokens.md)

    def prepare(self, bb: Any, groups: list[torch.nn.Module], cfg: FitConfig
                ) -> tuple[int, list[torch.nn.Module]]:
        """Make the trainable part trainable: (number of trainable top groups, frozen groups)."""
        n_train = len(groups) if cfg.unfreeze < 0 else min(cfg.unfreeze, len(groups))
        bb.freeze(trainable_top=-1 if n_train == len(groups) else n_train)
        return n_train, groups[: len(groups) - n_train]

    def callbacks(self, bb: Any, n_train: int, cfg: FitConfig) -> list[pl.Callback]:
        """Extra Trainer callbacks of a variant (progressive unfreezing)."""
        return []

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        t0 = time.perf_counter()
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        single = cfg.num_nodes == 1 and str(cfg.devices) in ("auto", "1")
        # checkpoints and exact resume: one process (under DDP Lightning re-creates the loaders)
        slot = ctx.checkpoints.slot(_fingerprint(cfg, train, val, ctx)) if ctx.checkpoints and single else None
        finished = slot.finished() if slot else None
        if finished is not None:  # this run had finished before the interruption: its weights, not again
            model.load_state_dict(finished["state"])
            return self._done(model, dict(finished["history"]))
        # LP-FT (Kumar et al., 2022): start from the probe's head, not a random one. A random head's
        # gradients first distort the pretrained features; and on L2-normalised embeddings (MiniLM) a fresh
        # head barely moves at usual learning rates. The probe's features come from the cache/fast path.
        # (never refit on validation data here: fine-tuning still needs it to stop early and choose epochs)
        joint = ctx.joint  # several targets together: the head holds their probe heads already
        probe = (Probe().fit(model, train, val, dataclasses.replace(cfg, table_head="linear"),
                             dataclasses.replace(ctx, refit_on_val=False))
                 if cfg.head_init == "probe" and joint is None else None)
        bb = model.backbone
        groups = bb.layer_groups()
        n_train, frozen = self.prepare(bb, groups, cfg)
        # (table columns beside the text reach the head in each batch: no cached-activation path for them)
        split = self._cached_split(bb, n_train, len(groups), train, cfg) if ctx.table is None else None
        t_cache = 0.0
        grouping: dict[str, Any] | None = None
        if split is not None:
            t1 = time.perf_counter()
            prefix, suffix = split
            tr, va = cached_loaders(bb, prefix, train, val, ctx.targets(train), ctx.targets(val), cfg.batch_size,
                                    cfg.seed, cfg.num_workers, resumable=single)
            t_cache = time.perf_counter() - t1
            trained: torch.nn.Module = SuffixClassifier(suffix, model.dropout, model.head)
            frozen = []
        else:
            augment = cfg.augments_images(False) and bb.cfg.modality in ("image", "audio")
            if bb.cfg.modality == "audio":  # (masks on its log-mel frames; the loader varies the waveforms)
                setattr(bb, "spec_augment", augment)  # noqa: B010
            pre: Any = None
            if augment and cfg.augment_policy != "basic":
                from ..backbones.vision import build_image_transform

                pre = build_image_transform(bb.cfg, True, cfg.augment_policy)
            if bb.cfg.modality == "text" and cfg.text_noise > 0:
                pre = TextNoise(cfg.text_noise)
            text = bb.cfg.modality == "text"
            lengths = token_counts(bb, train.inputs) if text and cfg.group_by_length != "off" else None
            grouping = length_grouping(lengths, cfg.batch_size, cfg.seed, cfg.group_by_length, single) if text else None
            tr = make_loader(bb, train.inputs, train.modality, train=augment, shuffle=True,
                             batch_size=cfg.batch_size, targets=ctx.targets(train), num_workers=cfg.num_workers,
                             seed=cfg.seed, preprocess=pre, resumable=single, table=ctx.table_rows(train),
                             lengths=lengths if grouping and grouping["grouped"] else None)
            va = make_loader(bb, val.inputs, val.modality, train=False, batch_size=cfg.batch_size * 2,
                             targets=ctx.targets(val), num_workers=cfg.num_workers, table=ctx.table_rows(val),
                             lengths=token_counts(bb, val.inputs) if text else None)
            trained = model
        steps = cfg.epochs * max(1, len(tr))
        # the probe's weighted and unweighted heads competed on validation: the loss keeps the winner's weighting
        if joint is not None:
            balance = {"weighted": False, "ratio": None, "weights": None,
                       "note": "several targets: each target's own loss, weighted by target_weights"}
        elif ctx.multilabel or ctx.regression:  # (multi-label: the per-label thresholds meet the labels' imbalance)
            balance = {"weighted": False, "ratio": None, "weights": None,
                       "note": "regression: mean squared error on the standardised target" if ctx.regression else
                       "multi-label: binary cross-entropy per label, not weighted"}
        else:
            chosen = probe["imbalance"]["weighted"] if probe and cfg.class_weight == "auto" else None
            balance = imbalance(ctx.targets(train), len(ctx.classes), cfg, weighted=chosen)
        metric = ("joint" if joint is not None else "micro_f1" if ctx.multilabel else "rmse" if ctx.regression
                  else cfg.metric)
        lr = cfg.lr or (self.uses_backbone_lr and bb.cfg.finetune_lr) or self.default_lr[bb.cfg.modality]
        lr_source = ("given (lr)" if cfg.lr else
                     f"measured for {bb.cfg.name} (its finetune_lr)" if self.uses_backbone_lr and bb.cfg.finetune_lr
                     else f"the {self.name} default for {bb.cfg.modality} backbones")

        def make(rate: float, n_steps: int) -> ClassifierModule:
            return ClassifierModule(
                trained, lr=rate, head_lr=cfg.head_lr,
                weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, total_steps=n_steps,
                frozen_groups=frozen, freeze_bn=cfg.bn == "frozen", optimizer=cfg.optimizer, momentum=cfg.momentum,
                schedule=cfg.schedule, decay_beta=cfg.decay_beta, label_smoothing=cfg.label_smoothing,
                lr_scale=layer_lr_scale(bb, cfg.layer_decay), l2sp=cfg.l2sp if self.l2sp else 0.0,
                class_weights=torch.tensor(balance["weights"], dtype=torch.float32) if balance["weighted"] else None,
                mixup=(mixup_fn(cfg.mixup, cfg.cutmix, cfg.label_smoothing, len(ctx.classes))
                       if split is None and bb.cfg.modality == "image" else None),
                row_lr=_new_token_rows(cfg, bb, rate) if split is None else None,
                channels_last=bb.cfg.modality == "image", metric=metric, multilabel=ctx.multilabel,
                regression=ctx.regression, joint=joint, **_adversarial(cfg, bb))

        race = None
        if cfg.lr_race and not cfg.lr:  # a short race of rates around the default, judged on validation
            from .lrrace import lr_race

            race = lr_race(make, trained, tr, va, lr, cfg, metric, ctx)
            lr = race["chosen_lr"]
            lr_source = (f"raced on validation around {lr_source} (x{cfg.lr_race}, {race['steps']} steps each): "
                         f"x{race['chosen_multiple']:g} won")
        row_lr = _new_token_rows(cfg, bb, lr) if split is None else None
        module = make(lr, steps)
        callbacks_extra = self.callbacks(bb, n_train, cfg)
        param_groups = [{"name": g["name"], "lr": g["lr"], "params": sum(p.numel() for p in g["params"])}
                        for g in module.param_groups()]
        # the starting point (the probe's head) competes with the epochs (keep="best": each; "start_or_last": the
        # last): fine-tuning never makes it worse on validation (by the metric, ties broken by the loss: a
        # fine-tuned model may be far more accurate and still have a higher loss than the probe, being
        # overconfident, which calibration corrects afterwards)
        initial = (evaluation_metrics(trained, va, module.loss_fn, metric, ctx.multilabel, ctx.regression, joint)
                   if (probe or joint is not None) and cfg.restore_best else None)
        with tempfile.TemporaryDirectory(prefix="fmadapt-") as tmp:
            history = History(os.path.join(tmp, "history.json"))
            score = "val_score" if cfg.select_by == "metric" and metric != "accuracy" else "val_acc"
            stop = (EarlyStopping(score, patience=cfg.patience, mode="max") if cfg.select_by != "loss"
                    else EarlyStopping("val_loss", patience=cfg.patience, mode="min"))
            timer = EpochTimer()
            ema = EMA(cfg.ema) if cfg.ema > 0 else None
            best = RestoreBest(cfg.select_by, ema=ema, keep=cfg.keep)
            if initial is not None:
                best.seed(initial, module)
            # fixed-length runs (the final fit of `--strategy auto`, on data that includes its validation
            # split) keep their last weights: a contaminated validation loss must not pick the epoch
            # keep="start_or_last" runs the whole schedule: its last weights are the annealed ones
            callbacks = [history, *([best] if cfg.restore_best else []),
                         *([stop] if cfg.restore_best and cfg.keep == "best" else []), timer, *callbacks_extra,
                         BatchSeeds(cfg.seed), *([ema] if ema else []), *([slot.callback()] if slot else [])]
            # max_time counts from this fit's start (probe head, cached activations, first validation pass)
            left = None if cfg.max_time is None else max(1.0, cfg.max_time - (time.perf_counter() - t0))
            trainer = build_trainer(dataclasses.replace(cfg, max_time=left), callbacks,
                                    progress=ctx.progress and sys.stderr.isatty())
            trained.train()  # backbones are created in eval mode; the frozen groups go back to eval each epoch
            try:
                trainer.fit(module, tr, va, ckpt_path=slot.resume_path() if slot else None)
            finally:
                trained.to(memory_format=torch.contiguous_format)
            epochs = history.recovered()
        best_epoch = best_epoch_kept(epochs, initial, cfg.select_by, cfg.keep)
        result = {
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "trainable_groups": n_train,
            "total_groups": len(groups),
            "epochs_run": len(epochs),
            "best_epoch": best_epoch,  # -1: no epoch beat the starting point, which was kept
            "initial_val_loss": None if initial is None else round(initial["val_loss"], 6),
            "initial_val_acc": None if initial is None or "val_acc" not in initial else round(initial["val_acc"], 6),
            **({"initial_val_score": round(initial["val_score"], 6)} if initial and "val_score" in initial else {}),
            "select_by": cfg.select_by if cfg.select_by != "metric" else f"metric ({metric})",
            "epochs": epochs,
            "world_size": trainer.world_size,
            "cached_activations": split is not None,
            **({"group_by_length": grouping} if grouping else {}),
            "activation_seconds": round(t_cache, 2),
            "epoch_seconds": timer.seconds,
            "augmentation": _augmentation(cfg, bb.cfg.modality, cached=split is not None),
            "adversarial": cfg.adversarial,
            "head_init": cfg.head_init,
            "imbalance": balance,
            "lr": lr,
            "lr_chosen_by": lr_source,
            **({"lr_race": race} if race else {}),
            "epochs_chosen_by": epochs_chosen_by(cfg),
            "optimizer": cfg.optimizer,
            "schedule": cfg.schedule,
            "layer_decay": cfg.layer_decay,
            "ema": cfg.ema or None,  # the decay of the weight average validated and kept (None: no average)
            "param_groups": param_groups,
            "new_token_lr": row_lr[2] * lr if row_lr else None,
            "probe_val_acc": max(r["val_acc"] for r in probe["candidates"])
            if probe and all("val_acc" in r for r in probe["candidates"]) else None,
            "probe_C": probe.get("C") if probe else None,
            "metric": metric,
            **({"label_prior": probe["label_prior"]} if probe and "label_prior" in probe else {}),
            **self._extra_history(),
        }
        if slot:
            slot.finish(model.state_dict(), result)
        return self._done(model, result)

    def _extra_history(self) -> dict[str, Any]:  # what a variant adds to the run summary
        return {}

    @staticmethod
    def _done(model: Classifier, history: dict[str, Any]) -> dict[str, Any]:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        bb = model.backbone
        if bb.cfg.sha256:
            # the weights are no longer the checksummed pretrained file: nothing may cache or look them up by it
            bb.cfg.extra["initial_sha256"] = bb.cfg.sha256
            bb.cfg.sha256 = ""
        return history

    @staticmethod
    def _cached_split(bb: Any, n_train: int, n_groups: int, train: Examples, cfg: FitConfig) -> Any:
        """The (prefix, suffix) split when cached activations apply: a frozen prefix exists, one process, and no
        random augmentation (cached inputs cannot be re-augmented each epoch)."""
        if cfg.cache_activations == "off" or n_train >= n_groups:
            return None
        fresh = cfg.text_noise or cfg.mixup or cfg.cutmix or cfg.adversarial != "none"  # (cfg.check: not with "on")
        per_epoch_inputs = _augmentation(cfg, bb.cfg.modality, cached=False) != "none" or bool(fresh)
        single = cfg.num_nodes == 1 and str(cfg.devices) in ("auto", "1")
        if cfg.cache_activations == "auto" and (not single or per_epoch_inputs):
            return None
        split = bb.split(n_train)
        if split is None or not split_is_exact(bb, split[0], split[1], train):
            return None
        return split


@register_strategy
class L2SP(FineTune):
    """Fine-tuning pulled toward the pretrained weights (L2-SP, Li et al., 2018). The loss gains
    (α/2)·||w - w_pretrained||² over the trained backbone weights (α = `l2sp`, default 0.01), which replaces
    weight decay on the body; the head keeps ordinary weight decay."""

    name = "l2sp"
    l2sp = True


@register_strategy
class Progressive(FineTune):
    """`finetune` with gradual unfreezing: one more layer group per epoch, top first (all groups, or the
    top `unfreeze` ones). Runs the whole model each epoch (no cached activations: the trainable part grows)."""

    name = "progressive"

    def callbacks(self, bb: Any, n_train: int, cfg: FitConfig) -> list[pl.Callback]:
        groups = bb.layer_groups()
        self._cb = ProgressiveUnfreeze(list(reversed(groups[len(groups) - n_train:])))
        return [self._cb]

    @staticmethod
    def _cached_split(bb: Any, n_train: int, n_groups: int, train: Examples, cfg: FitConfig) -> Any:
        return None

    def _extra_history(self) -> dict[str, Any]:
        return {"unfrozen_groups_per_epoch": self._cb.schedule}


def _augmentation(cfg: FitConfig, modality: str, cached: bool) -> str:
    """What varies the training inputs per epoch, for the run summary ("none" when nothing does)."""
    if cached:
        return "none"
    parts = []
    if modality == "image" and cfg.augments_images(False):
        parts.append("flip" if cfg.augment_policy == "flip"
                     else "crop+flip" + ("" if cfg.augment_policy == "basic" else f"+{cfg.augment_policy}"))
    parts += ["gain+shift+noise+spec masks"] if modality == "audio" and cfg.augments_images(False) else []
    if modality == "image" and (cfg.mixup or cfg.cutmix):
        parts.append(f"mixup {cfg.mixup:g}/cutmix {cfg.cutmix:g}")
    if modality == "text" and cfg.text_noise:
        parts.append(f"text noise {cfg.text_noise:g}")
    return ", ".join(parts) or "none"


def _adversarial(cfg: FitConfig, bb: Any) -> dict[str, Any]:
    """ClassifierModule arguments for adversarial training (FitConfig.check matched it to the modality)."""
    kind = cfg.adversarial
    if kind == "none":
        return {}
    modality = bb.cfg.modality
    if modality == "image":
        eps = cfg.adv_eps if cfg.adv_eps is not None else 2 / 255
        target = torch.tensor([eps / s for s in bb.cfg.std], dtype=torch.float32)  # pixel eps, normalised
        return {"adversarial": kind, "adv_eps": eps, "adv_steps": cfg.adv_steps, "adv_target": target}
    emb = bb.model.get_input_embeddings()
    return {"adversarial": kind, "adv_eps": cfg.adv_eps if cfg.adv_eps is not None else 0.05, "adv_target": emb}


def _new_token_rows(cfg: FitConfig, bb: Any, lr: float) -> tuple[torch.nn.Parameter, int, float] | None:
    """(embedding weight, first added row, new_token_lr / lr) for the tokens extend_vocab added, else None."""
    added = len(bb.cfg.extra.get("added_tokens", []))
    model = getattr(bb, "model", None)
    if not added or model is None or not hasattr(model, "get_input_embeddings"):
        return None
    weight = model.get_input_embeddings().weight
    if not weight.requires_grad:
        return None
    new_lr = cfg.new_token_lr if cfg.new_token_lr is not None else NEW_TOKEN_LR_SCALE * lr
    return weight, weight.shape[0] - added, new_lr / lr


def _fingerprint(cfg: FitConfig, train: Examples, val: Examples, ctx: FitContext) -> dict[str, Any]:
    """What a checkpoint must have been written for, to be continued: the options and the data."""
    options = {k: v for k, v in cfg.to_dict().items() if k not in ("log_to", "log_dir", "max_time", "num_workers")}
    out = {"config": options, "classes": ctx.classes, "train": data_hash(train.ids, train.labels),
           "val": data_hash(val.ids, val.labels)}
    if ctx.table is not None:  # (the table columns beside the text, as the head reads them)
        import hashlib

        rows = [r.astype("<f4").tobytes() for r in (ctx.table_rows(train), ctx.table_rows(val)) if r is not None]
        out["table"] = hashlib.sha256(b"".join(rows)).hexdigest()[:16]
    return out
