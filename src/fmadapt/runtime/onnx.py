"""Export a backbone to ONNX once (cached per weights fingerprint), run it with ONNX Runtime.

Every export is checked against PyTorch on a probe batch (cosine >= 0.9999); a backbone that fails the
check or cannot be exported is run in PyTorch instead, with a warning, never with wrong numbers."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..backbones.base import Backbone
from ..data.cache import default_cache_dir
from ..errors import ConfigError

PARITY_MIN_COSINE = 0.9999
_PREPROCESSING_FIELDS = ("input_size", "mean", "std", "interpolation", "crop_pct", "license", "source")
OPSET = 17
_SESSIONS: dict[str, OnnxEncoder | None] = {}
#: per live backbone object (weak keys: a collected backbone's entry cannot be mistaken for a new one)
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_fingerprint(backbone: Backbone) -> str:
    """Identity of what the exported graph computes: the architecture config, a hash of the weight tensors,
    and the export toolchain versions."""
    # Hashing MiniLM's 90 MB costs ~0.2 s a call; tensors' in-place version counters tell whether anything
    # changed since the last hash of this very backbone object.
    stamp = tuple((t.data_ptr(), t._version) for t in backbone.state_dict().values())
    cfg = json.dumps(backbone.cfg.to_dict(), sort_keys=True)
    memo = _FINGERPRINTS.get(backbone)
    if memo is not None and memo[0] == stamp and memo[2] == cfg:
        return memo[1]
    fp = _hash_weights(backbone)
    _FINGERPRINTS[backbone] = (stamp, fp, cfg)
    return fp


def _hash_weights(backbone: Backbone) -> str:
    h = hashlib.sha256()
    cfg = backbone.cfg.to_dict()
    # preprocessing does not change the graph (image height/width are dynamic axes): one export serves all
    graph_cfg = {k: v for k, v in cfg.items() if k not in _PREPROCESSING_FIELDS}
    h.update(json.dumps(graph_cfg, sort_keys=True).encode())
    # Always the tensors themselves, never a checksum from the config: a fine-tuned packaged backbone still
    # carries its config, and must not be served by the export of the original weights (~0.1 s for MiniLM).
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(f"{__version__}|{torch.__version__}|{OPSET}".encode())
    return h.hexdigest()[:32]


class _TextGraph(nn.Module):
    """Positional inputs for the exporter (the backbone takes a dict)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone({"input_ids": input_ids, "attention_mask": attention_mask})


def _sample_batch(backbone: Backbone) -> Any:
    if backbone.cfg.modality == "image":
        torch.manual_seed(0)
        return torch.randn(2, 3, backbone.cfg.input_size, backbone.cfg.input_size)
    return backbone.collator()(["a short probe sentence", "a second, somewhat longer probe sentence to pad"])


def export_onnx(backbone: Backbone, path: str | os.PathLike[str]) -> None:
    """Write `path` with dynamic batch (and image size / sequence length) axes."""
    backbone = backbone.eval()
    batch = _sample_batch(backbone)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    restore = _eager_attention(backbone)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if backbone.cfg.modality == "image":
                torch.onnx.export(backbone, (batch,), str(tmp), input_names=["pixel_values"],
                                  output_names=["features"], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                                                "features": {0: "batch"}})
            else:
                seq = {0: "batch", 1: "sequence"}
                torch.onnx.export(_TextGraph(backbone), (batch["input_ids"], batch["attention_mask"]), str(tmp),
                                  input_names=["input_ids", "attention_mask"], output_names=["features"],
                                  opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"input_ids": seq, "attention_mask": seq, "features": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        restore()
        tmp.unlink(missing_ok=True)


def _eager_attention(backbone: Backbone) -> Any:
    """Transformers' SDPA path bakes the probe batch's mask shape into a traced graph; the eager attention
    exports with truly dynamic shapes. Switched for the export only."""
    model = getattr(backbone, "model", None)
    setter = getattr(model, "set_attn_implementation", None)
    if backbone.cfg.modality != "text" or setter is None:
        return lambda: None
    before = getattr(model.config, "_attn_implementation", None) or "sdpa"
    setter("eager")
    return lambda: setter(before)


class OnnxEncoder:
    """Runs an exported backbone: a collated batch (tensor or dict of tensors) -> (B, D) float32."""

    def __init__(self, path: str | os.PathLike[str], modality: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = str(path)
        self.modality = modality
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])

    def __call__(self, batch: Any) -> np.ndarray:
        if self.modality == "image":
            feeds = {"pixel_values": _np(batch, np.float32)}
        else:
            feeds = {"input_ids": _np(batch["input_ids"], np.int64),
                     "attention_mask": _np(batch["attention_mask"], np.int64)}
        return self.session.run(["features"], feeds)[0]


