"""The fitted model, apart from its fitting: its members (trained networks), classes, calibration and n-gram
blend, what fitting measured (metrics, history, data summary), and everything that predicts, evaluates and
saves. The fit pipeline (fitting.py) returns one; `load_model` reads one from a model directory. Evaluation,
the report, explanations and robustness use only its public methods."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from .config import FitConfig
from .data.cache import FeatureCache, MemoryFeatureCache
from .data.examples import Examples, label_indices
from .data.readers import TASKS, DataLike, read_labeled, read_unlabeled
from .data.split import check_known
from .errors import NotFittedError
from .member import Member
from .persistence import Persisted, read_model_dir
from .runtime.ngram import combined


class Predictor(Persisted):
    """A fitted classifier: `predict`, `predict_proba`, `predict_table`, `evaluate`, `save_pretrained`, and
    `proba` / `metrics_from` on loaded examples (`read_inputs`, `read_labeled`) for evaluation code.

    Attributes: `classes_`; `members_` (every trained model: more than one is an ensemble, whose probabilities
    are averaged); `config_` (the options it was fitted with); `temperature_` and `calibration_`; `ngram_` and
    `ngram_weight_` (auto on texts: an n-gram TF-IDF model blended in); after a fit in this session also
    `history_`, `metrics_`, `splits_`, `data_summary_`."""

    def __init__(self, modality: str, classes: list[str], config: FitConfig, *, cache: bool | FeatureCache = True,
                 progress: bool | None = None) -> None:
        self.modality = modality
        self.task = (TASKS[modality] if config.task == "classification" else f"{modality}-regression"
                     if config.task == "regression" else f"{modality}-multilabel-classification")
        self.classes_ = list(classes)
        self.config_ = config
        self.cache = cache
        self.progress = progress
        self.members_: list[Member] = []
        self.history_: dict[str, Any] = {}
        self.temperature_ = 1.0
        self.calibration_: dict[str, Any] | None = None
        self.ngram_: Any = None
        self.ngram_weight_ = 0.0
        self.metrics_: dict[str, Any] = {}
        self.splits_: dict[str, Examples] = {}
        self.data_summary_: dict[str, Any] = {}
        self.refit_on_val_ = False
        self.fit_seconds_: float | None = None
        self.resumed_: list[str] = []  # fine-tuning runs continued from checkpoints
        self._val_proba_raw: np.ndarray | None = None
        #: task multilabel: each label's decision threshold (tuned on validation; 0.5 until then)
        self.thresholds_: np.ndarray | None = None
        #: task regression: (mean, std) of the training targets (the head predicts the standardised target),
        #: and the prediction intervals (split conformal: {"coverage", "halfwidth", ...}; None: none)
        self.target_scale_: tuple[float, float] | None = None
        self.interval_: dict[str, Any] | None = None
        #: `features`: the table columns read beside the text and their encoding (data.tabular.TableEncoder)
        self.table_encoder_: Any = None

    @property
    def regression(self) -> bool:
        """Whether this model predicts a number (task regression): `predict` gives it, `predict_table` adds the
        prediction interval (`lower`, `upper`); `classes_` holds the target's name."""
        return self.config_.task == "regression"

    @property
    def multilabel(self) -> bool:
        """Whether each input may carry any number of the labels `classes_` (task multilabel): probabilities are
        then per label (sigmoid, not summing to 1) and predictions are label sets joined by `label_sep`."""
        return self.config_.task == "multilabel"

    def interval_halfwidth(self) -> float | None:
        """Regression: half the width of the prediction intervals (pred ± it), or None without intervals."""
        return None if self.interval_ is None else float(self.interval_["halfwidth"])

    def decision_thresholds(self) -> np.ndarray:
        """Multi-label: each label's threshold (0.5 where none was tuned)."""
        t = self.thresholds_
        return np.full(len(self.classes_), 0.5) if t is None else np.asarray(t, dtype=float)

    def set_members(self, members: list[Member]) -> None:
        """The trained models (one, or an ensemble's), the first giving `model_` and `trains_backbone_`."""
        self.members_ = list(members)
        first = members[0]
        self.model_, self.trains_backbone_ = first.model, first.trains_backbone

    # -- prediction ----------------------------------------------------------------------------
    def with_runtime(self, runtime: str) -> Predictor:
        """A copy (sharing the networks) whose members compute features with `runtime` (torch, onnx, int8,
        auto): e.g. fp32 references for a model fitted to predict with int8 features."""
        import copy

        out = copy.copy(self)
        out.set_members([m.with_config(runtime=runtime) for m in self.members_])
        return out

    def check_fitted(self) -> Predictor:
        """Itself (an estimator's `check_fitted` returns its fitted model: evaluation code takes either);
        NotFittedError while it has no trained network yet (during a fit)."""
        if not self.members_:
            raise NotFittedError("this model has no trained network yet: fit it or load a model directory")
        return self

    def feature_cache(self) -> FeatureCache | None:
        """Where frozen features are cached: the disk cache (`cache=True`), none (False), or the cache given
        (several targets share one, so each input's features are computed once)."""
        if isinstance(self.cache, FeatureCache):
            return self.cache
        return FeatureCache() if self.cache else None

    def member_cache(self, member: Member) -> FeatureCache | None:
        """The feature cache a member's backbone goes through: a trained backbone only through an in-memory
        cache shared by several targets (their one fine-tuned backbone), never the disk cache."""
        cache = self.feature_cache()
        if member.trains_backbone and not isinstance(cache, MemoryFeatureCache):
            return None
        return cache

    def show_progress(self) -> bool:
        import sys

        return sys.stderr.isatty() if self.progress is None else self.progress

    def proba(self, ex: Examples, calibrated: bool = True) -> np.ndarray:
        """(N, C) probabilities of loaded examples (`read_inputs`, `read_labeled`), columns in the order of
        `classes_` (multi-label: one sigmoid per label; regression: (N, 1), the predicted numbers): an ensemble
        averages its members', an n-gram model is blended in, the calibration temperature applied unless
        `calibrated=False`. A frozen backbone goes through the feature cache."""
        self.check_fitted()
        if len(ex) == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        proba = combined(lambda: np.mean([self.member_proba(m, ex) for m in self.members_], axis=0),
                         self.ngram_, self.ngram_weight_, list(ex.inputs))
        if self.temperature_ != 1.0 and calibrated:
            from .evaluate.calibration import apply_temperature

            proba = apply_temperature(proba, self.temperature_)
        return proba

    def member_proba(self, member: Member, ex: Examples) -> np.ndarray:
        """(N, C) probabilities of one model (a member, or a candidate while fitting); with `tta` the mean
        over the images and their mirror images."""
        import torch

        from .runtime.features import extract_features

        model, cfg = member.model, member.config
        cache = self.member_cache(member)
        rows = self.encoded_table(ex) if getattr(model, "reads_table", False) else None
        table = None if rows is None else torch.from_numpy(rows)
        views = []
        for flip in (False, True) if cfg.tta and ex.modality == "image" else (False,):
            feats = extract_features(model.backbone, ex, batch_size=64, cache=cache, flip=flip,
                                     progress=self.show_progress(), desc="predicting", runtime=cfg.runtime)
            with torch.inference_mode():
                logits = model.forward_features(torch.from_numpy(feats).to(model.head.weight.device), table)
                if cfg.task == "regression":
                    mean, std = self.target_scale_ or (0.0, 1.0)
                    views.append((logits.double() * std + mean).cpu().numpy())
                    continue
                views.append((torch.sigmoid(logits.float()) if cfg.task == "multilabel" else
                              torch.softmax(logits.float(), dim=1)).cpu().numpy())
        return views[0] if len(views) == 1 else np.mean(views, axis=0)

    def encoded_table(self, ex: Examples) -> np.ndarray | None:
        """(N, width) float32: the table columns the model reads beside the text (`features`), encoded as its
        head reads them, one row per input of `ex`; None for a model that reads none. A DataError names the
        columns when `ex` lacks them."""
        if self.table_encoder_ is None:
            return None
        if ex.table is None:
            from .errors import DataError

            names = [c["name"] for c in self.table_encoder_.columns]
            raise DataError(f"{ex.source or 'input'}: this model reads table columns beside the text "
                            f"({', '.join(names)}): give a table that has them")
        return self.table_encoder_.transform(ex.table, ex.source)

    def encode_labels(self, labels: Any, unknown: int | None = None) -> np.ndarray:
        """Class indices (int64) of `labels`, in the order of `classes_` (the columns of `predict_proba`); a
        label the model does not know raises KeyError, or maps to `unknown` when given. Multi-label: the (n,
        labels) 0/1 matrix of the label strings (a label the model does not know is left out)."""
        if self.multilabel:
            from .tasks.multilabel import indicator, sets_of

            return indicator(sets_of(list(labels or []), self.config_.label_sep), self.classes_, unknown="ignore")
        if self.regression:  # (the targets themselves)
            return np.asarray([float(v) for v in labels or []], dtype=np.float64)
        return label_indices(self.classes_, labels, unknown)

    def predict_proba(self, data: DataLike) -> pd.DataFrame:
        """One row per readable input (index = path or row id), columns `prob_<class>`."""
        if self.regression:
            from .errors import ConfigError

            raise ConfigError("a regression model has no class probabilities: `predict` gives the number, "
                              "`predict_table` adds the prediction interval (lower, upper)")
        ex = self.read_inputs(data)
        p = self.proba(ex)
        return pd.DataFrame(p, index=pd.Index(ex.ids, name="id"), columns=[f"prob_{c}" for c in self.classes_])

    def predict(self, data: DataLike) -> np.ndarray:
        """The predicted class of every readable input (multi-label: its labels joined by `label_sep`, "" for
        none; `predict_proba` has each label's probability)."""
        p = self.proba(self.read_inputs(data))
        return self.labels_of(p)

    def labels_of(self, proba: np.ndarray) -> np.ndarray:
        """The predictions (as `predict` gives them) of probabilities from `proba`."""
        if self.regression:
            return np.asarray(proba, dtype=np.float64).reshape(len(proba), -1)[:, 0]
        if not len(proba):
            return np.array([], dtype=object)
        if self.multilabel:
            from .tasks.multilabel import decide

            sep = self.config_.label_sep
            return np.asarray([sep.join(self.classes_[int(j)] for j in np.flatnonzero(row))
                               for row in decide(proba, self.decision_thresholds())], dtype=object)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]

    def predict_table(self, data: DataLike) -> pd.DataFrame:
        """What `fmadapt predict` writes: ids (+ text), `pred`, `prob_<class>`, and a row with an `error`
        for every input that could not be read, so nothing silently disappears."""
        ex = self.read_inputs(data)
        p = self.proba(ex)
        out = pd.DataFrame({"id": ex.ids})
        if ex.modality == "text":
            out["text"] = ex.inputs
        for name, values in self.prediction_columns(p).items():
            out[name] = values
        if ex.skipped:
            bad = pd.DataFrame({"id": [s.where for s in ex.skipped], "error": [s.reason for s in ex.skipped]})
            out = pd.concat([out, bad], ignore_index=True)
        return out

    def prediction_columns(self, proba: np.ndarray) -> dict[str, Any]:
        """The columns `predict_table` writes for probabilities from `proba`: `pred`, then `prob_<class>` per
        class (multi-label: per label), or regression's `lower` and `upper` (when there are intervals)."""
        pred = self.labels_of(proba)
        out: dict[str, Any] = {"pred": pred.tolist()}
        if self.regression:
            q = self.interval_halfwidth()
            if q is not None:
                out["lower"], out["upper"] = (pred - q).tolist(), (pred + q).tolist()
        else:
            for j, c in enumerate(self.classes_):
                out[f"prob_{c}"] = proba[:, j] if len(proba) else []
        return out

    def embed(self, data: DataLike, member: int = 0) -> np.ndarray:
        """(N, D) float32: the features the model's head reads, one row per readable input in the order of
        `predict` — the adapted backbone's embeddings after fine-tuning, the pretrained ones after a probe.
        An ensemble's members may have different backbones: `member` picks one."""
        from .runtime.features import extract_features

        self.check_fitted()
        m = self.members_[member]
        ex = self.read_inputs(data)
        return extract_features(m.model.backbone, ex, batch_size=64, cache=self.member_cache(m),
                                progress=self.show_progress(), desc="embedding", runtime=m.config.runtime)

    def read_inputs(self, data: DataLike) -> Examples:
        """The inputs of `data` (as `predict` takes it) loaded for `proba`; unreadable ones are listed in
        `skipped`, labels ignored."""
        self.check_fitted()
        return read_unlabeled(self.modality, data, self.config_)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, cache: bool = True, progress: bool | None = None,
                        modality: str | None = None) -> Predictor:
        """The fitted model saved in `path`; with `modality`, refused unless it is that modality's (the
        estimators' from_pretrained)."""
        saved = read_model_dir(path, modality)
        obj = cls(saved["modality"], saved["classes"], saved["config"], cache=cache, progress=progress)
        obj.set_members(saved["members"])
        obj.temperature_ = saved["temperature"]
        obj.thresholds_ = saved["thresholds"]
        obj.target_scale_, obj.interval_ = saved["target_scale"], saved["interval"]
        obj.table_encoder_ = saved["table_encoder"]
        if saved["ngram"] is not None:
            obj.ngram_, obj.ngram_weight_ = saved["ngram"]
        return obj

    # -- evaluation ----------------------------------------------------------------------------
    def read_labeled(self, data: DataLike) -> Examples:
        """Labeled data (as `evaluate` takes it: for a folder with a test/ split, that split) loaded for
        `proba` and `metrics_from`; a label the model does not know is refused."""
        self.check_fitted()
        splits, _ = read_labeled(self.modality, data, self.config_, fitting=False)
        ex = splits[next(n for n in ("test", "val", "train") if n in splits)]
        if self.config_.task == "classification":  # (multi-label: an unknown label is left out of the targets)
            check_known(ex, self.classes_, "evaluation data")
        return ex

    def metrics_from(self, proba: np.ndarray, ex: Examples) -> dict[str, Any]:
        """The metrics of `evaluate` (accuracy, macro-F1, per class, calibration error...) for probabilities
        of the labeled examples `ex` (from `proba`), with the inputs `ex` skipped."""
        y = self.encode_labels(ex.labels)
        if self.multilabel:
            from .tasks.multilabel import multilabel_metrics

            m = multilabel_metrics(y, proba, self.decision_thresholds(), self.classes_)
        elif self.regression:
            from .tasks.regression import regression_metrics

            m = regression_metrics(y, self.labels_of(proba), self.interval_halfwidth())
        else:
            from .evaluate.metrics import classification_metrics  # (scikit-learn: not needed to predict)

            m = classification_metrics(y, proba, self.classes_)
        m["skipped"] = [s.to_dict() for s in ex.skipped]
        return m

    def metrics_with(self, member: Member, ex: Examples) -> dict[str, Any]:
        """Metrics of one model that is not (yet) one of the members (auto's candidates), with its
        probabilities under "_proba" (kept by the caller for calibration, popped before anything is saved)."""
        if len(ex) == 0:
            return self.metrics_from(np.zeros((0, len(self.classes_)), dtype=np.float32), ex)
        proba = self.member_proba(member, ex)
        return {**self.metrics_from(proba, ex), "_proba": proba}

    def evaluate(self, data: DataLike) -> dict[str, Any]:
        """Metrics on labeled data (for an image folder with a test/ split, on that split)."""
        return self.evaluate_examples(self.read_labeled(data))[0]

    def evaluate_examples(self, ex: Examples) -> tuple[dict[str, Any], np.ndarray]:
        """`evaluate` on loaded examples: (metrics, the calibrated probabilities they came from)."""
        t = self.temperature_
        if not len(ex) or t == 1.0:
            proba = self.proba(ex)
            return self.metrics_from(proba, ex), proba
        # held-out data: the honest before/after of the temperature fitted at training time
        from .evaluate.calibration import apply_temperature, calibration_measures

        raw = self.proba(ex, calibrated=False)
        proba = apply_temperature(raw, t)
        m = self.metrics_from(proba, ex)
        y = self.encode_labels(ex.labels)
        m["calibration"] = {"temperature": t, "before": calibration_measures(raw, y),
                            "after": calibration_measures(proba, y)}
        return m, proba

    def score(self, data: DataLike) -> float:
        """Accuracy on labeled data (multi-label: subset accuracy, every label of an input right, as
        scikit-learn's `score` of a multi-label classifier; regression: R², as a scikit-learn regressor's)."""
        if self.regression:
            return float(self.evaluate(data)["r2"])
        return float(self.evaluate(data)["accuracy"])

    def validation_note(self) -> str:
        """What the validation figures are (the report's words): honest, or optimistic after a refit on them."""
        return ("validation split; the final model was refit on it after choosing, so its accuracy here is "
                "optimistic (fairness and mistakes use the predictions from before the refit). For held-out "
                "figures run `fmadapt evaluate MODEL TEST_DATA --robustness`"
                if self.refit_on_val_ else "validation split")


def load_model(path: str | os.PathLike[str], **kw: Any) -> Any:
    """Reload any fmadapt model directory (`cache`, `progress` as for the estimators): a Predictor, or for a
    model of several targets a multitarget.MultiTarget."""
    from .multitarget import MultiTarget, holds_targets

    if holds_targets(path):
        return MultiTarget.from_pretrained(path, **kw)
    return Predictor.from_pretrained(path, **kw)
