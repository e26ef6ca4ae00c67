"""ImageClassifier and TextClassifier: scikit-learn-style estimators over the shared pipeline."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from . import adapt
from .adapt.features import extract_features
from .adapt.labelprior import class_sentences
from .adapt.selftrain import SelfTraining
from .backbones import create_backbone
from .backbones.vocab import vocabulary_report
from .config import FitConfig
from .data.cache import FeatureCache
from .data.examples import Examples, concat, label_indices
from .data.images import default_crop, drop_unreadable, median_short_side, scan_image_folder, unlabeled_images
from .data.split import check_known, check_trainable, data_summary, stratified_split
from .data.tables import examples_from_table, infer_columns, read_table
from .errors import ConfigError, DataError, NotFittedError
from .evaluate.metrics import classification_metrics
from .member import Member
from .model import Classifier
from .persistence import Persisted
from .runtime.ngram import combined

DataLike = str | os.PathLike[str] | pd.DataFrame | list[str]


class _Classifier(SelfTraining, Persisted, ABC):
    """Shared estimator logic; subclasses say how to read their modality."""

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
        self._check_config()  # bad options fail here, not after data loading

    # -- configuration -------------------------------------------------------------------------
    def _check_config(self) -> FitConfig:
        if self.options.get("tta") and self.modality != "image":
            raise ConfigError("tta (averaging over mirror images) is for images; texts have no mirror image")
        if self.options.get("crop_pct") is not None and self.modality != "image":
            raise ConfigError("crop_pct (the share of a resized image the centre crop keeps) is for images")
        if self.options.get("max_tokens") is not None and self.modality != "text":
            raise ConfigError("max_tokens (the most tokens of a text the backbone reads) is for texts")
        if self.options.get("label_template") is not None and self.modality != "text":
            raise ConfigError("label_template (class names as prior knowledge) is for texts: the image backbones "
                              "have no text encoder to embed the names with")
        if self.strategy != "auto":
            adapt.check_strategy(self.strategy)  # unknown names fail at construction, listing the known ones
        # columns inferred from the data of the current fit fill in options the user left unset
        inferred = {k: v for k, v in getattr(self, "_inferred", {}).items() if self.options.get(k) is None}
        return FitConfig(backbone=self.backbone or self.default_backbone, strategy=self.strategy,
                         **{**self.options, **inferred})

    def _feature_cache(self) -> FeatureCache | None:
        return FeatureCache() if self.cache else None

    def _show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

    # -- data (modality-specific) --------------------------------------------------------------
    @abstractmethod
    def _load_labeled(self, data: DataLike, cfg: FitConfig) -> dict[str, Examples]:
        """{"train": ..., optionally "val"/"test": ...} with unreadable inputs already skipped."""

    @abstractmethod
    def _load_unlabeled(self, data: DataLike) -> Examples:
        """Inputs to predict on (labels ignored)."""

    def _load_pool(self, data: DataLike, cfg: FitConfig) -> Examples:
        """Unlabeled inputs for self-training, read while fitting (labels ignored)."""
        return self._load_unlabeled(data)

    # -- training ------------------------------------------------------------------------------
    def fit(self, data: DataLike, val: DataLike | None = None, *, unlabeled: DataLike | None = None,
            checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
            keep_checkpoints: bool = False) -> _Classifier:
        """Train on `data` (validation: `val`, or a stratified split of `data`).

        unlabeled: inputs without labels (an image folder or list of paths; a table or list of texts) for
        self-training: the model trained on `data` labels them, the confident ones (`pseudo_threshold`) join the
        training data of a second model, kept if it is better on the validation split. About twice
        the training time, plus predicting the unlabeled inputs (`pseudo_max` caps how many).

        checkpoint_dir: fine-tuning saves its state there at the end of every epoch and on SIGTERM (which then
        stops the run with TrainingInterrupted). resume: continue from those checkpoints (same data and
        options; the result equals an uninterrupted run's). The checkpoints are deleted when fit succeeds,
        unless keep_checkpoints (the CLI deletes them once the model directory is written)."""
        self._fitting = True
        t0 = time.perf_counter()
        if resume and checkpoint_dir is None:
            raise ConfigError("resume=True needs the checkpoint_dir of the interrupted run")
        checkpoints = None
        if checkpoint_dir is not None:
            from ._quiet import quiet_libraries
            from .train.checkpoint import RunCheckpoints

            quiet_libraries()  # (Lightning, imported just now, set its loggers to INFO: its banners stay out)
            checkpoints = RunCheckpoints(checkpoint_dir, resume=resume)
        try:
            self._fit(data, val, checkpoints, unlabeled)
            self.fit_seconds_ = round(time.perf_counter() - t0, 1)
            self.resumed_ = list(checkpoints.resumed) if checkpoints else []
            if checkpoints and not keep_checkpoints:
                checkpoints.remove()
            return self
        finally:
            self._fitting = False

    def _fit(self, data: DataLike, val: DataLike | None, checkpoints: Any = None,
             unlabeled: DataLike | None = None) -> _Classifier:
        self._inferred: dict[str, Any] = {}
        cfg = self._check_config()
        splits = self._load_labeled(data, cfg)
        train = splits["train"]
        check_trainable(train)
        # what the default crop is chosen by (every member and refit of this fit uses the same)
        self._short_side = median_short_side(train.inputs) if self.modality == "image" else None
        cfg = self._check_config()  # now with the columns inferred from the data
        if val is not None:
            splits["val"] = self._load_labeled(val, cfg)["train"]
        split_made = "val" not in splits
        if split_made:
            train, splits["val"] = stratified_split(train, cfg.val_fraction, cfg.seed)
            splits["train"] = train
        classes = sorted(set(train.labels or []))
        for name in ("val", "test"):
            if name in splits:
                check_known(splits[name], classes, name)
        if cfg.label_template:  # numeric class names are refused before any feature is computed
            class_sentences(classes, cfg.label_template)
        ctx = adapt.FitContext(classes, self._feature_cache(), self._show_progress(), checkpoints=checkpoints)
        self.classes_ = classes
        self.ngram_, self.ngram_weight_ = None, 0.0  # (auto on texts: the n-gram model and its stack weight)
        pool = self._unlabeled_pool(unlabeled, cfg, splits) if unlabeled is not None else None
        selection_metrics = None
        if cfg.strategy == "auto":
            from .auto import AutoSearch

            _member_specs(cfg, self.default_backbone)  # refuses auto + ensemble
            ranking = self._rank_backbones(cfg, train, ctx) if cfg.candidate_backbones else None
            if ranking:
                cfg = dataclasses.replace(cfg, backbone=ranking[0]["backbone"])
            cfg = dataclasses.replace(cfg, refit_full=False)  # auto retrains its winner on all data itself
            search = AutoSearch(
                cfg, self.modality,
                lambda c, tr, va: self._fit_member(c.backbone or self.default_backbone, c.seed, c, tr, va, ctx),
                lambda member: self._metrics_with(member, splits["val"]),
                _classical_hooks(self, ctx, splits["val"]) if self.modality == "text" else None)
            final, selection_metrics, history = search.run(train, splits["val"])
            self.ngram_, self.ngram_weight_ = search.ngram or (None, 0.0)
            if ranking:
                history["auto"]["backbone_ranking"] = ranking
            members = [dataclasses.replace(final, history=history)]
        else:
            specs = _member_specs(cfg, self.default_backbone)
            ctx.refit_on_val = split_made
            members = [self._fit_member(b, seed, cfg, train, splits["val"], ctx, pool) for b, seed in specs]
            if any(m.val_proba is not None for m in members):
                # a probe head refit on train + val: its honest validation figures come from before that
                # refit (or out of fold); an ensemble averages them with its other members' as at prediction
                honest = np.mean([m.val_proba if m.val_proba is not None else self._member_proba(m, splits["val"])
                                  for m in members], axis=0)
                selection_metrics = {**self.metrics_from(honest, splits["val"]), "_proba": honest}
        self.members_: list[Member] = members
        first = members[0]
        self.model_, self.config_, self.history_ = first.model, first.config, first.history
        self.trains_backbone_, vocabulary = first.trains_backbone, first.vocabulary
        if len(members) > 1:
            self.history_ = {"ensemble": [{"backbone": m.config.backbone, "seed": m.config.seed, **m.history}
                                          for m in members]}
        self.splits_ = splits
        self.temperature_ = 1.0
        val_proba = selection_metrics.pop("_proba", None) if selection_metrics is not None else None
        self.refit_on_val_ = val_proba is not None
        if val_proba is None:
            val_proba = self.proba(splits["val"])
        self._val_proba_raw = val_proba
        # calibration: fitted on the validation predictions of models that never trained on them
        self.calibration_ = self._calibrate(cfg, val_proba, splits["val"],
                                            "validation split" if selection_metrics is None else
                                            "validation split, predicted before the final refit on it")
        self.temperature_ = self.calibration_.get("temperature", 1.0)
        self.metrics_ = {}
        for name, ex in splits.items():
            if name == "val":
                # (uncalibrated probabilities: the temperature was fitted on these very predictions; the
                # calibration section compares before and after)
                self.metrics_["val"] = selection_metrics or self.metrics_from(val_proba, ex)
                self.metrics_["val"]["skipped"] = [s.to_dict() for s in ex.skipped]
            elif name != "train":
                self.metrics_[name] = self._metrics_for(ex)
        if cfg.tta and not self.refit_on_val_ and len(splits["val"]):
            # what the mirror images added, on the validation split (the refit models of refit_full trained on it)
            plain = np.mean([self._member_proba(m.with_config(tta=False), splits["val"]) for m in members],
                            axis=0)
            self.history_["tta"] = {"views": "image + horizontal mirror image, probabilities averaged",
                                    "val_accuracy": self.metrics_["val"]["accuracy"],
                                    "val_accuracy_without": self.metrics_from(plain, splits["val"])["accuracy"]}
        self.data_summary_ = data_summary(splits, split_made)
        if pool is not None:
            self.data_summary_["unlabeled"] = {**self._pool_summary,
                                               "skipped": [s.to_dict() for s in pool.skipped]}
            self.data_summary_["warnings"] = sorted({*self.data_summary_["warnings"], *pool.warnings})
        if cfg.log_to:
            from .train.loggers import log_summary, make_logger

            log_summary(make_logger(cfg.log_to, cfg.log_dir, name="fmadapt-summary"), cfg.to_dict(),
                        {f"{split}_{k}": float(m[k]) for split, m in self.metrics_.items()
                         for k in ("accuracy", "macro_f1", "ece")} | {"temperature": float(self.temperature_)})
        if vocabulary is not None:
            self.data_summary_["vocabulary"] = vocabulary
        return self

    def _fit_member(self, backbone_name: str, seed: int, cfg: FitConfig, train: Examples, val: Examples,
                    ctx: adapt.FitContext, pool: Examples | None = None) -> Member:
        """One trained model; with an unlabeled `pool`, the better on `val` of that model and its self-trained
        student."""
        cfg = dataclasses.replace(cfg, backbone=backbone_name, seed=seed, ensemble=1, ensemble_backbones=None)
        torch.manual_seed(seed)
        backbone = create_backbone(backbone_name)
        crop: dict[str, Any] | None = None  # how a default crop_pct was chosen (images, crop_pct unset)
        strategy = adapt.get_strategy(cfg.strategy)
        tokens = None  # how max_tokens was chosen (texts)
        if backbone.cfg.modality == "image":
            # Small images are upscaled to the backbone's size by default: on 28 px Fashion-MNIST no smaller
            # input was as accurate (probe: 64 px 79.6 %, 128 px 81.0 %, 224 px 83.7 %; benchmarks/
            # throughput.md); `image_size` trades that for speed. The resolved value is what gets saved.
            size = cfg.image_size or backbone.cfg.input_size
            crop = None if cfg.crop_pct is not None else default_crop(self._short_side, size, backbone.cfg.crop_pct)
            backbone.set_image_size(size, cfg.crop_pct if crop is None else float(crop["crop_pct"]))
            cfg = dataclasses.replace(cfg, image_size=backbone.cfg.input_size, crop_pct=backbone.cfg.crop_pct)
        elif backbone.cfg.modality == "text" and (cfg.max_tokens or strategy.max_tokens):
            # (saved in backbone.json, which loading applies; never above what the backbone can read)
            limit = cfg.max_tokens or strategy.max_tokens
            backbone.cfg.max_tokens = min(int(limit), backbone.cfg.max_tokens)  # type: ignore[arg-type]
            tokens = {"max_tokens": backbone.cfg.max_tokens, "chosen_by": "given (max_tokens)" if cfg.max_tokens else
                      f"the {cfg.strategy} default ({strategy.max_tokens}; the backbone's limit when lower)"}
            cfg = dataclasses.replace(cfg, max_tokens=backbone.cfg.max_tokens)
        if backbone.cfg.modality != self.modality:
            raise DataError(f"backbone {backbone.cfg.name!r} is a {backbone.cfg.modality} backbone; "
                            f"{type(self).__name__} needs a {self.modality} one")
        vocabulary = (vocabulary_report(backbone, train, cfg, strategy.trains_backbone)
                      if backbone.cfg.modality == "text" else None)
        model = Classifier(backbone, len(ctx.classes), cfg.dropout)
        history = strategy.fit(model, train, val, cfg, ctx)
        if crop is not None:
            history["image_crop"] = crop
        if tokens is not None:
            history["text_tokens"] = tokens
        model.eval()
        member = Member(model, cfg, history, strategy.trains_backbone, vocabulary,
                        val_proba=history.pop("_val_proba", None))
        if pool is not None:
            return self._self_train(backbone_name, seed, cfg, train, val, pool, ctx, member)
        if cfg.refit_full and ctx.refit_on_val and "best_epoch" in history and cfg.strategy != "contrastive":
            return self._refit_full(backbone_name, seed, cfg, train, val, ctx, member)
        return member

    def _refit_full(self, backbone_name: str, seed: int, cfg: FitConfig, train: Examples, val: Examples,
                    ctx: adapt.FitContext, first: Member) -> Member:
        """`refit_full`: the validation split has chosen the number of epochs; train again from the pretrained
        weights on training + validation data for that many epochs and keep the last weights. The validation
        figures and the calibration come from the first model, which never saw the validation split."""
        history = first.history
        best = int(history["best_epoch"])
        summary = {"selection_epochs": history.get("epochs"), "selection_best_epoch": best,
                   "selection_fit_seconds": history.get("fit_seconds")}
        if best < 0:  # no epoch beat the probe start, which a longer run would not change: keep the model
            history["refit_full"] = {**summary, "note": "not retrained: no epoch beat the starting point"}
            return first
        honest = self._member_proba(first, val)
        del first
        # the probe that starts fine-tuning (LP-FT) keeps the C and class weighting chosen on the clean split:
        # chosen again on a validation split the model trains on, it would pick the least regularised head
        weighted = (history.get("imbalance") or {}).get("weighted")
        full_cfg = dataclasses.replace(cfg, epochs=best + 1, restore_best=False, refit_full=False,
                                       probe_c=history.get("probe_C") or cfg.probe_c,
                                       class_weight=cfg.class_weight if weighted is None else
                                       ("balanced" if weighted else "none"))
        refit = self._fit_member(backbone_name, seed, full_cfg, concat(train, val), val, ctx)
        history = refit.history
        by = cfg.metric if cfg.select_by == "metric" else cfg.select_by
        history["refit_full"] = {**summary, "note": f"retrained on training + validation data "
                                 f"({len(train) + len(val)} examples) for {best + 1} epoch(s), the number that gave "
                                 f"the best validation {by}; last weights kept"}
        return dataclasses.replace(refit, config=cfg, val_proba=honest)

    def _rank_backbones(self, cfg: FitConfig, train: Examples, ctx: adapt.FitContext) -> list[dict[str, Any]]:
        """LogME of each candidate backbone's frozen features on the training split, best first (the features
        land in the cache, so the probe candidate of the chosen backbone reuses them)."""

        from .evaluate.transferability import logme

        y = np.asarray(ctx.targets(train))
        rows = []
        for name in [b.strip() for b in (cfg.candidate_backbones or "").split(",") if b.strip()]:
            t = time.perf_counter()
            bb = create_backbone(name)
            if bb.cfg.modality != self.modality:
                raise ConfigError(f"candidate backbone {name!r} is a {bb.cfg.modality} backbone; "
                                  f"{type(self).__name__} needs a {self.modality} one")
            if bb.cfg.modality == "image":
                bb.set_image_size(cfg.image_size or bb.cfg.input_size, cfg.crop_pct)
            feats = extract_features(bb, train, cache=ctx.cache, runtime=cfg.runtime, progress=ctx.progress,
                                     desc=f"{name} features")
            rows.append({"backbone": name, "logme": round(logme(feats, y), 4),
                         "seconds": round(time.perf_counter() - t, 1)})
        return sorted(rows, key=lambda r: -r["logme"])

    def _calibrate(self, cfg: FitConfig, proba: np.ndarray, val: Examples, source: str) -> dict[str, Any]:
        if not cfg.calibrate or len(val) == 0:
            return {"temperature": 1.0, "fitted": False,
                    "note": "off (calibrate=False)" if not cfg.calibrate else "no validation data"}
        from .evaluate.calibration import calibrate

        return calibrate(proba, self.encode_labels(val.labels), source)

    # -- inference -----------------------------------------------------------------------------
    def check_fitted(self) -> None:
        """Raises NotFittedError unless fitted (or loaded)."""
        if not hasattr(self, "model_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() or from_pretrained()")

    def proba(self, ex: Examples, calibrated: bool = True) -> np.ndarray:
        """(N, C) probabilities of loaded examples (`read_inputs`, `read_labeled`), columns in the order of
        `classes_`: an ensemble averages its members', an n-gram model is blended in, the calibration
        temperature applied unless `calibrated=False`. A frozen backbone goes through the feature cache."""
        self.check_fitted()
        if len(ex) == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        proba = combined(lambda: np.mean([self._member_proba(m, ex) for m in self.members_], axis=0),
                         getattr(self, "ngram_", None), getattr(self, "ngram_weight_", 0.0), list(ex.inputs))
        t = getattr(self, "temperature_", 1.0)
        if t != 1.0 and calibrated:
            from .evaluate.calibration import apply_temperature

            proba = apply_temperature(proba, t)
        return proba

    def _member_proba(self, member: Member, ex: Examples) -> np.ndarray:
        """(N, C) probabilities of one model; with `tta` the mean over the images and their mirror images."""
        model, cfg = member.model, member.config
        cache = self._feature_cache() if not member.trains_backbone else None
        views = []
        for flip in (False, True) if cfg.tta and ex.modality == "image" else (False,):
            feats = extract_features(model.backbone, ex, batch_size=64, cache=cache, flip=flip,
                                     progress=self._show_progress(), desc="predicting", runtime=cfg.runtime)
            with torch.inference_mode():
                logits = model.forward_features(torch.from_numpy(feats).to(model.head.weight.device))
                views.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return views[0] if len(views) == 1 else np.mean(views, axis=0)

    def encode_labels(self, labels: Any, unknown: int | None = None) -> np.ndarray:
        """Class indices (int64) of `labels`, in the order of `classes_` (the columns of `predict_proba`); a
        label the model does not know raises KeyError, or maps to `unknown` when given."""
        if not hasattr(self, "classes_"):
            self.check_fitted()  # (classes_ is set as fit starts: auto's candidates are scored with it)
        return label_indices(self.classes_, labels, unknown)

    def predict_proba(self, data: DataLike) -> pd.DataFrame:
        """One row per readable input (index = path or row id), columns `prob_<class>`."""
        ex = self._load_unlabeled(data)
        p = self.proba(ex)
        return pd.DataFrame(p, index=pd.Index(ex.ids, name="id"), columns=[f"prob_{c}" for c in self.classes_])

    def predict(self, data: DataLike) -> np.ndarray:
        ex = self._load_unlabeled(data)
        p = self.proba(ex)
        return np.asarray(self.classes_, dtype=object)[p.argmax(1)] if len(p) else np.array([], dtype=object)

    def predict_table(self, data: DataLike) -> pd.DataFrame:
        """What `fmadapt predict` writes: ids (+ text), `pred`, `prob_<class>`, and a row with an `error`
        for every input that could not be read, so nothing silently disappears."""
        ex = self._load_unlabeled(data)
        p = self.proba(ex)
        out = pd.DataFrame({"id": ex.ids})
        if ex.modality == "text":
            out["text"] = ex.inputs
        out["pred"] = [self.classes_[i] for i in p.argmax(1)] if len(p) else []
        for j, c in enumerate(self.classes_):
            out[f"prob_{c}"] = p[:, j] if len(p) else []
        if ex.skipped:
            bad = pd.DataFrame({"id": [s.where for s in ex.skipped], "error": [s.reason for s in ex.skipped]})
            out = pd.concat([out, bad], ignore_index=True)
        return out

    def read_inputs(self, data: DataLike) -> Examples:
        """The inputs of `data` (as `predict` takes it) loaded for `proba`; unreadable ones are listed in
        `skipped`, labels ignored."""
        self.check_fitted()
        return self._load_unlabeled(data)

    def read_labeled(self, data: DataLike) -> Examples:
        """Labeled data (as `evaluate` takes it: for a folder with a test/ split, that split) loaded for
        `proba` and `metrics_from`; a label the model does not know is refused."""
        self.check_fitted()
        splits = self._load_labeled(data, self.config_)
        name = next(n for n in ("test", "val", "train") if n in splits)
        ex = splits[name]
        check_known(ex, self.classes_, "evaluation data")
        return ex

    def _metrics_for(self, ex: Examples) -> dict[str, Any]:
        return self.metrics_from(self.proba(ex), ex)

    def _metrics_with(self, member: Member, ex: Examples) -> dict[str, Any]:
        """Metrics of one model that is not (yet) this estimator's (auto-search candidates)."""
        if len(ex) == 0:
            return self.metrics_from(np.zeros((0, len(self.classes_)), dtype=np.float32), ex)
        proba = self._member_proba(member, ex)
        # "_proba": kept by the caller for calibration (popped before anything is saved)
        return {**self.metrics_from(proba, ex), "_proba": proba}

    def metrics_from(self, proba: np.ndarray, ex: Examples) -> dict[str, Any]:
        """The metrics of `evaluate` (accuracy, macro-F1, per class, calibration error...) for probabilities
        of the labeled examples `ex` (from `proba`), with the inputs `ex` skipped."""
        y = self.encode_labels(ex.labels)
        m = classification_metrics(y, proba, self.classes_)
        m["skipped"] = [s.to_dict() for s in ex.skipped]
        return m

    def evaluate(self, data: DataLike) -> dict[str, Any]:
        """Metrics on labeled data (for an image folder with a test/ split, on that split)."""
        return self.evaluate_examples(self.read_labeled(data))[0]

    def evaluate_examples(self, ex: Examples) -> tuple[dict[str, Any], np.ndarray]:
        """`evaluate` on loaded examples: (metrics, the calibrated probabilities they came from)."""
        t = getattr(self, "temperature_", 1.0)
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
        return float(self.evaluate(data)["accuracy"])

    def validation_note(self) -> str:
        """What the validation figures are (the report's words): honest, or optimistic after a refit on them."""
        return ("validation split; the final model was refit on it after choosing, so its accuracy here is "
                "optimistic (fairness and mistakes use the predictions from before the refit). For held-out "
                "figures run `fmadapt evaluate MODEL TEST_DATA --robustness`"
                if getattr(self, "refit_on_val_", False) else "validation split")


