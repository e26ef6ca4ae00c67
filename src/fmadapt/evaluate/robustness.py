"""Robustness of a fitted classifier on the user's own labeled data: accuracy under image corruptions
(5 severities each), under FGSM/PGD attacks over an epsilon grid, under text perturbations per rate, and under
sound perturbations (noise, gain, clipping, time shift; 3 severities, evaluate/audio_robustness.py).

Corrupted images go through the estimator's own inference path (`clf.proba`: ensemble averaging, ONNX
Runtime) by writing them to a temporary folder, so what is measured is the model the user ships. Everything
is deterministic given `seed`: random draws come from generators keyed by (seed, example, perturbation)."""

from __future__ import annotations

import copy
import io
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.examples import Examples
from ..data.images import ImageLoadError, load_image
from ..data.textnoise import TEXT_PERTURBATIONS, perturb_text
from ..errors import DataError

#: ImageNet-C parameters (Hendrycks & Dietterich, 2019), severities 1..5. Corruptions apply to the image
#: at the model's evaluation scale (short side input_size / crop_pct), as ImageNet-C applies them to 224 px
#: crops. Only the blur depends on that scale: sigma = max(ImageNet-C sigma * input_size / 224, CIFAR-10-C
#: sigma) -- scaled down linearly, severity 1 at 32 px (sigma 0.14) would change no pixel.
CORRUPTIONS: dict[str, dict[str, Any]] = {
    "gaussian_noise": {"param": "noise std (0-1 scale)", "values": [0.08, 0.12, 0.18, 0.26, 0.38]},
    "gaussian_blur": {"param": "sigma (px at 224; at least min_values px)", "values": [1.0, 2.0, 3.0, 4.0, 6.0],
                      "min_values": [0.4, 0.6, 0.7, 0.8, 1.0]},
    "jpeg": {"param": "JPEG quality", "values": [80, 65, 58, 50, 40]},
    "brightness": {"param": "added to HSV value (0-1 scale)", "values": [0.1, 0.2, 0.3, 0.4, 0.5]},
    "contrast": {"param": "contrast factor", "values": [0.4, 0.3, 0.2, 0.1, 0.05]},
}
DEFAULT_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
DEFAULT_RATES = (0.05, 0.1, 0.2, 0.3)
PGD_STEPS = 5
ADV_BATCH = 32


