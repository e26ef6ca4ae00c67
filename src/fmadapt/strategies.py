"""Adaptation strategies by name: the built-in ones (their modules in fmadapt.adapt, imported when a strategy is
first asked for) and those registered with `register_strategy`. Loading a model reads `trains_backbone` and
`check_strategy` from here without importing any strategy's module or Lightning."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .adapt.base import Strategy

_STRATEGIES: dict[str, type[Strategy]] = {}

#: the built-in strategies: name -> (its module in fmadapt.adapt, whether it trains the backbone). A module is
#: imported when one of its strategies is first asked for (`get_strategy`), so that loading a model and
#: predicting import no training code (Lightning); a test checks this table against the classes.
BUILTIN: dict[str, tuple[str, bool]] = {
    "probe": ("probe", False), "finetune": ("finetune", True), "l2sp": ("finetune", True),
    "progressive": ("finetune", True), "lora": ("lora", True), "contrastive": ("contrastive", True),
    "federated": ("federated", False), "federated-finetune": ("federated", True),
    "federated-lora": ("federated", True)}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls
    return cls


def check_strategy(name: str) -> None:
    """Raises ConfigError, listing the known names, unless `name` is a strategy (nothing is imported)."""
    if name not in _STRATEGIES and name not in BUILTIN:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(list_strategies())}, and auto "
                          "(the measured choice among them within a time budget)")


def get_strategy(name: str) -> Strategy:
    check_strategy(name)
    if name not in _STRATEGIES:
        from ._quiet import quiet_libraries

        importlib.import_module(f"fmadapt.adapt.{BUILTIN[name][0]}")
        quiet_libraries()  # (Lightning, imported just now, set its loggers to INFO: its banners stay out)
    return _STRATEGIES[name]()


def trains_backbone(name: str) -> bool:
    """Whether strategy `name` changes the backbone's weights, without importing a built-in's module."""
    check_strategy(name)
    return _STRATEGIES[name].trains_backbone if name in _STRATEGIES else BUILTIN[name][1]


def list_strategies() -> list[str]:
    return sorted({*BUILTIN, *_STRATEGIES})


def describe_strategies() -> list[dict[str, str]]:
    """Name and the first sentence of each registered strategy's docstring, then `auto` (the measured choice
    among them, fmadapt/auto.py) with the first sentence of its module's."""
    from . import auto

    docs = [(name, type(get_strategy(name)).__doc__) for name in list_strategies()] + [("auto", auto.__doc__)]
    return [{"name": name, "description": " ".join((doc or "").split()).split(". ")[0].rstrip(".")}
            for name, doc in docs]
