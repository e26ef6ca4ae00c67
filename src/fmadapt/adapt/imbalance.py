"""Class imbalance: measured on the training labels, handled by weighting the loss, always reported."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..config import FitConfig


def imbalance(targets: list[int] | np.ndarray, n_classes: int, cfg: FitConfig, weighted: bool | None = None
              ) -> dict[str, Any]:
    """{"ratio": largest/smallest class count, "weighted": bool, "weights": per-class loss weights or None}.
    `weighted`: a choice already made (the probe's weighted and unweighted heads compete on validation);
    None: cfg.class_weight's rule ("auto": weighted past cfg.imbalance_ratio).

    Weights are inverse class frequency, normalised so that the weighted loss of the training set equals
    an unweighted one in scale (sklearn's "balanced": n / (k · n_c)). Classes absent from training get 0."""
    counts = Counter(int(t) for t in targets)
    present = [counts[c] for c in range(n_classes) if counts[c] > 0]
    ratio = max(present) / min(present) if present else 1.0
    if weighted is None:
        weighted = cfg.class_weight == "balanced" or (cfg.class_weight == "auto" and ratio > cfg.imbalance_ratio)
    weights = None
    if weighted:
        n, k = sum(present), len(present)
        weights = [n / (k * counts[c]) if counts[c] else 0.0 for c in range(n_classes)]
    return {"ratio": round(float(ratio), 3), "weighted": weighted, "threshold": cfg.imbalance_ratio,
            "weights": None if weights is None else [round(w, 6) for w in weights]}
