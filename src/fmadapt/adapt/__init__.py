"""Adaptation strategies by name. A built-in strategy's module is imported when the strategy is first asked
for (`get_strategy`): loading a model and predicting import no training code."""

from ..strategies import (
    check_strategy,
    describe_strategies,
    get_strategy,
    list_strategies,
    register_strategy,
    trains_backbone,
)
from .base import FitContext, Strategy

__all__ = ["FitContext", "Strategy", "check_strategy", "describe_strategies", "get_strategy", "list_strategies",
           "register_strategy", "trains_backbone"]