def robustness_report(clf: Any, ex: Examples, *, severities: Sequence[int] = (1, 2, 3, 4, 5),
                      eps_grid: Sequence[float] = DEFAULT_EPS, text_rates: Sequence[float] = DEFAULT_RATES,
                      max_examples: int = 500, max_adversarial: int = 200, seed: int = 0,
                      adversarial: bool = True, progress: bool = False) -> dict[str, Any]:
    """Accuracy of the fitted `clf` on `ex` (labeled), clean and perturbed (a multi-label model's micro-F1, a
    regression model's RMSE: `metric`; adversarial attacks for single-label models only). JSON-serialisable."""
    metric, score = task_scorer(clf.check_fitted())
    single = metric == "accuracy"
    if not ex.labels or len(ex) == 0:
        raise DataError(f"{ex.source or 'evaluation data'}: robustness needs labeled examples")
    unknown = sorted(set(ex.labels) - set(clf.classes_)) if single else []
    if unknown:
        raise DataError(f"{ex.source}: labels {unknown[:5]} were not seen in training")
    if any(not 1 <= s <= 5 for s in severities):
        raise DataError("severities must lie in 1..5")
    # (a regression's targets are no classes: a seeded sample of the whole)
    ex = ex.subset(stratified_sample(ex.labels if metric != "rmse" else [""] * len(ex), max_examples, seed))
    say: Callable[[str], None] = (lambda m: print(f"robustness: {m}", file=sys.stderr)) if progress \
        else (lambda m: None)
    seconds = {"corruptions": 0.0, "adversarial": 0.0, "text": 0.0}
    out: dict[str, Any] = {"modality": ex.modality, "n": 0, "clean_accuracy": 0.0, "corruptions": {},
                           "text": {}, "adversarial": {}, "seconds": seconds, "skipped": []}
    with _quiet(clf):
        if ex.modality == "image":
            # an ensemble may mix input sizes: corrupt at the largest, so that no member sees an upscaled copy
            cfg = max((m.model.backbone.cfg for m in clf.members_), key=lambda c: c.input_size / c.crop_pct)
            images, ex, out["skipped"] = _decode(ex, cfg)
            y = _targets(clf, ex)
            out["clean_accuracy"] = score(clf.proba(ex), y)
            t = time.perf_counter()
            out["corruptions"] = _corruption_accuracy(clf, ex, images, y, severities, seed, cfg.input_size, say,
                                                      score)
            seconds["corruptions"] = time.perf_counter() - t
            if adversarial and single:
                t = time.perf_counter()
                out["adversarial"] = _adversarial_accuracy(clf, images, y, eps_grid, max_adversarial, seed, say)
                seconds["adversarial"] = time.perf_counter() - t
        elif ex.modality == "audio":  # (evaluate/audio_robustness.py: noise, gain, clipping, time shift)
            from .audio_robustness import audio_corruption_accuracy

            y = _targets(clf, ex)
            out["clean_accuracy"] = score(clf.proba(ex), y)
            t = time.perf_counter()
            out["corruptions"], out["skipped"] = audio_corruption_accuracy(clf, ex, y, severities, seed, score, say)
            seconds["corruptions"] = time.perf_counter() - t
        else:
            y = _targets(clf, ex)
            out["clean_accuracy"] = score(clf.proba(ex), y)
            t = time.perf_counter()
            for kind in TEXT_PERTURBATIONS:
                say(f"text {kind}")
                out["text"][kind] = {
                    _key(r): score(clf.proba(_with_inputs(ex, [perturb_text(s, kind, r, seed, i)
                                                                  for i, s in enumerate(ex.inputs)])), y)
                    for r in text_rates}
            seconds["text"] = time.perf_counter() - t
    out["n"] = len(ex)
    flat = [a for table in (out["corruptions"] or out["text"]).values() for a in table.values()]
    out["mean_perturbed_accuracy"] = float(np.mean(flat)) if flat else None
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    out["params"] = {"seed": seed, "max_examples": max_examples}
    if not single:  # (the keys keep their names: "accuracy" holds the task's metric, named here)
        out.update(metric=metric, higher_is_better=metric != "rmse",
                   note="adversarial attacks are for single-label models" if ex.modality == "image" else "")
    if ex.modality == "image":
        out["params"].update(severities=list(severities), corruptions=copy.deepcopy(CORRUPTIONS),
                             eps_grid=[float(e) for e in eps_grid] if adversarial else [])
    elif ex.modality == "audio":
        from .audio_robustness import AUDIO_CORRUPTIONS

        out["params"].update(severities=[s for s in severities if s <= 3], corruptions=copy.deepcopy(AUDIO_CORRUPTIONS))
    else:
        out["params"].update(text_rates=[float(r) for r in text_rates], text_perturbations=list(TEXT_PERTURBATIONS))
    return out


def robustness_summary_lines(report: dict[str, Any]) -> list[str]:
    """A short plain-text table for terminals."""
    lines = [f"robustness on {report['n']} {report['modality']} examples: "
             f"clean {report.get('metric', 'accuracy')} {report['clean_accuracy']:.3f}"]

    def table(title: str, rows: dict[str, dict[str, float]]) -> None:
        if not rows:
            return
        cols = list(next(iter(rows.values())))
        lines.append(f"{title:<16}" + "".join(f"{c:>8}" for c in cols))
        lines.extend(f"{name:<16}" + "".join(f"{accs[c]:>8.3f}" for c in cols) for name, accs in rows.items())

    table("corruption", report.get("corruptions") or {})
    table("text / rate", report.get("text") or {})
    adv = report.get("adversarial") or {}
    if adv:
        lines.append(f"adversarial on {adv['n']} images (eps in 1/255 units; {adv['note']})")
        table("attack / eps", {k: dict(zip([f"{e:g}" for e in adv["eps_255"]], adv[k].values(), strict=False))
                               for k in ("fgsm", "pgd")})
    return lines


# -- sampling ----------------------------------------------------------------------------------------------
def stratified_sample(labels: Sequence[str], max_n: int, seed: int) -> list[int]:
    """Sorted indices of at most `max_n` examples, each class in proportion (largest remainder), seeded."""
    n = len(labels)
    if n <= max_n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    quota = {c: len(ix) * max_n / n for c, ix in by_class.items()}
    take = {c: int(q) for c, q in quota.items()}
    for c in sorted(quota, key=lambda c: take[c] - quota[c])[:max_n - sum(take.values())]:
        take[c] += 1
    picked = [int(i) for c, ix in sorted(by_class.items()) for i in rng.choice(ix, take[c], replace=False)]
    return sorted(picked)


