"""Pretrained encoders by name, each with the config of what it expects."""

from .base import Backbone, BackboneCfg
from .registry import BackboneEntry, create_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "BackboneCfg", "BackboneEntry", "create_backbone", "list_backbones", "register_backbone"]
