"""fmadapt: adapt a pretrained foundation model to your own classification task."""

from ._quiet import quiet_libraries as _quiet_libraries
from ._version import __version__
from .backbones import BackboneCfg, create_backbone, list_backbones, register_backbone
from .config import FitConfig
from .errors import ArtifactError, ConfigError, DataError, FmadaptError, NotFittedError
from .estimators import ImageClassifier, TextClassifier, load_model

_quiet_libraries()

__all__ = [
    "ArtifactError",
    "BackboneCfg",
    "ConfigError",
    "DataError",
    "FitConfig",
    "FmadaptError",
    "ImageClassifier",
    "NotFittedError",
    "TextClassifier",
    "__version__",
    "create_backbone",
    "list_backbones",
    "load_model",
    "register_backbone",
]
