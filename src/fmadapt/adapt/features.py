"""Frozen-feature extraction: batched, no autograd, cached on disk when the backbone is identifiable."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ..backbones.base import Backbone
from ..data.cache import FeatureCache
from ..data.examples import Examples
from ..data.loader import make_loader
from ..errors import ConfigError

RUNTIMES = ("auto", "onnx", "int8", "torch")


def extract_features(backbone: Backbone, ex: Examples, *, batch_size: int = 64,
                     cache: FeatureCache | None = None, num_workers: int | None = None,
                     progress: bool | None = None, desc: str = "features", runtime: str = "auto") -> np.ndarray:
    """(N, D) float32 features in the order of `ex.inputs`.

    runtime: "auto" runs the backbone in ONNX Runtime on CPU when its export passes the parity check
    (several times faster than eager PyTorch), else PyTorch; "torch" forces PyTorch; "int8" (text,
    opt-in) uses int8 weights: ~2x faster, embeddings at cosine ~0.99 to fp32."""
    # int8 features differ from fp32 ones: they must never be served for each other
    variant = "int8" if runtime == "int8" else ""
    key = cache.key(backbone.cfg, ex.inputs, ex.modality, variant) if cache else None
    hit = cache.get(key, len(ex)) if cache else None
    if hit is not None:
        return hit
    order = list(range(len(ex)))
    if ex.modality == "text":
        # Length-sorted batches pad far less; the original order is restored below.
        order.sort(key=lambda i: len(ex.inputs[i]))
    inputs = [ex.inputs[i] for i in order]
    loader = make_loader(backbone, inputs, ex.modality, train=False, batch_size=batch_size,
                         num_workers=num_workers)
    was_training = backbone.training
    backbone.eval()
    encode = _encoder(backbone, runtime)
    out = np.empty((len(ex), backbone.cfg.embed_dim), dtype=np.float32)
    pos = 0
    show = sys.stderr.isatty() if progress is None else progress
    it = _progress(loader, desc) if show else loader
    with torch.inference_mode():
        for batch in it:
            f = encode(batch)
            out[pos:pos + len(f)] = f
            pos += len(f)
    backbone.train(was_training)
    feats = np.empty_like(out)
    feats[order] = out
    if cache:
        cache.put(key, feats)
    return feats


def _encoder(backbone: Backbone, runtime: str):
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "torch" and backbone.device.type == "cpu":
        from ..runtime import int8_encoder, onnx_encoder

        enc = (int8_encoder(backbone) if runtime == "int8" else None) or onnx_encoder(backbone)
        if enc is not None:
            return enc
        if runtime == "onnx":
            raise ConfigError(f"ONNX Runtime cannot run {backbone.cfg.name} (see the warning above); "
                              "use runtime 'auto' or 'torch'")
    return lambda batch: backbone(_to(batch, backbone.device)).float().cpu().numpy()


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def _progress(it, desc):
    from rich.console import Console
    from rich.progress import track

    return track(it, description=desc, transient=True, console=Console(stderr=True))
