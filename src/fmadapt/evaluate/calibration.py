"""Calibration: temperature scaling (Guo et al., 2017) fitted on validation predictions, and the measures it
is judged by: expected calibration error, Brier score, negative log-likelihood, reliability diagram bins.

Temperature scaling divides the logits by one scalar T > 0 chosen to minimise the validation NLL. It never
changes which class is predicted (accuracy is untouched), only how confident the probabilities are. It is
fitted here on probabilities: log p = z - logsumexp(z), and softmax is blind to that per-row constant, so
softmax(log p / T) == softmax(z / T); ensembles are calibrated on their averaged probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: below this many validation examples a fitted temperature is mostly noise: not fitted (T = 1)
MIN_EXAMPLES = 20
T_RANGE = (0.05, 20.0)


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> the same rescaled by 1/T in logit space (rows still sum to 1)."""
    if temperature == 1.0 or len(proba) == 0:
        return proba
    z = _log(proba) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.asarray(proba).dtype)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(proba, dtype=np.float64)[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.log(p).mean()) if len(y) else 0.0


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """Multiclass Brier score: mean over examples of sum_k (p_k - 1[y = k])^2 (0 is perfect, 2 the worst)."""
    if not len(y):
        return 0.0
    onehot = np.zeros_like(proba, dtype=np.float64)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((np.asarray(proba, dtype=np.float64) - onehot) ** 2).sum(1).mean())


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The T in T_RANGE minimising the NLL of softmax(log p / T) on (proba, y): LBFGS on log T."""
    z = torch.as_tensor(_log(proba))
    target = torch.as_tensor(np.asarray(y), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t):
        return 1.0
    return float(np.clip(t, *T_RANGE))


def reliability_bins(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, list[float]]:
    """Equal-width confidence bins (as the ECE uses): mean confidence, accuracy and count of each non-empty
    bin, plus the bin edges, for a reliability diagram."""
    conf = np.asarray(proba).max(1) if len(y) else np.zeros(0)
    correct = (np.asarray(proba).argmax(1) == y).astype(float) if len(y) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": [], "lower": [], "upper": []}
    for b in range(n_bins):
        m = bins == b
        if m.any():
            out["confidence"].append(round(float(conf[m].mean()), 6))
            out["accuracy"].append(round(float(correct[m].mean()), 6))
            out["count"].append(int(m.sum()))
            out["lower"].append(round(float(edges[b]), 6))
            out["upper"].append(round(float(edges[b + 1]), 6))
    return out


def calibration_measures(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from .metrics import expected_calibration_error  # (scikit-learn: not imported to predict with a temperature)

    return {"ece": round(expected_calibration_error(proba, y), 6) if len(y) else 0.0,
            "brier": round(brier_score(proba, y), 6), "nll": round(nll(proba, y), 6)}


def calibrate(proba: np.ndarray, y: np.ndarray, source: str) -> dict[str, Any]:
    """Fit T on (proba, y) and report the measures before and after with reliability bins. `source` says which
    predictions they are (e.g. "validation split, before the refit") for the report."""
    y = np.asarray(y)
    if len(y) < MIN_EXAMPLES:
        t, note = 1.0, (f"not fitted: {len(y)} validation examples (needs >= {MIN_EXAMPLES}); "
                        "probabilities are left as trained")
    else:
        t, note = fit_temperature(proba, y), f"fitted on {len(y)} examples: {source}"
    after = apply_temperature(proba, t)
    return {"temperature": round(t, 6), "fitted": len(y) >= MIN_EXAMPLES, "n": int(len(y)),
            "note": note, "before": calibration_measures(proba, y), "after": calibration_measures(after, y),
            "reliability": {"before": reliability_bins(proba, y), "after": reliability_bins(after, y)}}
