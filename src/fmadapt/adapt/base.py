"""What an adaptation strategy is: a Strategy trains a Classifier in place, given a FitContext. The registry of
strategies by name is fmadapt.strategies (re-exported by fmadapt.adapt), which loading a model reads without
importing this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..config import FitConfig
from ..data.cache import FeatureCache
from ..data.examples import Examples, label_indices
from ..model import Classifier
from ..strategies import register_strategy  # noqa: F401  (the strategies' modules register through here)


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