# -- image corruptions -------------------------------------------------------------------------------------
def corrupt_image(im: Image.Image, name: str, severity: int, rng: np.random.Generator,
                  input_size: int = 224) -> Image.Image | bytes:
    """The corrupted RGB image (JPEG: its encoded bytes, so the decoder sees real JPEG artefacts). The
    noise draws do not depend on the severity: severities of one image differ in strength only."""
    c = CORRUPTIONS[name]["values"][severity - 1]
    if name == "jpeg":
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(c))
        return buf.getvalue()
    if name == "brightness":
        hsv = np.asarray(im.convert("HSV"), dtype=np.float32)
        hsv[..., 2] = np.clip(hsv[..., 2] + c * 255.0, 0, 255)
        return Image.fromarray(np.round(hsv).astype(np.uint8), mode="HSV").convert("RGB")
    x = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
    if name == "gaussian_noise":
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * c
    elif name == "gaussian_blur":
        x = _gaussian_blur(x, max(c * input_size / 224, CORRUPTIONS[name]["min_values"][severity - 1]))
    elif name == "contrast":
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * c + mean
    else:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), mode="RGB")


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable true Gaussian (x: (H, W, 3)). PIL's GaussianBlur approximates it with box filters, which
    leave the image unchanged for the sub-pixel sigmas that small models' severity 1 asks for."""
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    for axis in (0, 1):
        n = x.shape[axis]
        p = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(3)], mode="symmetric")
        x = np.zeros_like(x)
        for i in range(2 * r + 1):
            x += k[i] * p.take(np.arange(i, i + n), axis=axis)
    return x


def _decode(ex: Examples, cfg: Any) -> tuple[list[Image.Image], Examples, list[dict[str, str]]]:
    """Each image decoded once and resized to the evaluation scale (short side input_size / crop_pct, the
    size the eval transform resizes to, so it then only centre-crops); unreadable files are skipped."""
    short = int(round(cfg.input_size / cfg.crop_pct))
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(cfg.interpolation, Image.BICUBIC)
    images, keep, skipped = [], [], []
    for i, path in enumerate(ex.inputs):
        try:
            im = load_image(path, draft_size=short)
        except ImageLoadError as e:
            skipped.append({"where": path, "reason": str(e)})
            continue
        w, h = im.size
        scale = short / min(w, h)
        if scale != 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        images.append(im)
        keep.append(i)
    if not keep:
        raise DataError(f"{ex.source}: none of the images could be read")
    return images, ex.subset(keep), skipped


