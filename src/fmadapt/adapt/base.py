"""What an adaptation strategy is: a Strategy trains a Classifier in place, given a FitContext. The registry of
strategies by name is fmadapt.strategies (re-exported by fmadapt.adapt), which loading a model reads without
importing this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    #: multi-label (task multilabel): the separator of the examples' canonical label strings; `classes` are then
    #: the labels, and `indicator` gives the targets
    label_sep: str | None = None
    #: regression: (mean, standard deviation) of the training targets; heads learn the standardised target
    target_scale: tuple[float, float] | None = None
    #: `features`: the fitted data.tabular.TableEncoder of the table columns read beside the text
    table: Any = None
    #: several targets fine-tuned together (tasks.joint.JointSpec): the targets are its rows by example id, and
    #: the model's head (the targets' probe heads side by side) is the starting point
    joint: Any = None

    def with_table(self, x: np.ndarray, ex: Examples) -> np.ndarray:
        """The probe's inputs: backbone features, and the encoded table columns of the same rows when the model
        reads them (Classifier.set_linear splits a head fitted on both)."""
        if self.table is None:
            return x
        return np.concatenate([x, self.table.transform(ex.table, ex.source)], axis=1)

    def table_rows(self, ex: Examples) -> np.ndarray | None:
        """The encoded table columns of the examples (N, width), for training loaders; None without `features`."""
        return None if self.table is None else self.table.transform(ex.table, ex.source)

    @property
    def multilabel(self) -> bool:
        return self.label_sep is not None

    @property
    def regression(self) -> bool:
        return self.target_scale is not None

    def targets(self, ex: Examples) -> list[Any]:
        """What the training loaders carry per example: the class index, or the float32 row of the 0/1 target
        matrix (multi-label), or the standardised target as a float32 row of one (regression); several targets
        together: each example's joint row."""
        if self.joint is not None:
            return [self.joint.rows[i] for i in ex.ids]
        if self.multilabel:
            return list(self.indicator(ex))
        if self.regression:
            return list(self.standardised(ex).astype(np.float32)[:, None])
        return label_indices(self.classes, ex.labels).tolist()

    def standardised(self, ex: Examples) -> np.ndarray:
        """Regression: (target - mean) / std of the examples' targets."""
        assert self.target_scale is not None
        mean, std = self.target_scale
        return (np.asarray([float(v) for v in ex.labels or []], dtype=np.float64) - mean) / std

    def unstandardise(self, z: np.ndarray) -> np.ndarray:
        assert self.target_scale is not None
        mean, std = self.target_scale
        return np.asarray(z, dtype=np.float64) * std + mean

    def indicator(self, ex: Examples) -> np.ndarray:
        """Multi-label: the (n, labels) 0/1 target matrix; a label outside `classes` (validation data may
        carry one training never saw) is left out."""
        from ..tasks.multilabel import indicator, sets_of

        assert self.label_sep is not None
        return indicator(sets_of(ex.labels or [], self.label_sep), self.classes, unknown="ignore")


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
