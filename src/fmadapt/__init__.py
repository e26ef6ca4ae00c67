"""fmadapt: adapt a pretrained foundation model to your own classification task (images, texts, sounds)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._quiet import quiet_libraries as _quiet_libraries
from ._version import __version__
from .config import FitConfig
from .errors import ArtifactError, ConfigError, DataError, FmadaptError, NotFittedError

if TYPE_CHECKING:
    from .backbones import BackboneCfg, create_backbone, list_backbones, register_backbone
    from .estimators import AudioClassifier, ImageClassifier, TextClassifier
    from .predictor import Predictor, load_model

# Names whose modules import torch, Lightning and transformers (seconds): imported on first use (PEP 562), so
# that `fmadapt --help` and a mistyped option answer at once.
_LAZY = {
    "BackboneCfg": "backbones",
    "create_backbone": "backbones",
    "list_backbones": "backbones",
    "register_backbone": "backbones",
    "AudioClassifier": "estimators",
    "ImageClassifier": "estimators",
    "TextClassifier": "estimators",
    "load_model": "predictor",
    "Predictor": "predictor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fmadapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_quiet_libraries()

__all__ = [
    "ArtifactError",
    "AudioClassifier",
    "BackboneCfg",
    "ConfigError",
    "DataError",
    "FitConfig",
    "FmadaptError",
    "ImageClassifier",
    "NotFittedError",
    "Predictor",
    "TextClassifier",
    "__version__",
    "create_backbone",
    "list_backbones",
    "load_model",
    "register_backbone",
]
