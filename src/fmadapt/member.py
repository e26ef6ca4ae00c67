"""One trained model of a fitted estimator (an ensemble has several): the network and what was learnt with it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .config import FitConfig
    from .data.examples import Examples
    from .model import Classifier


@dataclass
class Member:
    model: Classifier
    #: the options it was trained with, resolved (backbone, seed, image size and crop chosen)
    config: FitConfig
    #: what its strategy reports (saved in config.json)
    history: dict[str, Any]
    #: whether its backbone's weights changed (then they are saved with it; a frozen one goes through the
    #: feature cache)
    trains_backbone: bool
    #: texts: how well the backbone's vocabulary covers the training data (None for images / after loading)
    vocabulary: dict[str, Any] | None = None
    #: validation probabilities from before a refit on the validation split (a probe refit on training +
    #: validation data, `refit_full`): the honest figures; None when the model never trained on that split
    val_proba: np.ndarray | None = None
    #: self-training: the pseudo-labeled examples it trained on (listed in the model directory's manifests)
    pseudo: Examples | None = None

    def with_config(self, **changes: Any) -> Member:
        """The same model with some of its options changed (e.g. `tta=False`, to predict without it)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **changes))
