"""LogME (You et al., ICML 2021): how well frozen features suit a labelled task, without training.

For each class, the log marginal evidence of a Bayesian linear regression from the features to the class
indicator, with the prior and noise precisions (alpha, beta) fitted by evidence maximisation (MacKay's
fixed-point iteration); the score is the mean over classes, per example. Higher is better; scores compare
backbones on the same data."""

from __future__ import annotations

import numpy as np


def _evidence(y: np.ndarray, f: np.ndarray, v: np.ndarray, s: np.ndarray, ft_y: np.ndarray) -> float:
    n, d = f.shape
    alpha, beta, eps = 1.0, 1.0, 1e-5
    tmp = v.T @ ft_y  # projection of F^T y on the eigenvectors of F^T F
    for _ in range(11):
        gamma = float((beta * s / (alpha + beta * s)).sum())
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = float((m * m).sum())
        alpha_new = gamma / (alpha_de + eps)
        beta_de = float(((y - f @ m) ** 2).sum())
        beta_new = (n - gamma) / (beta_de + eps)
        done = abs(alpha_new / beta_new - alpha / beta) / (alpha / beta) < 0.01
        alpha, beta = alpha_new, beta_new
        if done:
            break
    m = v @ (tmp * beta / (alpha + beta * s))
    alpha_de = float((m * m).sum())
    beta_de = float(((y - f @ m) ** 2).sum())
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                - beta / 2 * beta_de - alpha / 2 * alpha_de - n / 2 * np.log(2 * np.pi))
    return float(evidence / n)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-class LogME evidence of (N, D) features for integer labels (N,)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    s, v = np.linalg.eigh(f.T @ f)  # F^T F = V diag(s) V^T
    s = np.clip(s, 0.0, None)
    scores = []
    for c in np.unique(y):
        yc = (y == c).astype(np.float64)
        scores.append(_evidence(yc, f, v, s, f.T @ yc))
    return float(np.mean(scores))