class ImageClassifier(_Classifier):
    """Classify images. Data: a folder `root/<class>/…` or `root/{train,val,test}/<class>/…`."""

    modality = "image"
    task = "image-classification"
    default_backbone = "efficientnet_lite0"

    def _load_labeled(self, data: DataLike, cfg: FitConfig) -> dict[str, Examples]:
        if isinstance(data, (pd.DataFrame, list)):
            raise DataError("ImageClassifier reads a folder: root/<class>/<images> or root/{train,val,test}/<class>/")
        folder = scan_image_folder(data)
        return {name: drop_unreadable(ex) for name, ex in folder.splits.items()}

    def _load_unlabeled(self, data: DataLike) -> Examples:
        if isinstance(data, list):
            ex = Examples(inputs=[str(p) for p in data], labels=None, ids=[str(p) for p in data],
                          source="<list>", modality="image")
        elif isinstance(data, pd.DataFrame):
            raise DataError("ImageClassifier.predict takes a folder, a file or a list of image paths")
        else:
            ex = unlabeled_images(data)
        return drop_unreadable(ex)


class TextClassifier(_Classifier):
    """Classify texts. Data: CSV, TSV, JSONL, Parquet or a DataFrame with a text and a label column."""

    modality = "text"
    task = "text-classification"
    default_backbone = "minilm-l6"

    def _table(self, data: DataLike, need_label: bool, cfg: FitConfig) -> Examples:
        df, source = read_table(data, encoding=cfg.encoding, header=cfg.header)
        want_label = cfg.label_col if need_label else None
        note = None
        try:
            text, label = infer_columns(df, cfg.text_col, want_label, source, need_label=need_label)
        except DataError as first:
            if (need_label and getattr(self, "_fitting", False)) or not (hasattr(self, "model_") or
                                                                          getattr(self, "_fitting", False)):
                raise
            # new data for a trained model may name its columns differently (SST-2's test file says
            # "content" where training said "sentence"): accept an unambiguous match, say so
            try:
                text, label = infer_columns(df, None, None, source, need_label=need_label)
            except DataError:
                raise first from None
            note = (f"{source}: columns {cfg.text_col!r}/{cfg.label_col!r} of training not found; "
                    f"using {text!r}" + (f"/{label!r}" if need_label else ""))
            warnings.warn(note, stacklevel=3)
        if need_label and getattr(self, "_fitting", False):
            self._inferred = {"text_col": text, "label_col": label}
        ex = examples_from_table(df, source, text, label)
        if note:
            ex.warnings.append(note)
        return ex

    def _load_labeled(self, data: DataLike, cfg: FitConfig) -> dict[str, Examples]:
        if isinstance(data, list):
            raise DataError("TextClassifier.fit needs labels: pass a table (path or DataFrame)")
        return {"train": self._table(data, need_label=True, cfg=cfg)}

    def _load_unlabeled(self, data: DataLike) -> Examples:
        if isinstance(data, list):
            return Examples(inputs=[str(t) for t in data], labels=None, ids=[str(i) for i in range(len(data))],
                            source="<list>", modality="text")
        self.check_fitted()
        return self._table(data, need_label=False, cfg=self.config_)

    def _load_pool(self, data: DataLike, cfg: FitConfig) -> Examples:
        if isinstance(data, list):
            return self._load_unlabeled(data)
        return self._table(data, need_label=False, cfg=cfg)


