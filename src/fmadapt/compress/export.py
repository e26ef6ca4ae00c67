"""`fmadapt export MODEL --out DIR`: the whole fitted model as one ONNX graph and a small JSON, predicting with
onnxruntime + numpy (+ tokenizers or Pillow) alone, checked against the model before anything is written.

The graph takes what a tokenizer or an image decoder gives — `input_ids` + `attention_mask` (int64, (B, T)), or
`images` (uint8, (B, S, S, 3), resized and centre-cropped) — and returns the model's calibrated probabilities
(`probabilities`, (B, C)) or, for regression, its numbers (`value`, (B, 1)): every member's backbone and head, the
ensemble's average, test-time flips, the temperature, and for images the scaling and normalisation are inside.
`compress/exported.py` (copied into the directory as predict.py) does the rest and `fmadapt export` checks it end
to end: on the parity inputs the exported directory must predict the same class as the model for every input,
with probabilities within 1e-4 (fp32); an int8 graph (quantize.py) must agree with fp32 on >= 98 % of them or is
refused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import ConfigError, ExportError
from . import exported as runtime
from .export_files import agreement, readme, server_files

FP32_MAX_ABS_DIFF = 1e-4
PARITY_INPUTS = 1000
OPSET = 17
SAMPLE_TEXTS = [  # the parity inputs of a text model exported without --data: short, long, empty-ish, Chinese, mixed
    "great", "a quiet, unhurried film that earns every minute of its running time",
    "The service was slow and the food arrived cold; we will not be back.", "ok", "!!!", "1234 5678",
    "这部电影非常好看，演员的表演很自然。", "物流太慢了，包装也破了", "股市今日小幅上涨", "Mixed 中文 and English text",
    "terrible terrible terrible " * 20, "The quick brown fox jumps over the lazy dog. " * 40,
    "I expected more from the sequel, but the ending surprised me.", "Not bad at all.", "worst purchase ever",
    "Shipping was fast, the fit is perfect and the colour matches the photos.", "meh", "¿Dónde está la biblioteca?",
    "Prices rose 3.2% in the third quarter, the ministry said on Tuesday.", "love it", "\t spaced \n out \t",
    "Das ist ein Satz auf Deutsch.", "🙂🙂 great 🙂", "N/A",
]


class WholeModel(nn.Module):
    """The fitted model's prediction as one module: raw graph inputs -> (B, C) probabilities or (B, 1) numbers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.modality = model.modality
        self.task = model.config_.task
        self.nets = nn.ModuleList([m.model.eval() for m in model.members_])
        self.flips = [bool(m.config.tta and model.modality == "image") for m in model.members_]
        self.temperature = float(model.temperature_)
        mean, std = model.target_scale_ or (0.0, 1.0)
        self.target = (float(mean), float(std))
        cfg = model.members_[0].model.backbone.cfg
        if self.modality == "image":
            self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.modality == "image":  # (B, S, S, 3) uint8 -> (B, 3, S, S), as ToDtype(scale) + Normalize
            x: Any = (inputs[0].permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        elif self.modality == "audio":  # (B, S) float32 samples (padded as the backbone pads them), (B,) lengths
            x = {"waveform": inputs[0], "lengths": inputs[1]}
        else:
            x = {"input_ids": inputs[0], "attention_mask": inputs[1]}
        members = []
        for net, flip in zip(self.nets, self.flips, strict=True):
            views = [self._one(net, v) for v in ([x, torch.flip(x, dims=[-1])] if flip else [x])]
            members.append(views[0] if len(views) == 1 else (views[0] + views[1]) / 2)
        p = members[0] if len(members) == 1 else torch.stack(members).mean(0)
        if self.temperature != 1.0 and self.task == "classification":  # evaluate.calibration.apply_temperature
            p = torch.softmax(torch.log(p.double().clamp(1e-12, 1.0)) / self.temperature, dim=1).float()
        return p

    def _one(self, net: Any, x: Any) -> torch.Tensor:
        logits = net.forward_features(net.backbone(x))
        if self.task == "regression":
            return (logits.double() * self.target[1] + self.target[0]).float()
        return torch.sigmoid(logits.float()) if self.task == "multilabel" else torch.softmax(logits.float(), dim=1)


def refusal(model: Any) -> str | None:
    """Why `model` cannot be exported as one graph yet, or None."""
    if model.ngram_ is not None:
        return ("it blends in auto's n-gram TF-IDF model, which has no ONNX graph here; fit with another strategy "
                "(or `--set ngram=off`) to export it")
    if model.table_encoder_ is not None:
        return "it reads table columns beside the text (`features`); exporting their encoding is not supported yet"
    if model.modality not in ("text", "image", "audio"):
        return f"{model.modality} models are not exported yet"
    bbs = [m.model.backbone for m in model.members_]
    if model.modality == "audio":
        if len({(b.cfg.extra.get("sample_rate"), b.cfg.extra.get("context_seconds")) for b in bbs}) > 1:
            return "its ensemble members read sounds differently; export one member's directory"
    elif model.modality == "text":
        toks = {(b.tokenizer.backend_tokenizer.to_str(), int(b.cfg.max_tokens)) for b in bbs}
        if len(toks) > 1:
            return "its ensemble members tokenize differently (several backbones); export one member's directory"
    elif len({(b.cfg.input_size, b.cfg.crop_pct, b.cfg.interpolation, tuple(b.cfg.mean), tuple(b.cfg.std))
              for b in bbs}) > 1:
        return "its ensemble members preprocess images differently; export one member's directory"
    return None


def _tokenizer_json(backbone: Any) -> str:
    """The backbone's tokenizer as tokenizers saves it, set to truncate and pad as its collator does."""
    from tokenizers import Tokenizer

    tok = backbone.tokenizer
    t = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    t.enable_truncation(max_length=int(backbone.cfg.max_tokens), stride=0, strategy="longest_first",
                        direction=str(getattr(tok, "truncation_side", "right")))
    t.enable_padding(direction=str(tok.padding_side), pad_id=int(tok.pad_token_id or 0),
                     pad_type_id=int(getattr(tok, "pad_token_type_id", 0) or 0), pad_token=str(tok.pad_token))
    return t.to_str()


def _export_graph(whole: WholeModel, model: Any, path: Path) -> None:
    import warnings

    from ..runtime.onnx import eager_attention, static_size, with_static_padding

    first = model.members_[0].model.backbone
    restores = []
    try:
        nets: list[Any] = list(whole.nets)
        for net in nets:
            restores.append(eager_attention(net.backbone))
            size = static_size(net.backbone)  # TF 'SAME' padding: constant pads for the one input size
            if size:
                net.backbone = with_static_padding(net.backbone, size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = "value" if whole.task == "regression" else "probabilities"
            if model.modality == "image":
                s = int(first.cfg.input_size)
                torch.onnx.export(whole, (torch.zeros(2, s, s, 3, dtype=torch.uint8),), str(path),
                                  input_names=["images"], output_names=[out], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"images": {0: "batch"}, out: {0: "batch"}})
            elif model.modality == "audio":
                g = torch.Generator().manual_seed(0)
                rate = int(first.cfg.extra.get("sample_rate", 16000))
                b = first.collator()([first.preprocessor()((0.1 * torch.randn(n, generator=g)).numpy())
                                      for n in (rate, rate * 5 // 2)])
                torch.onnx.export(whole, (b["waveform"], b["lengths"]), str(path),
                                  input_names=["waveform", "lengths"], output_names=[out], opset_version=OPSET,
                                  dynamo=False, dynamic_axes={"waveform": {0: "batch", 1: "samples"},
                                                              "lengths": {0: "batch"}, out: {0: "batch"}})
            else:
                b = first.collator()(["a short probe sentence", "a second, somewhat longer probe sentence to pad"])
                seq = {0: "batch", 1: "sequence"}
                torch.onnx.export(whole, (b["input_ids"], b["attention_mask"]), str(path),
                                  input_names=["input_ids", "attention_mask"], output_names=[out],
                                  opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"input_ids": seq, "attention_mask": seq, out: {0: "batch"}})
    finally:
        for restore in restores:
            restore()


def _parity_inputs(model: Any, model_dir: Path, data: Any) -> tuple[Any, str]:
    """The examples the export is checked on, with their labels where known (then int8 is judged by accuracy),
    and what they are (for export.json)."""
    from ..data.examples import Examples
    from ..errors import FmadaptError

    ex: Any = None
    if isinstance(data, Examples):  # (loaded already, e.g. by `fmadapt compress`: its held-out split)
        ex, what = data, f"{len(data)} given inputs"
    elif data is not None:
        try:
            ex = model.read_labeled(data)
        except FmadaptError:  # (no label column, or labels the model does not know: the inputs alone)
            ex = model.read_inputs(data)
        what = f"{len(ex)} inputs of {data if isinstance(data, (str, os.PathLike)) else 'the data given'}" + (
            f" ({len(ex.skipped)} unreadable, left out)" if ex.skipped else "")
    elif model.modality in ("image", "audio"):
        what = ""
        for split in ("val", "test", "train"):
            f = model_dir / "manifests" / f"{split}.csv"
            if f.is_file():
                import pandas as pd

                listed = pd.read_csv(f, dtype=str, keep_default_na=False)
                paths = [p for p in listed["id"] if Path(p).is_file()]
                if paths:
                    kind = "clips" if model.modality == "audio" else "images"
                    ex, what = model.read_inputs(paths), f"the {split} {kind} listed in manifests/{split}.csv"
                    label = dict(zip(listed["id"], listed.get("label", listed["id"]), strict=True))
                    ex.labels = [label[i] for i in ex.ids] if "label" in listed and model.config_.task == \
                        "classification" and all(label.get(i) in model.classes_ for i in ex.ids) else None
                    break
        if ex is None:
            raise ExportError(f"{model_dir}: its manifests list no image or sound file that is still there to check "
                              "the export on: give some with --data FOLDER")
    else:
        ex, what = model.read_inputs(list(SAMPLE_TEXTS)), "built-in sample texts (give --data for your own)"
    if len(ex) == 0:
        raise ExportError(f"no readable input to check the export on ({what})")
    if len(ex) > PARITY_INPUTS:  # evenly spaced: deterministic, and across the whole file
        ex = ex.subset(sorted({int(i) for i in np.linspace(0, len(ex) - 1, PARITY_INPUTS)}))
        what += f", {PARITY_INPUTS} of them evenly spaced"
    return ex, what


def compare(ref: np.ndarray, got: np.ndarray, task: str) -> dict[str, Any]:
    d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    out: dict[str, Any] = {"inputs": len(ref), "max_abs_diff": float(d.max()) if d.size else 0.0,
                           "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    if task == "classification":
        out["same_class"] = float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0
    elif task == "multilabel":
        out["same_labels_at_0.5"] = float(((ref >= 0.5) == (got >= 0.5)).all(1).mean()) if len(ref) else 1.0
    return out


def _preprocessing(backbone: Any) -> dict[str, Any]:
    cfg = backbone.cfg
    return {"input_size": int(cfg.input_size), "resize": int(round(cfg.input_size / cfg.crop_pct)),
            "crop_pct": float(cfg.crop_pct), "interpolation": str(cfg.interpolation),
            "jpeg_draft": int(cfg.input_size / cfg.crop_pct),  # (data/loader.make_loader's draft size)
            "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std],
            "in_graph": "scaling to [0, 1] and normalisation (mean, std)",
            "outside": "decode (JPEG at a reduced scale >= jpeg_draft), EXIF orientation, RGB (transparency on "
                       "white), resize of the short side (Pillow), centre crop"}


def _meta(model: Any, first: Any) -> dict[str, Any]:
    """export.json, but for the parity results and the graphs' checksums."""
    task = model.config_.task
    meta: dict[str, Any] = {
        "format": runtime.FORMAT, "format_version": runtime.FORMAT_VERSION, "fmadapt_version": __version__,
        "modality": model.modality, "task": task, "classes": list(model.classes_),
        "output": "value" if task == "regression" else "probabilities",
        "graphs": {"fp32": "model.onnx"}, "default_graph": "fp32", "members": len(model.members_),
        "calibration": {"temperature": float(model.temperature_)},
        "backbones": [{k: v for k, v in m.model.backbone.cfg.to_dict().items()
                       if k in ("name", "license", "source", "sha256", "embed_dim")} for m in model.members_]}
    if task == "multilabel":
        meta["thresholds"] = {c: float(t) for c, t in zip(model.classes_, model.decision_thresholds(), strict=True)}
        meta["label_sep"] = model.config_.label_sep
    if task == "regression" and model.interval_halfwidth() is not None:
        meta["interval"] = dict(model.interval_ or {})
    if model.modality == "text":
        meta.update(tokenizer="tokenizer.json", max_tokens=int(first.cfg.max_tokens),
                    inputs={"input_ids": "int64 (batch, tokens)", "attention_mask": "int64 (batch, tokens)"})
    elif model.modality == "audio":
        from ..backbones.audio import MIN_SAMPLES

        extra = first.cfg.extra
        meta.update(preprocessing={
            "sample_rate": int(extra["sample_rate"]), "context_seconds": float(extra["context_seconds"]),
            "min_samples": MIN_SAMPLES, "in_graph": "log-mel frames, the embedding network, pooling over windows",
            "outside": "decode (soundfile), mix to mono, resample to sample_rate (soxr), context_seconds of silence "
                       "on each side, zero-padded to at least min_samples; a batch is zero-padded to its longest"},
            inputs={"waveform": "float32 (batch, samples) in [-1, 1]", "lengths": "int64 (batch,) samples"})
    else:
        meta.update(preprocessing=_preprocessing(first),
                    inputs={"images": f"uint8 (batch, {first.cfg.input_size}, {first.cfg.input_size}, 3) RGB"})
    return meta


def export_model(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, int8: bool = False,
                 data: Any = None, text_col: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Export the model directory `model_dir` into `out` (see the module's docstring); returns export.json's
    content. `data` (as `predict` takes it): the inputs to check the export on (default: the validation images
    listed in the model's manifests, or built-in sample texts). Nothing is written unless every check passes."""
    import shutil
    import tempfile

    from ..atomic import commit
    from ..multitarget import holds_targets
    from ..predictor import load_model

    root, dest = Path(model_dir), Path(out)
    if (dest / "config.json").is_file() or dest.resolve() == root.resolve():
        raise ConfigError(f"--out {dest} is a model directory: export into a directory of its own")
    if holds_targets(root):
        raise ConfigError(f"{root} holds a model of several targets: export each target's directory "
                          f"({root}/targets/<name>) on its own")
    model = load_model(root, cache=False, progress=progress)
    if text_col:
        model.config_.text_col = text_col
    why = refusal(model) or ("--int8 is for texts and images for now" if int8 and model.modality == "audio" else None)
    if why:
        raise ExportError(f"{root} cannot be exported as one ONNX graph: {why}")
    ref_model = model.with_runtime("torch")  # fp32 PyTorch: what the graph is exported from
    ex, what = _parity_inputs(model, root, data)
    first = model.members_[0].model.backbone
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest) as tmp_name:
        tmp = Path(tmp_name)
        _export_graph(WholeModel(ref_model), ref_model, tmp / "model.onnx")
        files = {"predict.py": Path(runtime.__file__).read_text(encoding="utf-8"),
                 **(server_files(model.modality) if model.modality != "audio" else {})}  # (no server for sounds yet)
        task = model.config_.task
        meta = _meta(model, first)
        if model.modality == "text":
            files["tokenizer.json"] = _tokenizer_json(first)
        meta["graphs_sha256"] = {}
        (tmp / "export.json").write_text(json.dumps(meta), encoding="utf-8")
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        fp32, fp32_out = _check_fp32(tmp, ex, ref_model.proba(ex), task, first)
        meta["parity"] = {"inputs": what, "fp32": fp32}
        if int8:
            from .quantize import check_int8

            y = model.encode_labels(ex.labels) if task == "classification" and ex.labels is not None else None
            meta["parity"]["int8"] = check_int8(tmp, ex, task, fp32_out, y)
            meta["graphs"]["int8"], meta["default_graph"] = "model.int8.onnx", "int8"
        graphs = {}
        for kind, name in meta["graphs"].items():
            blob = (tmp / name).read_bytes()
            graphs[name] = blob
            meta["graphs_sha256"][kind] = hashlib.sha256(blob).hexdigest()
        files["README.md"] = readme(meta, root)
        commit(dest, {**graphs, **files, "export.json": json.dumps(meta, indent=1, ensure_ascii=False)},
               remove=[] if int8 else ["model.int8.onnx"])
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _graph_pixels(backbone: Any, paths: list[str]) -> np.ndarray:
    """(N, S, S, 3) uint8: the images exactly as fmadapt's own preprocessing resizes and crops them (its
    normalised tensors mapped back to 8 bits), to check the graph apart from Pillow's resizing."""
    from ..data.images import load_image

    pre = backbone.preprocessor()
    mean = torch.tensor(backbone.cfg.mean).view(3, 1, 1)
    std = torch.tensor(backbone.cfg.std).view(3, 1, 1)
    draft = int(backbone.cfg.input_size / backbone.cfg.crop_pct)  # (as data/loader.make_loader decodes JPEGs)
    out = [((pre(load_image(p, draft_size=draft)) * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
           .permute(1, 2, 0) for p in paths]
    return torch.stack(out).numpy()


def _within(c: dict[str, Any], ref: np.ndarray, got: np.ndarray, task: str) -> bool:
    if task == "regression":  # (numbers of any scale: relative)
        d = np.abs(ref - got) / np.maximum(1.0, np.abs(ref))
        return bool(d.max() <= FP32_MAX_ABS_DIFF) if d.size else True
    return c["max_abs_diff"] <= FP32_MAX_ABS_DIFF and agreement(c) == 1.0


def _check_fp32(tmp: Path, ex: Any, ref: np.ndarray, task: str, backbone: Any
                ) -> tuple[dict[str, Any], np.ndarray]:
    m = runtime.ExportedModel(tmp, "fp32")
    got = m.predict_proba(list(ex.inputs))
    e2e = compare(ref, got, task)
    if ex.modality != "image":
        if not _within(e2e, ref, got, task):
            raise ExportError(f"the exported graph disagrees with the model on {e2e['inputs']} inputs (largest "
                              f"difference {e2e['max_abs_diff']:.2e}, same prediction on {agreement(e2e):.1%}; "
                              f"allowed: {FP32_MAX_ABS_DIFF:g} and 100 %): not written")
        return {"graph": e2e, "end_to_end": e2e}, got
    pixels = _graph_pixels(backbone, list(ex.inputs))
    graph_out = np.concatenate([m.run({"images": pixels[i:i + 32]}) for i in range(0, len(pixels), 32)])
    graph = compare(ref, graph_out, task)
    if not _within(graph, ref, graph_out, task):
        raise ExportError(f"the exported graph disagrees with the model on {graph['inputs']} images (largest "
                          f"difference {graph['max_abs_diff']:.2e}, same prediction on {agreement(graph):.1%}; "
                          f"allowed: {FP32_MAX_ABS_DIFF:g} and 100 %): not written")
    if not _within(e2e, ref, got, task):
        e2e["note"] = ("Pillow's resizing in predict.py against torchvision's in fmadapt: pixel values differ by "
                       "a level or two in places, hence these differences")
    return {"graph": graph, "end_to_end": e2e}, got
