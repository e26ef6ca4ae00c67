"""Several targets from one table (`targets="rating:regression,recommended"`): parsing the specification, and
the names the model directory and the prediction columns use. No torch: the fitted model (multitarget.py) and
the option rules (config_rules.py) share it."""

from __future__ import annotations

import math
import re

TASK_NAMES = ("classification", "multilabel", "regression")


def target_specs(spec: str, default_task: str = "classification") -> list[tuple[str, str]]:
    """[(label column, task), ...] of "rating:regression,recommended": columns joined by commas, each with an
    optional `:task` (else `default_task`). ValueError (its message says what to write) for an unknown task, an
    empty or repeated column, or fewer than two targets."""
    out: list[tuple[str, str]] = []
    for part in spec.split(","):
        item = part.strip()
        column, _, task = item.rpartition(":") if ":" in item else (item, "", "")
        column, task = column.strip(), task.strip() or default_task
        if not column:
            raise ValueError(f"an empty label column in {spec!r}: write columns joined by commas, each optionally "
                             "followed by :classification, :multilabel or :regression")
        if task not in TASK_NAMES:
            raise ValueError(f"{item!r}: unknown task {task!r} (classification | multilabel | regression)")
        if column in [c for c, _ in out]:
            raise ValueError(f"{column!r} is named twice")
        out.append((column, task))
    if len(out) < 2:
        raise ValueError(f"{spec!r} names one target: for one label column use label_col (--label) instead")
    return out


def target_dirs(names: list[str]) -> list[str]:
    """A sub-directory name per target, from its column name (letters, digits, `-`, `_` kept), unique."""
    out: list[str] = []
    for i, name in enumerate(names):
        slug = re.sub(r"[^\w-]+", "_", name, flags=re.ASCII).strip("_") or f"target{i}"
        while slug in out:
            slug += f"_{i}"
        out.append(slug)
    return out


def parse_weights(text: str | None, names: list[str]) -> list[float]:
    """Loss weights of "rating=2,recommended=1" in the order of `names` (1 for a target not named); ValueError
    naming an unknown target or a weight that is not a positive number."""
    weights = dict.fromkeys(names, 1.0)
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"target_weights names {name!r}, not a target ({', '.join(names)})")
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not w > 0 or not math.isfinite(w):
            raise ValueError(f"target_weights: {part.strip()!r} is not NAME=POSITIVE_NUMBER")
        weights[name] = w
    return [weights[n] for n in names]