def _corruption_accuracy(clf: Any, ex: Examples, images: list[Image.Image], y: np.ndarray,
                         severities: Sequence[int], seed: int, size: int, say: Callable[[str], None],
                         score: Callable[[np.ndarray, np.ndarray], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fmadapt-robust-") as tmp:
        for ci, name in enumerate(CORRUPTIONS):
            out[name] = {}
            for sev in severities:
                say(f"{name} severity {sev}")
                paths = []
                for i, im in enumerate(images):
                    rng = np.random.default_rng([seed, i, ci])
                    res = corrupt_image(im, name, sev, rng, size)
                    path = Path(tmp) / f"{i}.{'jpg' if isinstance(res, bytes) else 'png'}"
                    if isinstance(res, bytes):
                        path.write_bytes(res)
                    else:
                        res.save(path, compress_level=1)  # written once, read once: speed over size
                    paths.append(str(path))
                out[name][str(sev)] = score(clf.proba(_with_inputs(ex, paths)), y)
                for p in paths:
                    Path(p).unlink()
    return out


# -- adversarial -------------------------------------------------------------------------------------------
def attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, lo: torch.Tensor,
           hi: torch.Tensor, kind: str = "fgsm", steps: int = PGD_STEPS,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf attack on a normalised batch x (B,3,H,W); eps, lo, hi: (1,3,1,1) normalised units:
    `train.adversarial.image_adversary` with every step projected onto the valid pixel range as well as the
    eps-ball, and PGD's random start seeded (an evaluation must only count images that could exist,
    reproducibly). PGD: step 2.5 eps / steps (Madry et al., 2018)."""
    from ..train.adversarial import image_adversary

    return image_adversary(model, x, y, F.cross_entropy, eps, kind, steps if kind == "pgd" else 1,
                           step=2.5 * eps / steps, bounds=(lo, hi), generator=generator)


def _adversarial_accuracy(clf: Any, images: list[Image.Image], y: np.ndarray, eps_grid: Sequence[float],
                          max_n: int, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
    model = clf.members_[0].model
    bb = model.backbone
    idx = stratified_sample([str(v) for v in y], max_n, seed)
    pre = bb.preprocessor(train=False)
    x_all = torch.stack([pre(images[i]) for i in idx])  # (N,3,H,W), normalised
    y_all = torch.as_tensor(y[idx], dtype=torch.long)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (bb.cfg.mean, bb.cfg.std))
    lo, hi = (0 - mean) / std, (1 - mean) / std
    device = model.head.weight.device
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    result: dict[str, Any] = {"fgsm": {}, "pgd": {}}
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # gradients w.r.t. the input only
        with torch.enable_grad():
            clean = _batched_correct(model, x_all, y_all, device, lambda x, t: x)
            for kind in ("fgsm", "pgd"):
                for e in eps_grid:
                    say(f"{kind} eps {e * 255:g}/255")
                    eps = (torch.full((1, 3, 1, 1), float(e)) / std).to(device)  # pixel eps, normalised
                    fn = (lambda x, t: x) if e == 0 else (
                        lambda x, t, eps=eps, kind=kind: attack(model, x, t, eps, lo.to(device), hi.to(device),
                                                                kind, PGD_STEPS, gen))
                    result[kind][_key(e, 4)] = clean if e == 0 else _batched_correct(model, x_all, y_all, device, fn)
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)
    note = "eager PyTorch, inputs clipped to the valid pixel range"
    if len(clf.members_) > 1:
        note += f"; ensemble: member 0 of {len(clf.members_)} only"
    return {**result, "clean_accuracy": clean, "eps_unit": "pixel (0-1 scale)",
            "eps_255": [round(float(e) * 255, 4) for e in eps_grid], "n": len(idx), "steps": PGD_STEPS,
            "note": note}


def _batched_correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                     perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    correct = 0
    for s in range(0, len(x), ADV_BATCH):
        xb, yb = x[s:s + ADV_BATCH].to(device), y[s:s + ADV_BATCH].to(device)
        xb = perturb(xb, yb)
        with torch.no_grad():
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(1, len(x))


# -- helpers -----------------------------------------------------------------------------------------------
class _quiet:
    """No progress bars per batch and no feature cache while perturbed copies are predicted: they would fill
    the user's cache with features nobody asks for again. Restores the fitted model's settings afterwards."""

    def __init__(self, clf: Any) -> None:
        self.clf = clf.check_fitted()  # (the fitted model, also when given its estimator)

    def __enter__(self) -> None:
        self.saved = (self.clf.cache, self.clf.progress)
        self.clf.cache, self.clf.progress = False, False

    def __exit__(self, *exc: Any) -> None:
        self.clf.cache, self.clf.progress = self.saved


def _with_inputs(ex: Examples, inputs: list[str]) -> Examples:
    # (a model reading table columns beside the text sees the same columns with the perturbed texts)
    return Examples(inputs=inputs, labels=ex.labels, ids=ex.ids, source=ex.source, modality=ex.modality,
                    table=ex.table)


def _targets(clf: Any, ex: Examples) -> np.ndarray:
    return clf.encode_labels(ex.labels)


def _accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    return float((proba.argmax(1) == y).mean()) if len(y) else 0.0


def task_scorer(clf: Any) -> tuple[str, Callable[[np.ndarray, np.ndarray], float]]:
    """(metric, score(proba, targets)): accuracy; a multi-label model's micro-F1 at its thresholds; a regression
    model's RMSE (lower is better)."""
    task = clf.config_.task
    if task == "regression":
        return "rmse", lambda p, y: float(np.sqrt(np.mean((clf.labels_of(p) - y) ** 2))) if len(y) else 0.0
    if task == "multilabel":
        from sklearn.metrics import f1_score

        t = clf.decision_thresholds()
        return "micro_f1", lambda p, y: float(f1_score(y, (p >= t).astype(int), average="micro", zero_division=0))
    return "accuracy", _accuracy


def _key(v: float, digits: int | None = None) -> str:
    return f"{v:.{digits}f}" if digits is not None else f"{v:g}"
