"""The scikit-learn-style estimators: a thin facade over the fit pipeline (fitting.py), which returns the
fitted model (predictor.Predictor), and that model, whose attributes and methods an estimator forwards once
fitted (`clf.predict`, `clf.classes_`, `clf.members_`...)."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .config import FitConfig
from .data.readers import DataLike
from .errors import ConfigError, NotFittedError
from .predictor import Predictor

__all__ = ["AudioClassifier", "DataLike", "ImageClassifier", "TextClassifier", "load_model"]


class _Classifier:
    """Shared estimator logic; subclasses say which modality they read."""

    modality: ClassVar[str] = ""
    task: ClassVar[str] = ""
    default_backbone: ClassVar[str] = ""

    def __init__(self, backbone: str | None = None, strategy: str = "probe", *, cache: bool = True,
                 progress: bool | None = None, **options: Any) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.cache = cache
        self.progress = progress
        self.options = options
        self._inferred: dict[str, Any] = {}
        self._check_config()  # bad options fail here, not after data loading

    def _check_config(self) -> FitConfig:
        from .fitting import build_config

        return build_config(self.modality, self.backbone, self.strategy, self.options, self.default_backbone,
                            self._inferred)

    # -- training ------------------------------------------------------------------------------
    def fit(self, data: DataLike, val: DataLike | None = None, *, unlabeled: DataLike | None = None,
            checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
            keep_checkpoints: bool = False) -> _Classifier:
        """Train on `data` (validation: `val`, or a stratified split of `data`); the fitted model is
        `predictor_` (a Predictor), whose attributes and methods the estimator forwards.

        unlabeled: inputs without labels (an image folder or list of paths; a table or list of texts) for
        self-training: the model trained on `data` labels them, the confident ones (`pseudo_threshold`) join the
        training data of a second model, kept if it is better on the validation split. About twice
        the training time, plus predicting the unlabeled inputs (`pseudo_max` caps how many). With
        strategy="auto" they serve continued pretraining instead (`fmadapt pretrain`, within 30 % of the budget),
        whose backbone then competes on validation like any other candidate.

        checkpoint_dir: fine-tuning saves its state there at the end of every epoch and on SIGTERM (which then
        stops the run with TrainingInterrupted). resume: continue from those checkpoints (same data and
        options; the result equals an uninterrupted run's). The checkpoints are deleted when fit succeeds,
        unless keep_checkpoints (the CLI deletes them once the model directory is written)."""
        from .fitting import FitRun, build_config

        t0 = time.perf_counter()
        if resume and checkpoint_dir is None:
            raise ConfigError("resume=True needs the checkpoint_dir of the interrupted run")
        checkpoints = None
        if checkpoint_dir is not None:
            from ._quiet import quiet_libraries
            from .train.checkpoint import RunCheckpoints

            quiet_libraries()  # (Lightning, imported just now, set its loggers to INFO: its banners stay out)
            checkpoints = RunCheckpoints(checkpoint_dir, resume=resume)
        def config(inferred: dict[str, Any] | None) -> FitConfig:
            return build_config(self.modality, self.backbone, self.strategy, self.options, self.default_backbone,
                                inferred)

        self._inferred = {}
        fitted: Any
        if self.options.get("targets"):  # several targets: one frozen backbone, a head each
            from .multitarget_fit import fit_targets

            if unlabeled is not None:
                config(None).check(unlabeled=True)  # (refused, with the rule's message)
            fitted = fit_targets(self.modality, self.default_backbone, config, data, val, cache=self.cache,
                                 progress=self.progress, checkpoints=checkpoints)
        else:
            run = FitRun(self.modality, self.default_backbone, config, cache=self.cache, progress=self.progress,
                         checkpoints=checkpoints)
            fitted = run.run(data, val, unlabeled)
            self._inferred = run.inferred
        fitted.fit_seconds_ = round(time.perf_counter() - t0, 1)
        fitted.resumed_ = list(checkpoints.resumed) if checkpoints else []
        self.predictor_ = fitted
        if checkpoints and not keep_checkpoints:
            checkpoints.remove()
        return self

    # -- the fitted model ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # (only for names not found on the estimator itself: the fitted model's attributes and methods)
        if name.startswith("__") or name == "predictor_":
            raise AttributeError(name)
        fitted = self.__dict__.get("predictor_")
        if fitted is None and not name.startswith("_") and callable(getattr(Predictor, name, None)):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() or from_pretrained() "
                                 f"before {name}()")
        if fitted is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}"
                                 + (" (not fitted yet)" if fitted is None else ""))
        return getattr(fitted, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # a fitted attribute (`members_`, `ngram_weight_`...) set on the estimator is set on its fitted model,
        # which is what predicts: a copy on the estimator would be read back but never used
        if name.endswith("_") and not name.startswith("_") and name != "predictor_":
            fitted = self.__dict__.get("predictor_")
            if fitted is None:
                raise NotFittedError(f"{name} is set by fit(): fit this {type(self).__name__} first")
            setattr(fitted, name, value)
            return
        super().__setattr__(name, value)

    def check_fitted(self) -> Predictor:
        """The fitted model; NotFittedError unless fitted (or loaded)."""
        fitted = self.__dict__.get("predictor_")
        if fitted is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() or from_pretrained()")
        return fitted

    def predict(self, data: DataLike) -> np.ndarray:
        """The predicted class of every readable input."""
        return self.check_fitted().predict(data)

    def predict_proba(self, data: DataLike) -> pd.DataFrame:
        """One row per readable input (index = path or row id), columns `prob_<class>`."""
        return self.check_fitted().predict_proba(data)

    def predict_table(self, data: DataLike) -> pd.DataFrame:
        """What `fmadapt predict` writes (see Predictor.predict_table)."""
        return self.check_fitted().predict_table(data)

    def evaluate(self, data: DataLike) -> dict[str, Any]:
        """Metrics on labeled data (for an image folder with a test/ split, on that split)."""
        return self.check_fitted().evaluate(data)

    def score(self, data: DataLike) -> float:
        """Accuracy on labeled data."""
        return self.check_fitted().score(data)

    def save_pretrained(self, path: str | os.PathLike[str], command: str | None = None, report: bool = True
                        ) -> Any:
        """The model directory (see Predictor.save_pretrained)."""
        return self.check_fitted().save_pretrained(path, command=command, report=report)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **kw: Any) -> Any:
        """An estimator holding the model saved in `path` (refused when it is another modality's), with the
        options it was fitted with; `cache` and `progress` as for the constructor."""
        from .multitarget import MultiTarget, holds_targets

        cache, progress = kw.pop("cache", True), kw.pop("progress", None)
        fitted: Any = (MultiTarget if holds_targets(path) else Predictor).from_pretrained(
            path, cache=cache, progress=progress, modality=cls.modality)
        fit = fitted.config_
        obj = cls(backbone=fit.backbone, strategy=fit.strategy, cache=cache, progress=progress, **kw,
                  **{k: v for k, v in fit.to_dict().items() if k not in ("backbone", "strategy")})
        obj.predictor_ = fitted
        return obj


class ImageClassifier(_Classifier):
    """Classify images. Data: a folder `root/<class>/…` or `root/{train,val,test}/<class>/…`."""

    modality = "image"
    task = "image-classification"
    default_backbone = "efficientnet_lite0"


class TextClassifier(_Classifier):
    """Classify texts. Data: CSV, TSV, JSONL, Parquet or a DataFrame with a text and a label column."""

    modality = "text"
    task = "text-classification"
    default_backbone = "minilm-l6"


class AudioClassifier(_Classifier):
    """Classify sounds (16 kHz speech embedding by default). Data: a folder `root/<class>/…` or
    `root/{train,val,test}/<class>/…` of WAV, FLAC, OGG or MP3 files (any sample rate, mono or stereo)."""

    modality = "audio"
    task = "audio-classification"
    default_backbone = "speech-embedding"


def load_model(path: str | os.PathLike[str], **kw: Any) -> Any:
    """Reload any fmadapt model directory as its fitted model (predict, evaluate, save_pretrained...): a
    Predictor, or a multitarget.MultiTarget for several targets; `cache` and `progress` as for the estimators."""
    from .predictor import load_model as load

    return load(path, **kw)
