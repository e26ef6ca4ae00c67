"""`lora`: low-rank adapters (PEFT) in the backbone, trained with the classification head; the pretrained
weights stay frozen. The model directory then holds only the head and the adapter tensors (plus their
configuration), and refers to the packaged backbone by checksum."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import FitConfig
from ..errors import ConfigError
from .base import register_strategy
from .finetune import FineTune

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


@register_strategy
class LoRA(FineTune):
    """Low-rank adapters (LoRA, via PEFT) in the attention projections (texts) or pointwise convolutions
    (images), trained with the head while the pretrained weights stay frozen. Small artifacts: only the head
    and the adapters are saved."""

    name = "lora"
    #: adapters start at zero and are small: they need rates ~10x those of full fine-tuning (SST-2 5,000,
    #: 2 epochs: the fine-tuning default 3e-5 left LoRA at 80.9 %, barely above the probe's 80.7 %)
    default_lr = {"image": 1e-3, "text": 5e-4}
    uses_backbone_lr = False  # a backbone's finetune_lr is for its own weights, not for adapters

    def prepare(self, bb: Any, groups: list[nn.Module], cfg: FitConfig) -> tuple[int, list[nn.Module]]:
        net = getattr(bb, "model", bb)
        spec = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                "targets": lora_targets(net, cfg.lora_targets)}
        add_lora(bb, spec)
        for n, p in bb.named_parameters():
            p.requires_grad_(is_adapter_param(n))
        return 0, []

    @staticmethod
    def _cached_split(bb: Any, n_train: int, n_groups: int, train: Any, cfg: FitConfig) -> Any:
        return None

    def fit(self, model: Any, train: Any, val: Any, cfg: FitConfig, ctx: Any) -> dict[str, Any]:
        history = super().fit(model, train, val, cfg, ctx)
        bb = model.backbone
        history["adapter"] = bb.adapter
        history["adapter_params"] = sum(p.numel() for n, p in bb.named_parameters() if is_adapter_param(n))
        history["backbone_params"] = sum(p.numel() for n, p in bb.named_parameters() if not is_adapter_param(n))
        return history
