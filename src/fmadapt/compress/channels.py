"""Structured channel pruning of an image backbone (convolutions): whole channels removed by torch-pruning's
dependency graph (a channel goes from every layer it couples: the convolution that makes it, its batch norm, the
depthwise convolution and squeeze-excitation that read it, the next convolution's input), chosen by the L1 norm of
the coupled weights, widths rounded to multiples of 8. The features' width (the last convolution's output) is kept,
so the head and `embed_dim` do not change. The matrices shrink, so inference is faster in PyTorch and ONNX Runtime
(unstructured zeros would not be). `fmadapt distill --student-prune R` on an image teacher then recovers accuracy by
distillation.

What was pruned is recorded in `cfg.extra["channels"]` — the shape of every module that changed — so a saved model is
rebuilt with the same shapes before its weights load (artifact.load_model, `apply_channels`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def prune_channels(backbone: Any, ratio: float, round_to: int = 8) -> dict[str, Any]:
    """Remove `ratio` of the channels of every convolution of `backbone.model` but the last, in place; returns
    {"macs": [before, after], "params": [before, after]} (at the backbone's input size)."""
    try:
        import torch_pruning as tp
    except ImportError as e:
        raise ImportError("channel pruning needs torch-pruning: pip install torch-pruning") from e
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the share of channels to prune must be between 0 and 1, got {ratio}")
    net: nn.Module = backbone.model
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) < 2:
        raise ValueError(f"{backbone.cfg.name}: channel pruning needs a convolutional backbone")
    size = int(backbone.cfg.input_size)
    x = torch.zeros(1, 3, size, size)
    before = [{n: tuple(p.shape) for n, p in m.named_parameters(recurse=False)} for m in net.modules()]
    macs0, params0 = tp.utils.count_ops_and_params(net, x)
    was_training, grads = net.training, {n: q.requires_grad for n, q in net.named_parameters()}
    net.eval().requires_grad_(True)  # (the dependency graph is traced through autograd: frozen weights hide it)
    ignored = [convs[-1], *[m for m in net.modules() if isinstance(m, nn.Linear)]]
    pruner = tp.pruner.MetaPruner(net, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=float(ratio), ignored_layers=ignored, round_to=round_to)
    pruner.step()
    net.train(was_training)
    for n, q in net.named_parameters():
        q.requires_grad_(grads[n])
    macs1, params1 = tp.utils.count_ops_and_params(net, x)
    record = {}
    for (name, mod), shapes in zip(net.named_modules(), before, strict=True):
        now = {n: tuple(p.shape) for n, p in mod.named_parameters(recurse=False)}
        if now != shapes:
            record[name] = _shape_of(mod)
    backbone.cfg.extra["channels"] = record
    return {"macs": [int(macs0), int(macs1)], "params": [int(params0), int(params1)]}


def _shape_of(mod: nn.Module) -> dict[str, int]:
    if isinstance(mod, nn.Conv2d):
        return {"out": mod.out_channels, "in": mod.in_channels, "groups": mod.groups}
    if isinstance(mod, nn.BatchNorm2d):
        return {"features": mod.num_features}
    if isinstance(mod, nn.Linear):
        return {"out": mod.out_features, "in": mod.in_features}
    raise ValueError(f"channel pruning changed a {type(mod).__name__}, which cannot be recorded")


def apply_channels(backbone: Any, record: dict[str, dict[str, int]]) -> None:
    """Give the modules `record` names the shapes it says (empty weights: the saved ones load into them)."""
    net: nn.Module = backbone.model
    for name, shape in record.items():
        mod = net.get_submodule(name)
        if isinstance(mod, nn.Conv2d):
            out, inp, groups = int(shape["out"]), int(shape["in"]), int(shape["groups"])
            if min(out, inp, groups) < 1 or inp % groups or out % groups:
                raise ValueError(f"{name}: {out} x {inp} channels in {groups} groups is not a convolution")
            mod.weight = nn.Parameter(torch.empty(out, inp // groups, *mod.kernel_size))
            if mod.bias is not None:
                mod.bias = nn.Parameter(torch.empty(out))
            mod.out_channels, mod.in_channels, mod.groups = out, inp, groups
        elif isinstance(mod, nn.BatchNorm2d):
            n = int(shape["features"])
            if n < 1:
                raise ValueError(f"{name}: {n} features")
            mod.num_features = n
            if mod.weight is not None:
                mod.weight, mod.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
            if mod.running_mean is not None:
                mod.running_mean, mod.running_var = torch.zeros(n), torch.ones(n)
        elif isinstance(mod, nn.Linear):
            out, inp = int(shape["out"]), int(shape["in"])
            mod.weight = nn.Parameter(torch.empty(out, inp))
            if mod.bias is not None:
                mod.bias = nn.Parameter(torch.empty(out))
            mod.out_features, mod.in_features = out, inp
        else:
            raise ValueError(f"{name} is a {type(mod).__name__}: not a convolution, batch norm or linear layer")
    backbone.cfg.extra["channels"] = record
