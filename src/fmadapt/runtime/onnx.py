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


class _DictGraph(nn.Module):
    """Positional inputs for the exporter, passed to the backbone as its dict batch under `names`."""

    def __init__(self, backbone: Backbone, names: tuple[str, ...]) -> None:
        super().__init__()
        self.backbone, self.names = backbone, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(dict(zip(self.names, inputs, strict=True)))


def _sample_batch(backbone: Backbone) -> Any:
    if backbone.cfg.modality == "image":
        torch.manual_seed(0)
        return torch.randn(2, 3, backbone.cfg.input_size, backbone.cfg.input_size)
    if backbone.cfg.modality == "audio":  # two clips of different lengths (1 s and 2.5 s of noise)
        g = torch.Generator().manual_seed(0)
        rate = int(backbone.cfg.extra.get("sample_rate", 16000))
        return backbone.collator()([0.1 * torch.randn(n, generator=g) for n in (rate, rate * 5 // 2)])
    return backbone.collator()(["a short probe sentence", "a second, somewhat longer probe sentence to pad"])


def static_size(backbone: Backbone) -> int | None:
    """The image size an export is fixed to, or None when one export serves every size.

    TensorFlow-style 'SAME' convolutions (timm's Conv2dSame, in every tf_* model and in the packaged
    EfficientNet-Lite0) compute their padding from the input size. Exported with dynamic height/width,
    that is a Shape/Ceil/Pad subgraph per strided conv which also blocks ORT's Pad+Conv fusion: 1.57x
    slower at 224 px here (120 vs 189 img/s, raw ORT; benchmarks/images_fast.md). Such backbones are exported
    per image size with the pads as constants (identical outputs); all others keep dynamic height and width."""
    if backbone.cfg.modality != "image":
        return None
    from timm.layers import Conv2dSame

    if any(isinstance(m, Conv2dSame) for m in backbone.modules()):
        return int(backbone.cfg.input_size)
    return None


def with_static_padding(backbone: Backbone, size: int) -> nn.Module:
    """A copy of `backbone` whose Conv2dSame layers pad by constants computed for `size`-px inputs."""
    import copy

    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same_arg

    model = copy.deepcopy(backbone).eval()
    shapes: dict[str, list[int]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: shapes.__setitem__(n, list(a[0].shape[-2:])))
             for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, m in list(model.named_modules()):
        if not isinstance(m, Conv2dSame):
            continue
        conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, 0, m.dilation, m.groups,
                         m.bias is not None)
        conv.load_state_dict(m.state_dict())
        pad = pad_same_arg(shapes[name], m.kernel_size, m.stride, m.dilation)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Sequential(nn.ZeroPad2d(pad), conv))
    return model


def export_onnx(backbone: Backbone, path: str | os.PathLike[str]) -> None:
    """Write `path` with dynamic batch and sequence length axes, and dynamic image size unless
    `static_size(backbone)` fixes it."""
    backbone = backbone.eval()
    batch = _sample_batch(backbone)
    size = static_size(backbone)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    restore = eager_attention(backbone)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if backbone.cfg.modality == "image":
                graph = with_static_padding(backbone, size) if size else backbone
                axes = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(graph, (batch,), str(tmp), input_names=["pixel_values"],
                                  output_names=["features"], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"pixel_values": axes, "features": {0: "batch"}})
            elif backbone.cfg.modality == "audio":
                torch.onnx.export(_DictGraph(backbone, ("waveform", "lengths")), (batch["waveform"], batch["lengths"]),
                                  str(tmp),
                                  input_names=["waveform", "lengths"], output_names=["features"],
                                  opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                                                "features": {0: "batch"}})
            else:
                seq = {0: "batch", 1: "sequence"}
                torch.onnx.export(_DictGraph(backbone, ("input_ids", "attention_mask")),
                                  (batch["input_ids"], batch["attention_mask"]), str(tmp),
                                  input_names=["input_ids", "attention_mask"], output_names=["features"],
                                  opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"input_ids": seq, "attention_mask": seq, "features": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        restore()
        tmp.unlink(missing_ok=True)


def eager_attention(backbone: Backbone) -> Any:
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

    def __init__(self, path: str | os.PathLike[str], modality: str, threads: int | None = None,
                 image_size: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = str(path)
        self.modality = modality
        #: set when the graph was exported for one image size only (see `static_size`)
        self.image_size = image_size
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])

    def __call__(self, batch: Any) -> np.ndarray:
        if self.modality == "image":
            pixels = _np(batch, np.float32)
            if self.image_size and tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(f"{Path(self.path).name} was exported for {self.image_size}px images, got "
                                 f"{pixels.shape[-2]}x{pixels.shape[-1]}; get an encoder for this size")
            feeds = {"pixel_values": pixels}
        elif self.modality == "audio":
            feeds = {"waveform": _np(batch["waveform"], np.float32), "lengths": _np(batch["lengths"], np.int64)}
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
    size = static_size(backbone)
    fp = weights_fingerprint(backbone) + (f"-{size}px" if size else "")
    if fp in _SESSIONS:
        return _SESSIONS[fp]
    root = Path(cache_root) if cache_root else default_cache_dir() / "onnx"
    path = root / f"{backbone.cfg.name.replace('/', '_').replace(':', '_')}-{fp}.onnx"
    enc: OnnxEncoder | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        enc = _load_cached(path, backbone.cfg.modality, size, again="exporting again")
        if enc is None:
            export_onnx(backbone, path)
            enc = OnnxEncoder(path, backbone.cfg.modality, image_size=size)
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


def _load_cached(path: Path, modality: str, image_size: int | None = None, again: str = "quantizing again"
                 ) -> OnnxEncoder | None:
    """A cached graph, or None when there is none or it cannot be loaded (a damaged or truncated file, from a
    full disk or a copied cache): that one is deleted with a warning, so that it is made again now instead of
    failing, or falling back to a slower path, on every run."""
    if not path.is_file():
        return None
    try:
        return OnnxEncoder(path, modality, image_size=image_size)
    except Exception as e:
        warnings.warn(f"{path}: cached ONNX graph unreadable ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                      f"{again}", stacklevel=4)
        path.unlink(missing_ok=True)
        return None
