"""`fmadapt export --int8`: the exported fp32 graph quantized with ONNX Runtime — texts' weights dynamically
(per channel), images and sounds statically (QDQ, uint8 activations calibrated on the parity images or clips; for
sounds the encoder's convolutions only) — and kept only within a stated tolerance of fp32 on the parity inputs:
with their labels, an accuracy at most 1 point (or 2 inputs) below fp32's; without, the same prediction on at
least 98 % of them. Texts try up to four graphs, fastest first: every matrix product in int8 with activations
quantized per tensor; the same with the feed-forward blocks in fp32 (their activations carry the outliers a
per-tensor scale handles worst); 8-bit weights in blocks of 128, then 32, with activations quantized per block
(MatMulNBits). On an SST-2 probe (dev, 872 sentences) those scored -2.2, -0.9, -0.5 and 0.0 points against fp32 at
2.5x, 1.7x, 1.4x and 1.1x its speed (2 cores)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from . import exported as runtime
from .export import agreement, compare

INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP = 0.01
INT8_MIN_ERRORS_ALLOWED = 2
#: regression: the int8 graph's mean absolute difference to fp32, at most this share of the fp32 predictions' spread
INT8_MAX_REGRESSION_SHIFT = 0.05
CALIBRATION_IMAGES = 64
#: transformers' feed-forward projections (BERT-style names): left in fp32 by the second text candidate
_FFN = re.compile(r"/(intermediate|output)/dense/MatMul$")


def quantize(fp32: Path, dest: Path, calibration: list[dict[str, np.ndarray]] | None,
             exclude: list[str] | None = None, block: int = 0) -> None:
    """int8 graph: without `calibration` (texts), weights quantized dynamically (per channel), or with `block`, in
    blocks of that many weights (ONNX Runtime's MatMulNBits, 8 bits, int8 products with activations quantized per
    block); with it (images, sounds: batches of graph inputs), statically (QDQ, per-channel weights, uint8
    activations calibrated on those inputs). `exclude`: nodes left in fp32."""
    import logging
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # (the quantizer advises pre-processing on the root logger, every time)
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if calibration is None:
                if block:
                    _blockwise(fp32, dest, block)
                else:
                    quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                                     nodes_to_exclude=exclude or [])
                return
            _static(fp32, dest, calibration, exclude or [])
    finally:
        root.setLevel(level)


def _static(fp32: Path, dest: Path, calibration: list[dict[str, np.ndarray]], exclude: list[str]) -> None:
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(calibration)

    class _Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(batches, None)

    fp32, dest = fp32.resolve(), dest.resolve()
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        cwd = os.getcwd()
        os.chdir(tmp)  # (where shape inference fails, ONNX Runtime leaves a copy of the graph in the working directory)
        try:
            quant_pre_process(str(fp32), str(pre))
        except Exception:  # (it fails on the sound graphs' symbolic lengths: optional, skipped)
            pre = fp32
        finally:
            os.chdir(cwd)
        # the backbones only: the heads, the ensemble's average and the temperature (in float64: ONNX Runtime's
        # quantizer cannot follow float64 tensors) stay as they are. (Convolutions alone: hymenoptera accuracy -2.0
        # points, against -1.3)
        quantize_static(str(pre), str(dest), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)


def _blockwise(fp32: Path, dest: Path, block: int) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8)
    q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=block, is_symmetric=True, accuracy_level=4,
                             algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(dest), False)


def check_int8(tmp: Path, ex: Any, task: str, fp32_out: np.ndarray, y: np.ndarray | None = None) -> dict[str, Any]:
    """Quantize the fp32 graph staged in `tmp` beside it (model.int8.onnx) and compare the two on the parity
    inputs `ex` (fp32's outputs: `fp32_out`; `y`: their class indices, when known): the first candidate within
    tolerance is kept and its comparison returned for export.json; an ExportError when none is."""
    meta = json.loads((tmp / "export.json").read_text(encoding="utf-8"))
    meta["graphs"]["int8"] = "model.int8.onnx"
    calibration = None
    import onnx

    nodes = [n.name for n in onnx.load(str(tmp / "model.onnx"), load_external_data=False).graph.node]
    step = max(1, len(ex) // CALIBRATION_IMAGES)
    if ex.modality == "image":
        m32 = runtime.ExportedModel(tmp, "fp32")
        pixels = np.stack([m32.image_array(p) for p in list(ex.inputs)[::step][:CALIBRATION_IMAGES]])
        calibration = [{"images": pixels[i:i + 16]} for i in range(0, len(pixels), 16)]
        candidates = [("backbones static QDQ, calibrated on the parity images",
                       [n for n in nodes if "/backbone/" not in n], 0)]
    elif ex.modality == "audio":  # the encoder's convolutions only: the log-mel frontend and the heads stay fp32
        m32 = runtime.ExportedModel(tmp, "fp32")
        clips = list(ex.inputs)[::step][:CALIBRATION_IMAGES]
        feeds = [m32.sound_feeds(clips[i:i + 8]) for i in range(0, len(clips), 8)]
        outside = [n for n in nodes if "/backbone/stages" not in n]
        # (static only: dynamic ConvInteger ran 3x slower than fp32 on speech_keywords, static QDQ 1.1-1.4x faster)
        candidates = [("the encoder's convolutions static QDQ, calibrated on the parity clips", outside, 0)]
    else:  # fastest first (MiniLM, SST-2: 2.5x, 1.7x, 1.4x, 1.1x fp32's speed)
        ffn = [n for n in nodes if _FFN.search(n) and "attention" not in n]
        candidates = [("every matrix product, dynamic", [], 0)]
        candidates += [("dynamic, feed-forward blocks in fp32", ffn, 0)] if ffn else []
        candidates += [("8-bit weights in blocks of 128", [], 128), ("8-bit weights in blocks of 32", [], 32)]
    tried = []
    for name, exclude, block in candidates:
        if ex.modality == "audio":
            calibration = feeds
        try:
            quantize(tmp / "model.onnx", tmp / "model.int8.onnx", calibration, exclude, block)
        except ImportError as e:  # (the block-wise quantizer needs onnx-ir, which older installs lack)
            tried.append(f"{name}: unavailable ({e})")
            continue
        except Exception as e:
            raise ExportError(f"int8 quantization failed ({type(e).__name__}: {e}); export without --int8") from e
        (tmp / "export.json").write_text(json.dumps(meta), encoding="utf-8")
        got = runtime.ExportedModel(tmp, "int8").predict_proba(list(ex.inputs), table=ex.table)
        c = {"quantized": name, **compare(fp32_out, got, task), "against": "the fp32 export"}
        why = _too_far(c, fp32_out, got, task, y)
        if why is None:
            return c
        tried.append(f"{name}: {why}")
    (tmp / "model.int8.onnx").unlink(missing_ok=True)
    raise ExportError("no int8 graph is within tolerance of fp32 on the parity inputs (" + "; ".join(tried)
                      + "): refused, nothing written; export without --int8")


def _too_far(c: dict[str, Any], fp32: np.ndarray, got: np.ndarray, task: str, y: np.ndarray | None) -> str | None:
    """Why the int8 outputs `got` are beyond tolerance of fp32's, or None (c gains the accuracies)."""
    if task == "regression":
        spread = float(np.std(fp32)) if len(fp32) else 0.0
        if c["mean_abs_diff"] > INT8_MAX_REGRESSION_SHIFT * max(spread, 1e-12):
            return (f"predictions move by {c['mean_abs_diff']:.4g} on average, over {INT8_MAX_REGRESSION_SHIFT:.0%} "
                    f"of their spread {spread:.4g}")
        return None
    if y is not None and len(y):
        c["accuracy_fp32"] = float((fp32.argmax(1) == y).mean())
        c["accuracy_int8"] = float((got.argmax(1) == y).mean())
        # at most 1 point lower, or 2 inputs where 1 point is fewer (153 images: 1 point is 1.5 of them)
        allowed = max(INT8_MAX_ACCURACY_DROP, INT8_MIN_ERRORS_ALLOWED / len(y))
        if c["accuracy_fp32"] - c["accuracy_int8"] > allowed + 1e-9:
            return (f"accuracy {c['accuracy_int8']:.1%} against fp32's {c['accuracy_fp32']:.1%} on {len(y)} labeled "
                    f"inputs, more than {allowed:.1%} lower")
        return None
    if agreement(c) < INT8_MIN_AGREEMENT:
        return (f"the same prediction as fp32 on only {agreement(c):.1%} of {c['inputs']} inputs (at least "
                f"{INT8_MIN_AGREEMENT:.0%} without labels; largest probability difference {c['max_abs_diff']:.3f})")
    return None
