"""`lr_race`: the fine-tuning learning rate chosen per run by a short race of multiples of the default rate,
judged on validation (issue 21; measured in benchmarks/notes/lr_race.md: off by default)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from ..config import FitConfig
from ..config_rules import race_multiples
from ..errors import TrainingDiverged
from ..train.checkpoint import BatchSeeds
from ..train.module import evaluation_metrics
from .base import FitContext
from .finetune import build_trainer


def lr_race(make: Any, trained: torch.nn.Module, tr: Any, va: Any, base_lr: float, cfg: FitConfig, metric: str,
            ctx: FitContext) -> dict[str, Any]:
    """`lr_race`: from the same start, each multiple of `base_lr` trains `race_fraction` of an epoch (its own
    warmup + schedule over those steps, the same batches) and is scored on the validation loader by the run's
    metric (ties: the lower loss, then the default rate); the start is restored after each. What ran and won,
    for the history: {"steps", "multiples", "candidates", "chosen_lr", "chosen_multiple", "seconds"}."""
    t0 = time.perf_counter()
    multiples = race_multiples(str(cfg.lr_race))
    steps = max(8, int(round(len(tr) * cfg.race_fraction)))
    start = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    key = "val_score" if metric != "accuracy" else "val_acc"
    rows: list[dict[str, Any]] = []
    for m in multiples:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        module = make(base_lr * m, steps)
        trainer = build_trainer(dataclasses.replace(cfg, epochs=max(1, -(-steps // max(1, len(tr)))),
                                                    max_time=None, log_to=None), [BatchSeeds(cfg.seed)],
                                progress=False, max_steps=steps)
        trained.train()
        diverged = None
        try:
            with warnings.catch_warnings():  # (validated below, on the whole validation loader)
                warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
                trainer.fit(module, tr)
        except TrainingDiverged as e:  # a rate too high for this data: it loses the race
            diverged = str(e)
        finally:
            trained.to(memory_format=torch.contiguous_format)
        if diverged is not None:
            rows.append({"multiple": m, "lr": base_lr * m, "diverged": diverged})
            trained.load_state_dict(start)
            continue
        scores = evaluation_metrics(trained, va, module.loss_fn, metric, ctx.multilabel, ctx.regression, ctx.joint)
        rows.append({"multiple": m, "lr": base_lr * m, **{k: round(float(v), 6) for k, v in scores.items()}})
        trained.load_state_dict(start)
    finished = [r for r in rows if "diverged" not in r]
    if not finished:
        raise TrainingDiverged(f"every rate of lr_race {cfg.lr_race!r} diverged: give lower multiples or lr")
    best = max(finished, key=lambda r: (float(r.get(key, r.get("val_acc", 0.0))), -float(r["val_loss"]),
                                        r["multiple"] == 1.0))
    return {"steps": steps, "multiples": multiples, "candidates": rows, "chosen_lr": best["lr"],
            "chosen_multiple": best["multiple"], "seconds": round(time.perf_counter() - t0, 2)}