def _member_specs(cfg: FitConfig, default_backbone: str) -> list[tuple[str, int]]:
    """(backbone, seed) of every model to train: one, or each ensemble backbone x `ensemble` seeds."""
    names = ([b.strip() for b in cfg.ensemble_backbones.split(",") if b.strip()] if cfg.ensemble_backbones
             else [cfg.backbone or default_backbone])
    if cfg.strategy == "auto" and (cfg.ensemble > 1 or len(names) > 1):
        raise ConfigError("strategy 'auto' chooses one model: it does not combine with ensembles")
    if cfg.ensemble > 1 and cfg.strategy == "probe" and len(names) == 1:
        raise ConfigError("a probe is deterministic: an ensemble over seeds would repeat one model; ensemble "
                          "over backbones (ensemble_backbones) or use a fine-tuning strategy")
    return [(b, cfg.seed + i) for b in names for i in range(cfg.ensemble)]


def _classical_hooks(clf: _Classifier, ctx: adapt.FitContext, val: Examples) -> Any:
    """What `auto`'s classical text candidates need from the estimator (auto.AutoSearch)."""
    from types import SimpleNamespace

    from .adapt.probe import out_of_fold

    def targets(ex: Examples) -> np.ndarray:
        return label_indices(ctx.classes, ex.labels)

    return SimpleNamespace(
        n_classes=len(ctx.classes), targets=targets,
        metrics=lambda p: {**clf.metrics_from(p, val), "_proba": p},
        probe_out_of_fold=lambda m, ex, folds: out_of_fold(m.model, ex, targets(ex), m.config, ctx, m.history,
                                                           folds))


def load_model(path: str | os.PathLike[str], **kw: Any) -> _Classifier:
    """Reload any fmadapt model directory as the right estimator."""
    return _Classifier.from_pretrained(path, **kw)
