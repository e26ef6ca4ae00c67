"""Adaptation strategies by name. Importing this package registers the built-ins."""

from . import contrastive, finetune, lora, probe  # noqa: F401  (registration side effect)
from .base import FitContext, Strategy, describe_strategies, get_strategy, list_strategies, register_strategy

__all__ = ["FitContext", "Strategy", "describe_strategies", "get_strategy", "list_strategies",
           "register_strategy"]
