"""What every backbone offers: an encoder returning one feature vector per input, its config, its
preprocessing, and its layers ordered bottom to top (for freezing and partial fine-tuning)."""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MODALITIES = ("image", "text", "audio")


@dataclass
class BackboneCfg:
    """What a backbone expects and where it came from. Saved inside every trained model."""

    name: str  #: registry name, e.g. "efficientnet_lite0" or "timm:resnet18"
    modality: str  #: "image", "text" or "audio"
    embed_dim: int  #: size of the pooled feature vector
    source: str = ""  #: where the weights come from (pip package, hub id, directory)
    license: str = ""
    sha256: str = ""  #: checksum of the weights file; empty when not reproducible offline
    pretrained: bool = True
    # image backbones
    input_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    # text backbones
    max_tokens: int = 256
    pooling: str = "mean"  #: "mean" or "cls"; audio: "stats" (mean, max, std over windows) or "attention"
    normalize: bool = False  #: L2-normalise the pooled embedding (sentence-transformers' Normalize)
    #: fine-tuning: the body learning rate when `lr` is not given, measured for this backbone (None: the
    #: modality's default)
    finetune_lr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.embed_dim <= 0:
            raise ValueError("embed_dim must be positive")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneCfg:
        """The inverse of `to_dict`, checked field by field (it reads backbone.json of model directories, which
        may be damaged or hostile): ValueError naming the first bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"a backbone config must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in fields)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)[:200]} (written by a newer fmadapt? upgrade it)")
        missing = [n for n, f in fields.items() if n not in d
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")

        def number(v: Any) -> bool:
            return type(v) in (int, float) and math.isfinite(v)

        checks = {
            "name": lambda v: isinstance(v, str) and 0 < len(v) <= 4096,
            "modality": lambda v: v in MODALITIES,
            "embed_dim": lambda v: type(v) is int and 1 <= v <= 1 << 20,
            "source": lambda v: isinstance(v, str), "license": lambda v: isinstance(v, str),
            "sha256": lambda v: isinstance(v, str) and len(v) <= 128,
            "pretrained": lambda v: isinstance(v, bool),
            "input_size": lambda v: type(v) is int and 1 <= v <= 4096,
            "mean": lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(number(x) for x in v),
            "std": lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(number(x) and x > 0 for x in v),
            "interpolation": lambda v: isinstance(v, str) and len(v) <= 32,
            "crop_pct": lambda v: number(v) and 0.05 <= v <= 2.0,
            "max_tokens": lambda v: type(v) is int and 1 <= v <= 1 << 20,
            "pooling": lambda v: v in ("mean", "cls", "stats", "attention"),
            "normalize": lambda v: isinstance(v, bool),
            "finetune_lr": lambda v: v is None or (number(v) and 0 < v <= 1),
            "extra": lambda v: isinstance(v, dict),
        }
        for k, v in d.items():
            if not checks.get(k, lambda _: True)(v):
                raise ValueError(f"field {k!r} has an invalid value {str(v)[:80]!r}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


class Backbone(nn.Module, ABC):
    """A pretrained encoder. `forward(batch)` maps a collated batch to features (B, embed_dim).

    Subclasses implement `forward`, `layer_groups`, `preprocess` and `collate`; the rest of the system
    only talks to this interface, so a new backbone needs no change elsewhere.
    """

    cfg: BackboneCfg

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Modules ordered from input to output; `--unfreeze N` trains the last N."""

    @abstractmethod
    def preprocessor(self, train: bool = False) -> Callable[[Any], Any]:
        """A picklable callable turning one raw input (PIL image or string) into a sample; runs in
        DataLoader workers, so it must not hold the model."""

    @abstractmethod
    def collator(self) -> Callable[[list[Any]], Any]:
        """A picklable callable batching samples into the input of `forward`."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """Features (B, embed_dim) for a collated batch."""

    def split(self, n_top: int) -> tuple[Callable[[Any], Any], nn.Module] | None:
        """(prefix, suffix) such that suffix(prefix(batch)) == forward(batch) and the suffix holds exactly
        the top `n_top` layer groups; None when this architecture cannot be split. Partial fine-tuning
        then runs the frozen prefix once per example and trains only the suffix on cached activations."""
        return None

    def set_image_size(self, size: int, crop_pct: float | None = None) -> None:
        """Image backbones accept another input size (convolutional nets are size-agnostic) and another
        centre-crop share `crop_pct` (None: unchanged)."""
        if self.cfg.modality != "image":
            raise ValueError("image size only applies to image backbones")
        self.cfg.input_size = int(size)
        if crop_pct is not None:
            self.cfg.crop_pct = float(crop_pct)

    def freeze(self, trainable_top: int = 0) -> None:
        """Freeze everything, then unfreeze the top `trainable_top` layer groups (-1: all)."""
        groups = self.layer_groups()
        for p in self.parameters():
            p.requires_grad_(trainable_top < 0)
        if trainable_top > 0:
            for g in groups[-trainable_top:]:
                for p in g.parameters():
                    p.requires_grad_(True)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
