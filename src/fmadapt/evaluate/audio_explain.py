"""Explanations for sounds: which moments of a clip the prediction rests on. Integrated Gradients (captum) on the
waveform against silence, or plain gradient saliency; the attributions' magnitudes are summed over 20 ms steps
(the clip's own samples, not the silence the backbone pads it with) and drawn under the waveform."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch

STEP_SECONDS = 0.02  #: one value of the attribution curve per this many seconds
INTERNAL_BATCH = 16


def attribute_waveform(model: Any, batch: dict[str, torch.Tensor], target: int, method: str,
                       n_steps: int) -> tuple[np.ndarray, float | None]:
    """Per-sample attribution (S,) of logit `target` for one collated clip (`batch`: (1, S) waveform and its
    length), and IG's |convergence delta| (None for saliency)."""
    lengths = batch["lengths"]

    def fwd(wave: torch.Tensor) -> torch.Tensor:
        return model({"waveform": wave, "lengths": lengths.expand(len(wave))})

    wave = batch["waveform"].clone().requires_grad_(True)
    if method == "saliency":
        from captum.attr import Saliency

        return Saliency(fwd).attribute(wave, target=target, abs=True)[0].detach().numpy(), None
    from captum.attr import IntegratedGradients

    attr, delta = IntegratedGradients(fwd).attribute(wave, baselines=torch.zeros_like(wave), target=target,
                                                     n_steps=n_steps, internal_batch_size=INTERNAL_BATCH,
                                                     return_convergence_delta=True)
    return attr[0].detach().numpy(), float(delta.abs().max())


def explain_audio(model: Any, path: str, target: int, method: str, n_steps: int) -> dict[str, Any]:
    """The explanation item's fields for one sound file: `heatmap` (one row: the attribution per 20 ms step,
    scaled to 0..1), `image_png` (waveform and attribution curve), `delta`, `seconds_per_step`."""
    bb = model.backbone
    rate = int(bb.cfg.extra.get("sample_rate", 16000))
    x = bb.preprocessor(train=False)(path)  # the clip, with the silence padding the backbone reads
    pad = int(round(float(bb.cfg.extra.get("context_seconds", 0.0)) * rate))
    batch = bb.collator()([x])
    was = model.training
    model.eval()
    try:
        attr, delta = attribute_waveform(model, batch, target, method, n_steps)
    finally:
        model.train(was)
    from ..data.audio import load_audio

    clip = load_audio(path, rate)
    attr = np.abs(attr[pad:pad + len(clip)])
    step = max(1, int(STEP_SECONDS * rate))
    curve = np.add.reduceat(attr, np.arange(0, len(attr), step)) if len(attr) else np.zeros(1)
    curve = curve / curve.max() if curve.max() > 0 else curve
    return {"heatmap": [[round(float(v), 3) for v in curve]], "image_png": _plot(clip, curve, rate, step),
            "delta": delta, "seconds_per_step": step / rate}


def _plot(clip: np.ndarray, curve: np.ndarray, rate: int, step: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 1.6), dpi=100)
    ax = fig.subplots()
    t = np.arange(len(clip)) / rate
    ax.plot(t, clip, color="0.6", lw=0.5)
    ax.set(xlabel="seconds", yticks=[], xlim=(0, max(t[-1] if len(t) else 0, 1e-3)))
    twin = ax.twinx()
    twin.fill_between((np.arange(len(curve)) + 0.5) * step / rate, curve, color="C3", alpha=0.45, step="mid")
    twin.set(ylim=(0, 1.05), yticks=[])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")
