"""Export a backbone to ONNX once (cached per weights fingerprint), run it with ONNX Runtime.

Every export is checked against PyTorch on a probe batch (cosine >= 0.9999); a backbone that fails the
check or cannot be exported is run in PyTorch instead, with a warning, never with wrong numbers."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Callable
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


def _with_static_padding(backbone: Backbone, size: int) -> nn.Module:
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
    restore = _eager_attention(backbone)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if backbone.cfg.modality == "image":
                graph = _with_static_padding(backbone, size) if size else backbone
                axes = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(graph, (batch,), str(tmp), input_names=["pixel_values"],
                                  output_names=["features"], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"pixel_values": axes, "features": {0: "batch"}})
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


INT8_MIN_COSINE = 0.97
#: static int8 image encoders are checked on the calibration images themselves. Photos reach a mean cosine
#: of ~0.995 to fp32; upscaled 28 px grayscale Fashion-MNIST ~0.976 with every calibration method tried
#: (MinMax, entropy, percentile 99.999: 0.976-0.980); probe accuracy there 82.9 % vs 83.7 % in fp32, on
#: hymenoptera photos unchanged (benchmarks/images_fast.md)
INT8_IMAGE_MIN_MEAN_COSINE = 0.97
INT8_IMAGE_MIN_COSINE = 0.90
#: calibration images drawn (evenly spaced, so deterministic) from the data being encoded
CALIBRATION_IMAGES = 64


def int8_encoder(backbone: Backbone, cache_root: str | os.PathLike[str] | None = None,
                 calibration_pixels: Callable[[], Any] | None = None) -> OnnxEncoder | None:
    """Opt-in int8 encoder; None when unavailable or too far from fp32 (with a warning).

    Text: the fp32 export with dynamically quantized, per-channel int8 weights (~2x faster than fp32 on
    MiniLM here, embeddings at cosine ~0.99; benchmarks/int8.md), checked against PyTorch (cosine >= 0.97).

    Images: static QDQ quantization (int8 weights per channel, uint8 activations) of the fp32 export.
    Activation ranges come from calibration on the user's own images: `calibration_pixels()` gives up to
    64 preprocessed (N,3,H,W) images. The ranges are kept on the backbone as `int8_calibration` (JSON,
    saved with the model, tied to the exact fp32 graph) so that a reloaded model rebuilds the very same
    int8 graph instead of calibrating again. Checked on the calibration images against fp32 (mean cosine
    >= 0.97, min >= 0.90)."""
    if backbone.cfg.modality == "text":
        return _int8_text(backbone, cache_root)
    return _int8_image(backbone, cache_root, calibration_pixels)


def _int8_text(backbone: Backbone, cache_root: str | os.PathLike[str] | None) -> OnnxEncoder | None:
    fp32 = onnx_encoder(backbone, cache_root)
    if fp32 is None:
        return None
    key = "int8:" + weights_fingerprint(backbone)
    if key in _SESSIONS:
        return _SESSIONS[key]
    qpath = Path(fp32.path).with_name(Path(fp32.path).stem + "-int8.onnx")
    enc: OnnxEncoder | None = None
    try:
        enc = _load_cached(qpath, "text")
        if enc is None:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = qpath.with_name(f".{qpath.name}.tmp{os.getpid()}.onnx")
            quantize_dynamic(fp32.path, str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(tmp, qpath)
            enc = OnnxEncoder(qpath, "text")
        cos = _parity(backbone, enc)
        if cos < INT8_MIN_COSINE:
            warnings.warn(f"int8 {backbone.cfg.name} is too far from fp32 (cosine {cos:.4f}); using fp32",
                          stacklevel=3)
            qpath.unlink(missing_ok=True)
            enc = None
    except Exception as e:  # quantizer/runtime failure: fall back to fp32, never fail the run
        warnings.warn(f"int8 quantization of {backbone.cfg.name} failed ({type(e).__name__}: {e}); using fp32",
                      stacklevel=3)
        enc = None
    _SESSIONS[key] = enc
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


def calibration_id(calibration: dict) -> str:
    return hashlib.sha256(json.dumps(calibration, sort_keys=True).encode()).hexdigest()[:16]


def _int8_image(backbone: Backbone, cache_root: str | os.PathLike[str] | None,
                calibration_pixels: Callable[[], Any] | None) -> OnnxEncoder | None:
    fp32 = onnx_encoder(backbone, cache_root)
    if fp32 is None:
        return None
    base = Path(fp32.path)
    saved = getattr(backbone, "int8_calibration", None)
    if saved is not None and saved.get("graph") != base.stem:
        warnings.warn(f"the int8 calibration of {backbone.cfg.name} was made for other weights or another "
                      "image size or toolchain version; calibrating again on these images", stacklevel=3)
        saved = None
    if saved is not None:
        ranges = saved["ranges"]
        key = f"int8:{base.stem}:{calibration_id(ranges)}"
        if key in _SESSIONS:
            return _SESSIONS[key]
        qpath = base.with_name(f"{base.stem}-int8-{calibration_id(ranges)}.onnx")
        cached = _load_cached(qpath, "image", fp32.image_size)  # quantized from these very ranges, checked then
        if cached is not None:
            _SESSIONS[key] = cached
            return cached
    elif f"int8:{base.stem}:failed" in _SESSIONS:  # calibrated and checked once already: fp32 it is
        return None
    elif calibration_pixels is None:
        raise ConfigError("int8 for images needs calibration images: run it on your data first "
                          "(fit, embed or predict with runtime 'int8')")
    tmp_dir = base.with_name(f".q{os.getpid()}-{base.stem}")
    pre = base.with_name(base.stem + "-qpre.onnx")  # shape-inferred and optimised: the quantizer's input
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        tmp_dir.mkdir(parents=True, exist_ok=True)
        if not pre.is_file():
            quant_pre_process(str(base), str(tmp_dir / "pre.onnx"))
            os.replace(tmp_dir / "pre.onnx", pre)
        calib_file = tmp_dir / "calibration.json"
        reader, pixels = None, None
        if saved is None:
            pixels = _np(calibration_pixels(), np.float32)[:CALIBRATION_IMAGES]
            batches = [{"pixel_values": pixels[i:i + 16]} for i in range(0, len(pixels), 16)]

            class _Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.batches = iter(batches)

                def get_next(self) -> dict | None:
                    return next(self.batches, None)

            reader = _Reader()
        else:
            calib_file.write_text(json.dumps(saved["ranges"]))
        qtmp = tmp_dir / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(qtmp), reader, calibration_cache_path=str(calib_file),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        ranges = json.loads(calib_file.read_text())
        key = f"int8:{base.stem}:{calibration_id(ranges)}"
        enc: OnnxEncoder | None = OnnxEncoder(qtmp, "image", image_size=fp32.image_size)
        if pixels is not None:
            check = pixels[:16]
            a, b = enc(check), fp32(check)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            if cos.mean() < INT8_IMAGE_MIN_MEAN_COSINE or cos.min() < INT8_IMAGE_MIN_COSINE:
                warnings.warn(f"int8 {backbone.cfg.name} is too far from fp32 on your images (cosine mean "
                              f"{cos.mean():.4f}, min {cos.min():.4f}); using fp32", stacklevel=3)
                _SESSIONS[f"int8:{base.stem}:failed"] = None
                enc = None
        if enc is not None:
            qpath = base.with_name(f"{base.stem}-int8-{calibration_id(ranges)}.onnx")
            os.replace(qtmp, qpath)
            enc = OnnxEncoder(qpath, "image", image_size=fp32.image_size)
            backbone.int8_calibration = {"graph": base.stem, "ranges": ranges}
    except Exception as e:  # quantizer/runtime failure: fall back to fp32, never fail the run
        warnings.warn(f"int8 quantization of {backbone.cfg.name} failed ({type(e).__name__}: {e}); using fp32",
                      stacklevel=3)
        pre.unlink(missing_ok=True)  # derived from the fp32 graph: made again next time, in case it was damaged
        return None
    finally:
        import shutil

        shutil.rmtree(tmp_dir, ignore_errors=True)
    _SESSIONS[key] = enc
    return enc
