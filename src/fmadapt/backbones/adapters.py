"""LoRA adapters in a backbone's network (PEFT): injected by the `lora` strategy (adapt/lora.py) and again when
a model directory that holds adapters is loaded. No training code here: loading a LoRA model and predicting
import neither Lightning nor the strategies."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError

#: module-name suffixes tried in order; the first set present in the backbone is adapted
AUTO_TARGETS = (
    ("query", "value"),  # BERT / MiniLM attention
    ("q_proj", "v_proj"),  # RoBERTa-like / LLaMA-like
    ("qkv",),  # timm ViTs
    ("conv_pw", "conv_pwl", "conv_head"),  # EfficientNet / MobileNet pointwise convolutions
)


def lora_targets(model: nn.Module, requested: str | None) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    leaf = {n.rsplit(".", 1)[-1] for n in names}
    if requested:
        want = [t.strip() for t in requested.split(",") if t.strip()]
        missing = [t for t in want if t not in leaf]
        if missing:
            raise ConfigError(f"lora_targets {', '.join(missing)} not found among the backbone's Linear/Conv2d "
                              f"layers ({', '.join(sorted(leaf)[:30])})")
        return want
    for group in AUTO_TARGETS:
        present = [t for t in group if t in leaf]
        if present:
            return present
    raise ConfigError("no known attention/pointwise layers for LoRA in this backbone; name them with "
                      f"--set lora_targets=a,b (layers: {', '.join(sorted(leaf)[:30])})")


def add_lora(backbone: Any, spec: dict[str, Any]) -> None:
    """Inject LoRA layers described by `spec` ({"r", "alpha", "dropout", "targets"}) into the backbone's
    network, in place; remembered as `backbone.adapter` (saved with the model)."""
    from peft import LoraConfig, inject_adapter_in_model

    net = getattr(backbone, "model", backbone)
    cfg = LoraConfig(r=int(spec["r"]), lora_alpha=float(spec["alpha"]), lora_dropout=float(spec["dropout"]),
                     target_modules=list(spec["targets"]), bias="none")
    inject_adapter_in_model(cfg, net)
    backbone.adapter = {"type": "lora", **spec}
    # the network computes something else now: never served by caches/exports of the pretrained weights
    if backbone.cfg.sha256:
        backbone.cfg.extra["initial_sha256"] = backbone.cfg.sha256
        backbone.cfg.sha256 = ""


def is_adapter_param(name: str) -> bool:
    return "lora_" in name
