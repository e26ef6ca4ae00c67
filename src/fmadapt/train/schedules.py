"""Learning-rate schedules as multipliers of the base rate, per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """Linear warmup from ~0 to 1 over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / (warmup_steps + 1)


def inverse_time(total_steps: int, warmup_steps: int, beta: float | None = None) -> Callable[[int], float]:
    """Inverse-time decay α0/(1+βt) after a linear warmup; t counts optimizer steps after the warmup. The
    default β = 9/(decay steps) ends at α0/10."""
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    b = beta if beta is not None else 9.0 / max(1, total_steps - warmup_steps)

    def f(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        return 1.0 / (1.0 + b * (step - warmup_steps))

    return f


def one_cycle(total_steps: int, warmup_steps: int, div: float = 25.0, final_div: float = 1e4
              ) -> Callable[[int], float]:
    """Smith's one-cycle (as torch's OneCycleLR, cosine annealing): from α0/div up to α0 over the warmup
    (at least 30 % of the steps when `warmup_steps` is smaller), then down to α0/(div·final_div)."""
    total_steps = max(2, total_steps)
    up = max(1, min(total_steps - 1, max(warmup_steps, int(0.3 * total_steps))))

    def cos(a: float, b: float, t: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))

    def f(step: int) -> float:
        if step < up:
            return cos(1.0 / div, 1.0, step / up)
        return cos(1.0, 1.0 / (div * final_div), min(1.0, (step - up) / max(1, total_steps - 1 - up)))

    return f


def constant(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Constant rate after a linear warmup."""
    warmup_steps = max(0, min(warmup_steps, max(1, total_steps) - 1))
    return lambda step: _warmup(step, warmup_steps) if step < warmup_steps else 1.0


SCHEDULES = {"cosine": warmup_cosine, "inverse_time": inverse_time, "onecycle": one_cycle, "constant": constant}


def make_schedule(name: str, total_steps: int, warmup_steps: int, beta: float | None = None
                  ) -> Callable[[int], float]:
    if name == "inverse_time":
        return inverse_time(total_steps, warmup_steps, beta)
    return SCHEDULES[name](total_steps, warmup_steps)
