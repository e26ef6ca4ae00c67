"""`contrastive`: SetFit-style few-shot adaptation (Tunstall et al., 2022, "Efficient Few-Shot Learning
Without Prompts"). The body is first fine-tuned on pairs of training examples with a cosine-similarity loss
(same class -> 1, different classes -> 0), which turns a handful of labels into many pairs; a probe head is
then fitted on the adapted body's features (C by cross-validation, see probe.py). Texts and images alike."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import FitConfig
from ..data.examples import Examples
from ..data.images import load_image
from ..data.loader import default_workers
from ..model import Classifier
from ..train.schedules import make_schedule
from .base import FitContext, Strategy, register_strategy
from .finetune import build_trainer
from .labelprior import SENTENCE_COPIES, class_sentences
from .probe import Probe

#: SetFit's body learning rate (2e-5) and pair budget (20 iterations: a positive and a negative pair for every
#: example in each)
DEFAULT_LR = 2e-5


def make_pairs(y: np.ndarray, iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, target) index pairs: per iteration, every example i gets one partner of its own class (target 1;
    another example where the class has one) and one of another class (target 0). Shuffled."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    others = {c: np.flatnonzero(y != c) for c in by_class}
    pairs: list[tuple[int, int, float]] = []
    for _ in range(iterations):
        for i, c in enumerate(y):
            same = by_class[c][by_class[c] != i]
            pairs.append((i, int(rng.choice(same)) if len(same) else i, 1.0))
            if len(others[c]):
                pairs.append((i, int(rng.choice(others[c])), 0.0))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


class PairDataset(Dataset):
    def __init__(self, inputs: list[str], pairs: list[tuple[int, int, float]], modality: str, preprocess: Any
                 ) -> None:
        self.inputs, self.pairs, self.modality, self.preprocess = inputs, pairs, modality, preprocess

    def __len__(self) -> int:
        return len(self.pairs)

    def _one(self, i: int) -> Any:
        raw: Any = self.inputs[i]
        return self.preprocess(load_image(raw) if self.modality == "image" else raw)

    def __getitem__(self, k: int) -> tuple[Any, Any, float]:
        i, j, t = self.pairs[k]
        return self._one(i), self._one(j), t


class PairCollate:
    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, samples: list[tuple[Any, Any, float]]) -> tuple[Any, Any, torch.Tensor]:
        a, b, t = zip(*samples, strict=True)
        return self.collator(list(a)), self.collator(list(b)), torch.tensor(t, dtype=torch.float32)


class PairModule(pl.LightningModule):
    """Cosine-similarity regression on pairs: MSE(cos(f(a), f(b)), target) (sentence-transformers'
    CosineSimilarityLoss, which SetFit uses)."""

    def __init__(self, body: nn.Module, lr: float, weight_decay: float, warmup_frac: float, total_steps: int,
                 schedule: str, decay_beta: float | None) -> None:
        super().__init__()
        self.body = body
        self.lr, self.weight_decay, self.warmup_frac = lr, weight_decay, warmup_frac
        self.total_steps, self.schedule, self.decay_beta = total_steps, schedule, decay_beta
        self.losses: list[float] = []  # per step, for the run summary

    def training_step(self, batch: Any, _i: int) -> torch.Tensor:
        a, b, t = batch
        cos = nn.functional.cosine_similarity(self.body(a), self.body(b), dim=1)  # (B,)
        loss = nn.functional.mse_loss(cos, t)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.body.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        f = make_schedule(self.schedule, self.total_steps, int(self.warmup_frac * self.total_steps),
                          self.decay_beta)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, f), "interval": "step"}}


@register_strategy
class Contrastive(Strategy):
    """SetFit-style: the backbone learns from pairs of examples (same class or not) with a cosine loss, then a
    probe head is fitted on its features. For few labels (8-64 per class); `pair_iterations` sets the pairs."""

    name = "contrastive"
    trains_backbone = True

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        t0 = time.perf_counter()
        bb = model.backbone
        bb.freeze(trainable_top=-1 if cfg.unfreeze < 0 else cfg.unfreeze)
        if bb.cfg.sha256:
            # no longer the checksummed pretrained weights: nothing may cache or look them up by that checksum
            bb.cfg.extra["initial_sha256"] = bb.cfg.sha256
            bb.cfg.sha256 = ""
        both = ctx.refit_on_val and cfg.refit and len(val) > 0
        honest = None
        if both:
            # With few labels every one counts (SetFit trains on all of them). Stage 1 trains the body on the
            # training split only, for honest validation predictions (head chosen by cross-validation, out of
            # fold); stage 2 starts again from the pretrained weights and learns from all labeled pairs.
            start = {k: v.detach().clone() for k, v in bb.state_dict().items()}
            self._train_body(bb, train.inputs, np.asarray(ctx.targets(train)), cfg, ctx)
            honest = Probe().fit(model, train, val, dataclasses.replace(cfg, runtime="torch"),
                                 dataclasses.replace(ctx, cache=None))["_val_proba"]
            bb.load_state_dict(start)
            bb.freeze(trainable_top=-1 if cfg.unfreeze < 0 else cfg.unfreeze)
            inputs, y = train.inputs + val.inputs, np.asarray(ctx.targets(train) + ctx.targets(val))
        else:
            inputs, y = train.inputs, np.asarray(ctx.targets(train))
        t1 = time.perf_counter()
        losses, steps, n_pairs = self._train_body(bb, inputs, y, cfg, ctx)
        t_body = time.perf_counter() - t1
        # the head: a probe on the adapted features (not cached: these weights exist only in this run)
        head = Probe().fit(model, train, val, cfg, dataclasses.replace(ctx, cache=None))
        if honest is None:
            honest = head.get("_val_proba")
        return {**({"_val_proba": honest} if honest is not None else {}),
                "fit_seconds": round(time.perf_counter() - t0, 2), "body_seconds": round(t_body, 2),
                "pairs": n_pairs, "pair_iterations": cfg.pair_iterations, "steps": steps,
                "epochs_run": 1, "pair_loss_first": _mean(losses[:10]), "pair_loss_last": _mean(losses[-10:]),
                **({"label_prior": head["label_prior"]} if "label_prior" in head else {}),
                "C": head["C"], "selection": head["selection"], "trained_on": head["trained_on"],
                "candidates": head["candidates"], "imbalance": head["imbalance"],
                "body_trained_on": (f"training + validation data ({len(y)} examples), after a first run on the "
                                    "training split alone gave the validation predictions" if both
                                    else f"training split ({len(y)} examples)")}

    @staticmethod
    def _train_body(bb: Any, inputs: list[str], y: np.ndarray, cfg: FitConfig, ctx: FitContext
                    ) -> tuple[list[float], int, int]:
        """One pass over the pairs of (inputs, y): (per-step losses, steps, pairs). With a label template the
        class sentences join the examples (SetFit's templated examples): each class is pulled to its name."""
        if cfg.label_template:
            sentences = class_sentences(ctx.classes, cfg.label_template)
            inputs = list(inputs) + [s for s in sentences for _ in range(SENTENCE_COPIES)]
            y = np.concatenate([y, np.repeat(np.arange(len(sentences)), SENTENCE_COPIES)])
        pairs = make_pairs(y, cfg.pair_iterations, cfg.seed)
        workers = default_workers(bb.cfg.modality) if cfg.num_workers is None else cfg.num_workers
        # images: the training transform (crop/flip) gives every pair fresh views, as augmentation
        views = bb.preprocessor(train=cfg.augments_images(True) and bb.cfg.modality == "image")
        loader = DataLoader(PairDataset(inputs, pairs, bb.cfg.modality, views),
                            batch_size=cfg.batch_size, shuffle=False, num_workers=workers,
                            collate_fn=PairCollate(bb.collator()), persistent_workers=False)
        steps = max(1, len(loader))
        module = PairModule(bb, lr=cfg.lr or DEFAULT_LR, weight_decay=cfg.weight_decay,
                            warmup_frac=cfg.warmup_frac, total_steps=steps, schedule=cfg.schedule,
                            decay_beta=cfg.decay_beta)
        trainer = build_trainer(dataclasses.replace(cfg, epochs=1), [], progress=ctx.progress and sys.stderr.isatty())
        bb.train()
        torch.manual_seed(cfg.seed)
        trainer.fit(module, loader)
        bb.eval()
        for p in bb.parameters():
            p.requires_grad_(False)
        return module.losses, steps, len(pairs)


def _mean(xs: list[float]) -> float | None:
    return round(float(np.mean(xs)), 5) if xs else None
