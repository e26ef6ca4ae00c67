"""The optimisation loop every pretraining method shares: AdamW (no weight decay on biases and norms), linear
warm-up over `warmup` of the steps then linear decay to 0, gradients clipped at norm 1, stopped at the end of the
planned steps or when `time_budget` is spent, whichever comes first; a loss curve of about 50 points."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .config import PretrainConfig


def optimise(model: nn.Module, steps: Any, loss_of: Callable[[Any], torch.Tensor], pc: PretrainConfig,
             progress: Callable[[str], None] | None = None, *, items: int, no_decay: Sequence[nn.Parameter] = (),
             step: Callable[[torch.optim.Optimizer], None] | None = None,
             on_stop: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train `model`'s trainable parameters on `loss_of(s)` for each `s` of `steps` (a batch each; `len(s)` is the
    number of inputs it covers; `items`: the inputs of one epoch). `no_decay`: matrices kept out of weight decay as
    well; `step(opt)`: replaces `opt.step()` (e.g. to scale some rows' steps); `on_stop`: run however the loop ends.
    Returns the run's record: steps, inputs seen, seconds, whether the time budget stopped it, the loss at the start
    and end, and the curve of (step, mean loss) points."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    excluded = {id(p) for p in no_decay}
    decay = [p for _, p in params if p.ndim >= 2 and id(p) not in excluded]
    plain = [p for _, p in params if p.ndim < 2 or id(p) in excluded]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": pc.weight_decay},
                             {"params": plain, "weight_decay": 0.0}], lr=pc.peak_lr)
    total, warm = len(steps), max(1, int(pc.warmup * len(steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    budget = pc.budget_seconds()
    every = max(1, total // 50)
    curve: list[list[float]] = []
    window: list[float] = []
    model.train()
    t0, stopped, seen, done = time.perf_counter(), False, 0, 0
    try:
        for i, batch in enumerate(steps):
            if budget is not None and time.perf_counter() - t0 > budget:
                stopped = True
                break
            loss = loss_of(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            if step is None:
                opt.step()
            else:
                step(opt)
            sched.step()
            done, seen = i + 1, seen + len(batch)
            window.append(float(loss.detach()))
            if done % every == 0 or done == total:
                curve.append([done, round(sum(window) / len(window), 4)])
                window = []
                if progress is not None:
                    progress(f"step {done}/{total}: {pc.method} loss {curve[-1][1]:.4f} "
                             f"({time.perf_counter() - t0:.0f} s)")
    finally:
        model.eval()
        if on_stop is not None:
            on_stop()
    if window:
        curve.append([done, round(sum(window) / len(window), 4)])
    if not curve or not all(math.isfinite(v) for _, v in curve):
        raise RuntimeError(f"pretrain: the {pc.method} loss is not finite ({curve[-1:] or 'no step ran'}); lower lr")
    return {"steps": done, "planned_steps": total, "seen": seen, "epochs_done": round(seen / items, 3),
            "seconds": round(time.perf_counter() - t0, 1), "stopped_by_time_budget": stopped,
            "loss_first": curve[0][1], "loss_last": curve[-1][1], "curve": curve, "lr": pc.peak_lr}
