"""Fast inference for frozen backbones: ONNX Runtime, with PyTorch as the fallback."""

from .onnx import OnnxEncoder, export_onnx, int8_encoder, onnx_encoder, weights_fingerprint

__all__ = ["OnnxEncoder", "export_onnx", "int8_encoder", "onnx_encoder", "weights_fingerprint"]
