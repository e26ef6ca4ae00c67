"""Backbones by name: built-ins, `timm:<arch>`, `hf:<hub id>` and local directories."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .base import Backbone


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    modality: str
    factory: Callable[..., Backbone]
    description: str


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, modality: str, description: str = "") -> Callable:
    """Decorator: `@register_backbone("my-net", "image")` on a `factory(pretrained=True) -> Backbone`."""

    def deco(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _REGISTRY[name] = BackboneEntry(name, modality, factory, description)
        return factory

    return deco


def list_backbones() -> list[BackboneEntry]:
    """Registered backbones (built-ins first). `timm:`/`hf:` names and directories also work."""
    return [_REGISTRY[k] for k in _REGISTRY]


def create_backbone(name: str, pretrained: bool = True) -> Backbone:
    """Build a backbone (in eval mode) by registry name, `timm:<arch>`, `hf:<hub id>` or a directory."""
    return _create(name, pretrained).eval()


def _create(name: str, pretrained: bool) -> Backbone:
    if name in _REGISTRY:
        return _REGISTRY[name].factory(pretrained=pretrained)
    if name.startswith("timm:"):
        from .vision import timm_backbone

        return timm_backbone(name[5:], pretrained=pretrained)
    if name.startswith("hf:"):
        from .text import hf_text_backbone

        return hf_text_backbone(name[3:], pretrained=pretrained)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(path, pretrained)
    known = ", ".join(sorted(_REGISTRY))
    raise ConfigError(
        f"unknown backbone {name!r}. Built-ins: {known}; or use timm:<architecture>, hf:<hub id>, "
        "or the path of a local checkpoint directory (see `fmadapt backbones`)."
    )


def _from_directory(path: Path, pretrained: bool) -> Backbone:
    """A timm hub-style folder (config.json with "architecture") or a transformers/sentence-transformers
    folder (config.json with "model_type")."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg_file}: malformed JSON ({e})") from e
    if "architecture" in cfg:
        from .vision import timm_backbone

        weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.is_file()), None)
        kw = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights and pretrained else {}
        bb = timm_backbone(cfg["architecture"], pretrained=bool(weights) and pretrained, name=str(path), **kw)
        bb.cfg.source = f"dir:{path}"
        return bb
    if "model_type" in cfg:
        from .text import hf_text_backbone

        return hf_text_backbone(str(path), name=str(path), pretrained=pretrained, source=f"dir:{path}")
    raise ConfigError(f"{cfg_file}: neither a timm ('architecture') nor a transformers ('model_type') config")


@register_backbone("efficientnet_lite0", "image",
                   "EfficientNet-Lite0, ImageNet-1k, 4.7M params, 1280-d features (packaged, offline)")
def _efficientnet_lite0(pretrained: bool = True) -> Backbone:
    from .packaged import efficientnet_lite0

    return efficientnet_lite0(pretrained)


@register_backbone("minilm-l6", "text",
                   "all-MiniLM-L6-v2 sentence encoder, 22.7M params, 384-d features (packaged, offline)")
def _minilm_l6(pretrained: bool = True) -> Backbone:
    from .packaged import minilm_l6

    return minilm_l6(pretrained)
