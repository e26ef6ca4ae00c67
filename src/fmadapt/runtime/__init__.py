"""Fast inference for frozen backbones: ONNX Runtime, with PyTorch as the fallback.

The names below import torch (runtime/onnx.py, runtime/int8.py); they load on first use (PEP 562), so that
`runtime.light`, the torch-free inference of `fmadapt embed` / `predict` from a cached graph, does not pull
torch in."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = ("OnnxEncoder", "export_onnx", "int8_encoder", "onnx_encoder", "weights_fingerprint")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".int8" if name == "int8_encoder" else ".onnx", __name__), name)
    globals()[name] = value
    return value


__all__ = ["OnnxEncoder", "export_onnx", "int8_encoder", "onnx_encoder", "weights_fingerprint"]
