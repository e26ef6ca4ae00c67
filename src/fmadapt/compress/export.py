"""`fmadapt export MODEL --out DIR`: the whole fitted model as one ONNX graph and a small JSON, predicting with
onnxruntime + numpy (+ tokenizers or Pillow) alone, checked against the model before anything is written.

The graph takes what a tokenizer or an image decoder gives — `input_ids` + `attention_mask` (int64, (B, T)), or
`images` (uint8, (B, S, S, 3), resized and centre-cropped); with `auto`'s n-gram model also (or only, at weight 1)
its TF-IDF features as `ngram_index` + `ngram_value` ((B, K), export_extras.py) — and returns the model's
calibrated probabilities (`probabilities`, (B, C)) or, for regression, its numbers (`value`, (B, 1)): every
member's backbone and head, the ensemble's average, test-time flips, the temperature, and for images the scaling
and normalisation are inside.
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

from ..errors import ConfigError, ExportError
from . import exported as runtime
from .export_extras import NGRAM_FILE, TABLE_FILE, TreeGraph, ngram_part
from .export_files import agreement, export_meta, readme, server_files

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
        part = ngram_part(model) if self.modality == "text" else None
        self.ngram = part[0] if part else None  # (inputs: ngram_index, ngram_value, after the tokens if any)
        self.ngram_weight = part[1] if part else 0.0
        # table columns beside the text (input `table`, encoded, after the tokens): a linear term or stacked trees
        self.table = model.table_encoder_ is not None
        self.table_width = int(model.table_encoder_.width) if self.table else 0
        self.trees = nn.ModuleList([TreeGraph(n.stack) if getattr(n, "stack", None) is not None else nn.Identity()
                                    for n in self.nets])
        cfg = model.members_[0].model.backbone.cfg
        if self.modality == "image":
            self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.ngram is not None and self.ngram_weight >= 1.0:  # (runtime/ngram.combined: the n-gram model alone)
            p = self.ngram(inputs[-2], inputs[-1])
        else:
            p = self._neural(inputs)
            if self.ngram is not None:
                p = (1.0 - self.ngram_weight) * p + self.ngram_weight * self.ngram(inputs[-2], inputs[-1])
        if self.temperature != 1.0 and self.task == "classification":  # evaluate.calibration.apply_temperature
            p = torch.softmax(torch.log(p.double().clamp(1e-12, 1.0)) / self.temperature, dim=1).float()
        return p

    def _neural(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.modality == "image":  # (B, S, S, 3) uint8 -> (B, 3, S, S), as ToDtype(scale) + Normalize
            x: Any = (inputs[0].permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        elif self.modality == "audio":  # (B, S) float32 samples (padded as the backbone pads them), (B,) lengths
            x = {"waveform": inputs[0], "lengths": inputs[1]}
        else:
            x = {"input_ids": inputs[0], "attention_mask": inputs[1]}
        table = inputs[2] if self.table else None
        members = []
        for net, trees, flip in zip(self.nets, self.trees, self.flips, strict=True):
            views = [self._one(net, trees, v, table) for v in ([x, torch.flip(x, dims=[-1])] if flip else [x])]
            members.append(views[0] if len(views) == 1 else (views[0] + views[1]) / 2)
        return members[0] if len(members) == 1 else torch.stack(members).mean(0)

    def _one(self, net: Any, trees: nn.Module, x: Any, table: torch.Tensor | None) -> torch.Tensor:
        feats = net.backbone(x)
        logits = trees(net.head(feats), table) if isinstance(trees, TreeGraph) else net.forward_features(feats, table)
        if self.task == "regression":
            return (logits.double() * self.target[1] + self.target[0]).float()
        return torch.sigmoid(logits.float()) if self.task == "multilabel" else torch.softmax(logits.float(), dim=1)


def refusal(model: Any) -> str | None:
    """Why `model` cannot be exported as one graph yet, or None."""
    if model.table_encoder_ is not None and model.modality != "text":
        return "it reads table columns beside its inputs, which is exported for texts only"
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
                names = [] if whole.ngram_weight >= 1.0 else ["input_ids", "attention_mask"]
                args = [b[n] for n in names]
                if names and whole.table:
                    names.append("table")
                    args.append(torch.linspace(-1.0, 1.0, 2 * whole.table_width).reshape(2, whole.table_width))
                if whole.ngram is not None:
                    names += ["ngram_index", "ngram_value"]
                    args += [torch.tensor([[0, whole.ngram.pad, whole.ngram.pad], [0, 0, 0]]),
                             torch.tensor([[0.6, 0.0, 0.0], [0.5, 0.5, 0.7]])]
                seq = {0: "batch", 1: "sequence"}
                torch.onnx.export(whole, tuple(args), str(path), input_names=names, output_names=[out],
                                  opset_version=OPSET, dynamo=False,
                                  dynamic_axes={**{n: seq for n in names}, out: {0: "batch"}})
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
    elif model.table_encoder_ is not None:
        names = ", ".join(c["name"] for c in model.table_encoder_.columns)
        raise ExportError(f"{model_dir} reads table columns beside the text ({names}): give --data, a table with "
                          "them, to check the export on")
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
    why = refusal(model)
    if why:
        raise ExportError(f"{root} cannot be exported as one ONNX graph: {why}")
    ref_model = model.with_runtime("torch")  # fp32 PyTorch: what the graph is exported from
    ex, what = _parity_inputs(model, root, data)
    first = model.members_[0].model.backbone
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest) as tmp_name:
        tmp = Path(tmp_name)
        _export_graph(WholeModel(ref_model), ref_model, tmp / "model.onnx")
        files = {"predict.py": Path(runtime.__file__).read_text(encoding="utf-8"), **server_files(model.modality),
                 "exported_inputs.py": (Path(runtime.__file__).parent / "exported_inputs.py").read_text("utf-8")}
        task = model.config_.task
        meta = export_meta(model, first)
        if meta.get("tokenizer"):
            files["tokenizer.json"] = _tokenizer_json(first)
        if meta.get("ngram"):
            part = ngram_part(model)
            assert part is not None
            files[NGRAM_FILE] = json.dumps(part[2], ensure_ascii=False)
        if meta.get("table"):
            files[TABLE_FILE] = json.dumps(model.table_encoder_.to_dict(), ensure_ascii=False)
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
               remove=[n for n, keep in (("model.int8.onnx", int8), (NGRAM_FILE, "ngram" in meta),
                                         (TABLE_FILE, "table" in meta), ("tokenizer.json", "tokenizer" in meta))
                       if not keep])
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
    got = m.predict_proba(list(ex.inputs), table=ex.table)
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
