"""`lora`: low-rank adapters (PEFT) in the backbone, trained with the classification head; the pretrained
weights stay frozen. The model directory then holds only the head and the adapter tensors (plus their
configuration), and refers to the packaged backbone by checksum."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..backbones.adapters import add_lora, is_adapter_param, lora_targets
from ..config import FitConfig
from .base import register_strategy
from .finetune import FineTune

__all__ = ["LoRA", "add_lora", "is_adapter_param", "lora_targets"]


@register_strategy
class LoRA(FineTune):
    """Low-rank adapters (LoRA, via PEFT) in the attention projections (texts) or pointwise convolutions
    (images), trained with the head while the pretrained weights stay frozen. Small artifacts: only the head
    and the adapters are saved."""

    name = "lora"
    #: adapters start at zero and are small: they need rates ~10x those of full fine-tuning (SST-2 5,000,
    #: 2 epochs: the fine-tuning default 3e-5 left LoRA at 80.9 %, barely above the probe's 80.7 %)
    default_lr = {"image": 1e-3, "text": 5e-4, "audio": 1e-3}
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
