"""Training-time augmentation. Images: torchvision policies (in `backbones.vision.build_image_transform`)
and timm's mixup/cutmix (batch level, in the training step). Texts: `data.textnoise.TextNoise`."""

from __future__ import annotations

from typing import Any


def mixup_fn(mixup: float, cutmix: float, label_smoothing: float, num_classes: int) -> Any:
    """timm's Mixup (batch-level mixup and/or cutmix, soft targets), or None when both alphas are 0."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                 num_classes=num_classes)
