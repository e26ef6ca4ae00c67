"""Opt-in int8 encoders (`runtime="int8"`): the fp32 ONNX export of runtime/onnx.py quantized with ONNX Runtime
(texts: dynamic, per-channel weights; images: static QDQ, calibrated on the user's own images), each checked
against fp32 and dropped, with a warning, when too far from it."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..errors import ConfigError
from . import onnx as _onnx  # (its _SESSIONS looked up at call time: tests swap the dict per test)
from .onnx import OnnxEncoder, _load_cached, _np, _parity, onnx_encoder, weights_fingerprint

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
    if key in _onnx._SESSIONS:
        return _onnx._SESSIONS[key]
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
    _onnx._SESSIONS[key] = enc
    return enc


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
        if key in _onnx._SESSIONS:
            return _onnx._SESSIONS[key]
        qpath = base.with_name(f"{base.stem}-int8-{calibration_id(ranges)}.onnx")
        cached = _load_cached(qpath, "image", fp32.image_size)  # quantized from these very ranges, checked then
        if cached is not None:
            _onnx._SESSIONS[key] = cached
            return cached
    elif f"int8:{base.stem}:failed" in _onnx._SESSIONS:  # calibrated and checked once already: fp32 it is
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
                _onnx._SESSIONS[f"int8:{base.stem}:failed"] = None
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
    _onnx._SESSIONS[key] = enc
    return enc
