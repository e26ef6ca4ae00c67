"""Adaptation strategies, registered by name. A strategy trains a Classifier in place."""

from __future__ import annotations

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

    @abstractmethod
    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        """Train `model` in place; return a history dict for the run summary."""


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(sorted(_STRATEGIES))}, and auto "
                          "(the measured choice among them within a time budget)")
    return _STRATEGIES[name]()


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def describe_strategies() -> list[dict[str, str]]:
    """Name and the first sentence of each registered strategy's docstring, then `auto` (the measured choice
    among them, fmadapt/auto.py) with the first sentence of its module's."""
    from .. import auto

    docs = [(name, _STRATEGIES[name].__doc__) for name in sorted(_STRATEGIES)] + [("auto", auto.__doc__)]
    return [{"name": name, "description": " ".join((doc or "").split()).split(". ")[0].rstrip(".")}
            for name, doc in docs]
