"""Class names as prior knowledge (`label_template`, texts). A sentence encoder already knows what "positive"
or "sports" means: each class's name is put in a template ("This sentence is {}.") and embedded, and the
cosine of an input to each class sentence is a zero-shot classifier. With few labels that prior is worth
more than the labels (packaged MiniLM, SST-2: zero-shot 68.8 % on the test set, SetFit with 8 labels per
class 61-65 %).

The probe head then learns on top of the prior instead of from nothing: logits = s·prior + W·x + b, where
the strength s is fitted by maximum likelihood on the labeled examples (names that do not describe the
classes get s near 0 and are ignored) and W, b are an L2-regularised logistic regression with the prior as
a fixed offset (C chosen as usual). The sum is one linear layer, so the saved model, ONNX export and every
runtime are unchanged. `contrastive` also adds the class sentences to its pairs (as SetFit's templated
examples), so the adapted body keeps each class near its name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

from ..errors import ConfigError

#: the largest prior strength (cosines differ by ~0.05-0.3, so 200 already makes the prior decisive)
MAX_STRENGTH = 200.0
#: copies of each class sentence among the contrastive strategy's examples (SetFit's templated sample_size)
SENTENCE_COPIES = 2
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d+)?\s*$")


def class_sentences(classes: Sequence[Any], template: str) -> list[str]:
    """One sentence per class, its name put into the template. Refuses classes that are only numbers (their
    names say nothing: map them to words in the label column first)."""
    names = [str(c) for c in classes]
    numeric = [n for n in names if _NUMBER.match(n)]
    if numeric:
        raise ConfigError(
            f"label_template uses the class names as prior knowledge, but the classes {', '.join(numeric[:5])} "
            "are numbers. Replace them with words in the label column (e.g. 0 -> negative, 1 -> positive), or "
            "leave label_template unset.")
    return [template.replace("{}", n.replace("_", " ")) for n in names]


@torch.no_grad()
def class_embeddings(backbone: Any, sentences: list[str]) -> np.ndarray:
    """(n_cls, D) unit-length embeddings of the class sentences by the backbone as it is now."""
    was_training = backbone.training
    backbone.eval()
    pre, collate = backbone.preprocessor(False), backbone.collator()
    z = backbone(collate([pre(s) for s in sentences])).float().cpu().numpy().astype(np.float64)
    backbone.train(was_training)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class LabelPrior:
    """The zero-shot logits of features x: (x · ĉ_k) / r, with ĉ_k the unit class embeddings and r the mean
    feature norm of the labeled data (1 for normalised encoders), which keeps them cosine-like and linear in x."""

    def __init__(self, class_emb: np.ndarray, x_ref: np.ndarray, template: str) -> None:
        self.class_emb = class_emb
        self.r = float(np.mean(np.linalg.norm(x_ref, axis=1))) or 1.0
        self.template = template

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.class_emb.T) / self.r

    def weight(self) -> np.ndarray:
        """The (n_cls, D) matrix M with logits(x) == x @ M.T."""
        return self.class_emb / self.r


def fit_strength(prior: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """s >= 0 maximising the (weighted) likelihood of y under softmax(s·prior)."""
    w = np.ones(len(y)) if w is None else w
    rows = np.arange(len(y))

    def nll(s: float) -> float:
        return float(-np.sum(w * log_softmax(s * prior, axis=1)[rows, y]) / np.sum(w))

    return float(minimize_scalar(nll, bounds=(0.0, MAX_STRENGTH), method="bounded",
                                 options={"xatol": 1e-3}).x)


class OffsetLogReg:
    """Multinomial logistic regression with a fixed per-row logit offset: minimises
    C·Σ w_i·CE(W x_i + b + offset_i, y_i) + ½||W||² (sklearn's convention for C). Exposes what the probe
    uses of sklearn's model (coef_, intercept_, classes_); predict with `proba(x, offset)`."""

    def __init__(self, c: float, n_cls: int) -> None:
        self.c, self.n_cls = c, n_cls

    def fit(self, x: np.ndarray, y: np.ndarray, offset: np.ndarray, w: np.ndarray | None = None) -> OffsetLogReg:
        n, d = x.shape
        k = self.n_cls
        onehot = np.eye(k)[y]
        w = np.ones(n) if w is None else w

        def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
            wm, b = theta[: k * d].reshape(k, d), theta[k * d:]
            lp = log_softmax(x @ wm.T + b + offset, axis=1)
            loss = -self.c * np.sum(w[:, None] * onehot * lp) + 0.5 * np.sum(wm * wm)
            g = self.c * w[:, None] * (np.exp(lp) - onehot)
            return float(loss), np.concatenate([(g.T @ x + wm).ravel(), g.sum(0)])

        res = minimize(f, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
        self.coef_, self.intercept_ = res.x[: k * d].reshape(k, d), res.x[k * d:]
        self.classes_ = np.arange(k)
        return self

    def proba(self, x: np.ndarray, offset: np.ndarray) -> np.ndarray:
        z = x @ self.coef_.T + self.intercept_ + offset
        return np.exp(log_softmax(z, axis=1))
