"""Image backbones built on timm: any timm architecture, pooled features, timm's own layer grouping."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2 as T

from .base import Backbone, BackboneCfg

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class TimmBackbone(Backbone):
    """Wraps a timm model created with `num_classes=0`, so `forward` returns pooled features."""

    def __init__(self, model: nn.Module, cfg: BackboneCfg) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self._groups: list[nn.Module] | None = None

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,D)
        return self.model(batch)

    def layer_groups(self) -> list[nn.Module]:
        if self._groups is None:
            self._groups = _timm_layer_groups(self.model)
        return self._groups

    def split(self, n_top: int) -> tuple[Any, nn.Module] | None:
        """EfficientNet/MobileNet-style timm models: groups are [stem, blocks[0], ..., blocks[-1] + head]."""
        m = self.model
        names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
        if not all(hasattr(m, n) for n in names) or len(self.layer_groups()) != 1 + len(m.blocks):
            return None
        if not 1 <= n_top < len(self.layer_groups()):
            return None
        k = len(m.blocks) - n_top
        return _EffNetPrefix(m, k), _EffNetSuffix(m, k)

    def preprocessor(self, train: bool = False) -> T.Compose:
        return build_image_transform(self.cfg, train)

    def collator(self) -> Any:
        return torch.stack


class _EffNetPrefix(nn.Module):
    def __init__(self, m: nn.Module, k: int) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = m.conv_stem, m.bn1, m.blocks[:k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,C,h,w)
        return self.blocks(self.bn1(self.conv_stem(x)))


class _EffNetSuffix(nn.Module):
    def __init__(self, m: nn.Module, k: int) -> None:
        super().__init__()
        self.blocks, self.conv_head, self.bn2 = m.blocks[k:], m.conv_head, m.bn2
        self._head = m.forward_head  # global pool (+ the model's own dropout); not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,h,w) -> (B,D)
        return self._head(self.bn2(self.conv_head(self.blocks(x))))


def build_image_transform(cfg: BackboneCfg, train: bool, policy: str = "basic") -> T.Compose:
    """Evaluation: resize the short side to size/crop_pct, centre-crop (timm's convention).
    Training: random resized crop and horizontal flip ("basic"), followed by TrivialAugmentWide
    ("trivial") or RandAugment with 2 ops at magnitude 9 ("randaugment"); or "flip": the evaluation geometry
    and a horizontal flip only, for centred, tightly framed images (product shots, scans, small icons) that
    a crop of 35 % of the area would cut to pieces."""
    size = cfg.input_size
    interp = _INTERP.get(cfg.interpolation, T.InterpolationMode.BICUBIC)
    if train and policy == "flip":
        geo = [T.Resize(int(round(size / cfg.crop_pct)), interpolation=interp, antialias=True),
               T.CenterCrop(size), T.RandomHorizontalFlip()]
    elif train:
        geo = [T.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=interp, antialias=True),
               T.RandomHorizontalFlip()]
        if policy == "trivial":
            geo.append(T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR))
        elif policy == "randaugment":
            geo.append(T.RandAugment(num_ops=2, magnitude=9, interpolation=T.InterpolationMode.BILINEAR))
        elif policy != "basic":
            raise ValueError(f"unknown augmentation policy {policy!r}")
    else:
        geo = [T.Resize(int(round(size / cfg.crop_pct)), interpolation=interp, antialias=True),
               T.CenterCrop(size)]
    return T.Compose([
        T.ToImage(),
        *geo,
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
    ])


def _timm_layer_groups(model: nn.Module) -> list[nn.Module]:
    """timm's coarse group matcher (stem, stages/blocks, head) as a list of modules, bottom to top."""
    from timm.models import group_modules

    matcher = model.group_matcher(coarse=True) if hasattr(model, "group_matcher") else None
    if matcher is None:
        return [m for m in model.children() if any(True for _ in m.parameters())]
    groups = group_modules(model, matcher)
    return [nn.ModuleList([model.get_submodule(n) for n in groups[k]]) for k in sorted(groups)]


#: body learning rates measured for fine-tuning an architecture's pretrained weights (AdamW, the default schedule
#: and 4 epochs), used when `lr` is not given. EfficientNet-Lite0 (packaged, or `timm:tf_efficientnet_lite0`): in
#: the defaults suite 1e-3 against 2e-4, without augmentation: digits 98.50 % vs 97.16 %, Fashion-MNIST 87.80 % vs
#: 86.70 %, hymenoptera the probe's start kept by both (benchmarks/notes/defaults_finetune_*_candidates.md)
MEASURED_FINETUNE_LR = {"tf_efficientnet_lite0": 1e-3}


def timm_backbone(arch: str, pretrained: bool = True, name: str | None = None, **kw: Any) -> TimmBackbone:
    """`timm:<arch>` — downloads weights from the Hugging Face hub when `pretrained` (online users)."""
    import timm

    model = timm.create_model(arch, pretrained=pretrained, num_classes=0, **kw)
    pc = getattr(model, "pretrained_cfg", {}) or {}
    cfg = BackboneCfg(
        name=name or f"timm:{arch}",
        modality="image",
        embed_dim=int(model.num_features),
        source=f"timm:{pc.get('hf_hub_id') or arch}",
        license=str(pc.get("license", "")),
        pretrained=pretrained,
        input_size=int(pc.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(pc.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(pc.get("std", (0.229, 0.224, 0.225))),
        interpolation=str(pc.get("interpolation", "bicubic")),
        crop_pct=float(pc.get("crop_pct", 0.875)),
        finetune_lr=MEASURED_FINETUNE_LR.get(arch),
        extra={"arch": arch},
    )
    return TimmBackbone(model, cfg)