def _np(t: Any, dtype: Any) -> np.ndarray:
    a = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return np.ascontiguousarray(a, dtype=dtype)


def _parity(backbone: Backbone, enc: OnnxEncoder) -> float:
    batch = _sample_batch(backbone)
    with torch.no_grad():
        ref = backbone.eval()(batch).float().numpy()
    out = enc(batch)
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-12)
    return float(cos.min())


def onnx_encoder(backbone: Backbone, cache_root: str | os.PathLike[str] | None = None) -> OnnxEncoder | None:
    """An ONNX Runtime encoder for this backbone's current weights, exported and parity-checked on first
    use and cached on disk; None (use PyTorch) when onnxruntime is missing or export/parity fails."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    fp = weights_fingerprint(backbone)
    if fp in _SESSIONS:
        return _SESSIONS[fp]
    root = Path(cache_root) if cache_root else default_cache_dir() / "onnx"
    path = root / f"{backbone.cfg.name.replace('/', '_').replace(':', '_')}-{fp}.onnx"
    enc: OnnxEncoder | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            export_onnx(backbone, path)
        enc = OnnxEncoder(path, backbone.cfg.modality)
        cos = _parity(backbone, enc)
        if cos < PARITY_MIN_COSINE:
            warnings.warn(f"ONNX export of {backbone.cfg.name} disagrees with PyTorch (cosine {cos:.6f}); "
                          "using PyTorch", stacklevel=2)
            path.unlink(missing_ok=True)
            enc = None
    except Exception as e:  # any exporter/runtime failure: fall back, never fail the run
        warnings.warn(f"ONNX Runtime unavailable for {backbone.cfg.name} ({type(e).__name__}: {e}); "
                      "using PyTorch", stacklevel=2)
        path.unlink(missing_ok=True)
        enc = None
    _SESSIONS[fp] = enc
    return enc


INT8_MIN_COSINE = 0.97


def int8_encoder(backbone: Backbone, cache_root: str | os.PathLike[str] | None = None) -> OnnxEncoder | None:
    """Opt-in int8 text encoder: the fp32 export with dynamically quantized, per-channel int8 weights
    (~2x faster than fp32 on MiniLM here, embeddings at cosine ~0.99 to fp32; benchmarks/int8.md).
    Checked against PyTorch at a lower bar (cosine >= 0.97); None when unavailable or below it."""
    if backbone.cfg.modality != "text":
        raise ConfigError("runtime 'int8' is offered for text backbones only (dynamic quantization does not "
                          "speed up convolutions); use 'auto' for images")
    fp32 = onnx_encoder(backbone, cache_root)
    if fp32 is None:
        return None
    key = "int8:" + weights_fingerprint(backbone)
    if key in _SESSIONS:
        return _SESSIONS[key]
    qpath = Path(fp32.path).with_name(Path(fp32.path).stem + "-int8.onnx")
    enc: OnnxEncoder | None = None
    try:
        if not qpath.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = qpath.with_name(f".{qpath.name}.tmp{os.getpid()}.onnx")
            quantize_dynamic(fp32.path, str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(tmp, qpath)
        enc = OnnxEncoder(qpath, "text")
        cos = _parity(backbone, enc)
        if cos < INT8_MIN_COSINE:
            warnings.warn(f"int8 {backbone.cfg.name} is too far from fp32 (cosine {cos:.4f}); using fp32",
                          stacklevel=2)
            qpath.unlink(missing_ok=True)
            enc = None
    except Exception as e:  # quantizer/runtime failure: fall back to fp32, never fail the run
        warnings.warn(f"int8 quantization of {backbone.cfg.name} failed ({type(e).__name__}: {e}); using fp32",
                      stacklevel=2)
        enc = None
    _SESSIONS[key] = enc
    return enc
