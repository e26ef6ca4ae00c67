"""Structured pruning of a BERT-style text encoder: whole attention heads and whole feed-forward neurons removed, so
the matrices themselves shrink and inference is faster in PyTorch and ONNX Runtime alike (unstructured sparsity
would not be). Which to keep is decided per layer by magnitude: a head by the norms of its value rows and of its
columns in the attention output projection, a feed-forward neuron by the norms of its input row and output
column. `fmadapt distill --student-prune R` then recovers the accuracy by distillation from the unpruned model.

A pruned backbone records what it kept in `cfg.extra["pruned"]` ({"heads": [[...] per layer], "ffn": [[...] per
layer]}), so a saved model is rebuilt with the same shapes before its weights load (artifact.load_model)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, len(idx), bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[idx])
    return new


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(idx), lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def _layers(backbone: Any) -> list[Any]:
    layers: list[Any] = list(backbone.layer_groups()[1:])
    if not layers or not all(hasattr(lay, "attention") and hasattr(lay, "intermediate") for lay in layers):
        layers = [getattr(lay, "layer", lay) for lay in layers]  # (a top group wrapping the last layer)
    for lay in layers:
        att = getattr(getattr(lay, "attention", None), "self", None)
        if not (att is not None and all(hasattr(att, k) for k in ("query", "key", "value", "attention_head_size"))
                and hasattr(lay, "intermediate") and hasattr(lay, "output")):
            raise ValueError(f"{backbone.cfg.name}: structured pruning supports BERT-style encoders only")
    return layers


def apply(backbone: Any, kept: dict[str, list[list[int]]]) -> None:
    """Cut every layer to the heads and feed-forward neurons `kept` lists, in place, and record them."""
    layers = _layers(backbone)
    if len(kept.get("heads", [])) != len(layers) or len(kept.get("ffn", [])) != len(layers):
        raise ValueError(f"pruning record for {len(kept.get('heads', []))} layers, the encoder has {len(layers)}")
    for lay, heads, ffn in zip(layers, kept["heads"], kept["ffn"], strict=True):
        att, out = lay.attention.self, lay.attention.output.dense
        d = int(att.attention_head_size)
        if not heads or not ffn or max(heads) * d + d > att.query.out_features \
                or max(ffn) >= lay.intermediate.dense.out_features:
            raise ValueError("a pruning record names heads or neurons the layer does not have")
        idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])
        att.query, att.key, att.value = (_rows(getattr(att, k), idx) for k in ("query", "key", "value"))
        lay.attention.output.dense = _cols(out, idx)
        att.num_attention_heads, att.all_head_size = len(heads), len(heads) * d
        f = torch.tensor(ffn)
        lay.intermediate.dense = _rows(lay.intermediate.dense, f)
        lay.output.dense = _cols(lay.output.dense, f)
    backbone.cfg.extra["pruned"] = {"heads": [list(map(int, h)) for h in kept["heads"]],
                                    "ffn": [list(map(int, f)) for f in kept["ffn"]]}


def choose(backbone: Any, keep: float) -> dict[str, list[list[int]]]:
    """The heads and neurons to keep per layer (a share `keep` of each, at least one, by magnitude; ascending)."""
    heads, ffn = [], []
    for lay in _layers(backbone):
        att, out = lay.attention.self, lay.attention.output.dense
        d = int(att.attention_head_size)
        n = att.query.out_features // d
        score = torch.stack([att.value.weight[h * d:(h + 1) * d].norm() * out.weight[:, h * d:(h + 1) * d].norm()
                             for h in range(n)])
        heads.append(sorted(torch.topk(score, max(1, round(n * keep))).indices.tolist()))
        w_in, w_out = lay.intermediate.dense.weight, lay.output.dense.weight
        s = w_in.norm(dim=1) * w_out.norm(dim=0)
        ffn.append(sorted(torch.topk(s, max(1, round(len(s) * keep))).indices.tolist()))
    return {"heads": heads, "ffn": ffn}


def prune(backbone: Any, ratio: float) -> dict[str, Any]:
    """Remove the share `ratio` (0 < ratio < 1) of every layer's heads and feed-forward neurons; what is left."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the pruning ratio must be between 0 and 1 (exclusive), got {ratio}")
    if "pruned" in backbone.cfg.extra:
        raise ValueError(f"{backbone.cfg.name} is pruned already: prune the model it was pruned from")
    kept = choose(backbone, 1.0 - ratio)
    apply(backbone, kept)
    return {"heads": [len(h) for h in kept["heads"]], "ffn": [len(f) for f in kept["ffn"]]}
