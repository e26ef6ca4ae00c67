"""Adaptation strategies, registered by name. A strategy trains a Classifier in place."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..config import FitConfig
from ..data.cache import FeatureCache
from ..data.examples import Examples, label_indices
from ..errors import ConfigError
from ..model import Classifier


@dataclass
class FitContext:
    """What a strategy needs besides the model and data."""

    classes: list[str]
    cache: FeatureCache | None
    progress: bool
    #: the validation split was carved from the user's training data, so a strategy may train its final
    #: model on both once it has made its choices (the probe does; it then returns its honest validation
    #: probabilities in its history as `_val_proba`, which the estimator moves to `Member.val_proba`)
    refit_on_val: bool = False
    #: checkpoints of this fit (RunCheckpoints): each fine-tuning run saves its state there and, when the fit
    #: resumes, continues from it
    checkpoints: Any = None

    def targets(self, ex: Examples) -> list[int]:
        return label_indices(self.classes, ex.labels).tolist()


class Strategy(ABC):
    name: str = ""
    #: whether the backbone's weights change (then they are saved with the model)
    trains_backbone: bool = False
    #: texts: the most tokens a text backbone reads when the user sets no `max_tokens` (None: the backbone's own)
    max_tokens: int | None = None

    @abstractmethod
    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        """Train `model` in place; return a history dict for the run summary."""


_STRATEGIES: dict[str, type[Strategy]] = {}

#: the built-in strategies: name -> (its module in fmadapt.adapt, whether it trains the backbone). A module is
#: imported when one of its strategies is first asked for (`get_strategy`), so that loading a model and
#: predicting import no training code (Lightning); a test checks this table against the classes.
BUILTIN: dict[str, tuple[str, bool]] = {
    "probe": ("probe", False), "finetune": ("finetune", True), "l2sp": ("finetune", True),
    "progressive": ("finetune", True), "lora": ("lora", True), "contrastive": ("contrastive", True)}


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
        from .._quiet import quiet_libraries

        importlib.import_module(f"{__package__}.{BUILTIN[name][0]}")
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
    from .. import auto

    docs = [(name, type(get_strategy(name)).__doc__) for name in list_strategies()] + [("auto", auto.__doc__)]
    return [{"name": name, "description": " ".join((doc or "").split()).split(". ")[0].rstrip(".")}
            for name, doc in docs]
