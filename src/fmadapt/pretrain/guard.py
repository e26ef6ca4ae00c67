"""The check before and after continued pretraining: did the backbone get better, for what it is used for?

- With labeled data: a quick probe, before and after: standardised frozen features + logistic regression, 5-fold
  cross-validated accuracy on at most 2,000 labeled examples (a seeded stratified sample), at the best of C = 0.01,
  0.1 and 1. (A single 80/20 split at C = 1 said a SimCLR run on Fashion-MNIST cost 1.5 points, 0.82 -> 0.805 on
  400 images, where the product's probe gained 2 points on 10,000 test images, over 3 seeds.)
- Without: Wang & Isola's (2020) proxies on held-out unlabeled inputs, which pretraining never saw: alignment (the
  mean squared distance between an input's normalised embedding and that of the same input perturbed: a text with
  10 % of its words or characters dropped, an image mirrored; lower is better) and uniformity (log of the mean
  Gaussian potential between inputs' embeddings: lower is better, spread over the sphere).

A regression is said plainly: the verdict names what got worse. (Masked-LM pretraining changes the encoder towards
predicting tokens, not towards sentence embeddings: a frozen probe may lose even when fine-tuning afterwards gains,
which is what `--then finetune` runs measure; the verdict says so.)"""

from __future__ import annotations

from typing import Any

import numpy as np

PROBE_MAX = 2000
#: the quick probe's cross-validation folds and its values of C (the best mean accuracy is reported)
FOLDS = 5
PROBE_CS = (0.01, 0.1, 1.0)


def _features(backbone: Any, inputs: list[str], flip: bool = False) -> np.ndarray:
    from ..data.examples import Examples
    from ..runtime.features import extract_features

    ex = Examples(inputs=list(inputs), labels=None, ids=[str(i) for i in range(len(inputs))], source="<pretrain>",
                  modality=backbone.cfg.modality)
    return extract_features(backbone, ex, batch_size=64, cache=None, progress=False, runtime="torch", flip=flip)


def probe_split(labels: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the indices of at most PROBE_MAX examples, stratified and seeded; their cross-validation folds: one fold
    number per index)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    idx = np.arange(len(labels))
    y = np.asarray(labels)
    if len(idx) > PROBE_MAX:
        idx, _ = train_test_split(idx, train_size=PROBE_MAX, random_state=seed, stratify=_stratify(y))
    _, counts = np.unique(y[idx], return_counts=True)
    k = int(min(FOLDS, max(2, counts.min())))
    folds = np.zeros(len(idx), dtype=int)
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if counts.min() >= 2 else None
    if splitter is None:  # (a class with one example: plain shuffled folds)
        folds[np.random.default_rng(seed).permutation(len(idx))] = np.arange(len(idx)) % k
    else:
        for f, (_, te) in enumerate(splitter.split(idx, y[idx])):
            folds[te] = f
    return np.asarray(idx), folds


def _stratify(y: np.ndarray) -> np.ndarray | None:
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None


def quick_probe(backbone: Any, inputs: list[str], labels: list[str], split: tuple[np.ndarray, np.ndarray]
                ) -> float:
    """Cross-validated accuracy of standardised frozen features + logistic regression, at the best C of
    PROBE_CS (each fold's scaler fitted on its training part)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    idx, folds = split
    x = _features(backbone, [inputs[i] for i in idx])
    y = np.asarray(labels)[idx]
    scores: dict[float, list[float]] = {c: [] for c in PROBE_CS}
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        scaler = StandardScaler().fit(x[tr])
        a, b = scaler.transform(x[tr]), scaler.transform(x[te])
        for c in PROBE_CS:
            clf = LogisticRegression(C=c, max_iter=1000).fit(a, y[tr])
            scores[c].append(float((clf.predict(b) == y[te]).mean()))
    return max(float(np.mean(v)) for v in scores.values())


def proxies(backbone: Any, inputs: list[str], seed: int) -> dict[str, float]:
    """{"alignment", "uniformity"} of the backbone's embeddings of `inputs` (Wang & Isola, 2020)."""
    from ..data.textnoise import perturb_text

    z = _normalised(_features(backbone, inputs))
    if backbone.cfg.modality == "image":
        zp = _normalised(_features(backbone, inputs, flip=True))
    else:
        zp = _normalised(_features(backbone, [perturb_text(t, "word_drop", 0.1, seed, i)
                                              for i, t in enumerate(inputs)]))
    align = float(((z - zp) ** 2).sum(1).mean())
    sq = np.maximum(2.0 - 2.0 * (z @ z.T), 0.0)[np.triu_indices(len(z), 1)]
    uniform = float(np.log(np.exp(-2.0 * sq).mean()))
    return {"alignment": round(align, 4), "uniformity": round(uniform, 4)}


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def verdict(before: dict[str, Any], after: dict[str, Any], method: str, what: str = "texts") -> str:
    """One sentence: better, or what got worse, and by how much."""
    if "probe_accuracy" in before:
        b, a = before["probe_accuracy"], after["probe_accuracy"]
        if a + 1e-9 >= b:
            return f"the quick probe gained {100 * (a - b):+.2f} points ({b:.4f} -> {a:.4f})"
        note = (" Masked-LM pretraining moves the encoder towards predicting tokens: measure it fine-tuned "
                "(fmadapt fit --strategy finetune --backbone THIS_DIR) before dropping it." if method == "mlm" else "")
        return f"REGRESSION: the quick probe lost {100 * (b - a):.2f} points ({b:.4f} -> {a:.4f}).{note}"
    worse = [k for k in ("alignment", "uniformity") if after[k] > before[k] + 1e-4]
    change = ", ".join(f"{k} {before[k]} -> {after[k]}" for k in ("alignment", "uniformity"))
    if not worse:
        return f"the embeddings improved or held on held-out {what} ({change}; lower is better)"
    return (f"REGRESSION on held-out {what}: {' and '.join(worse)} got worse ({change}; lower is better). Give "
            "labeled data (--labeled) for a probe that says whether it matters for your task.")
