"""The fit pipeline: data -> split -> strategy (one model, an ensemble, `auto`'s search, self-training, a refit on
all data) -> calibration, returning the fitted model (predictor.Predictor). The estimators (estimators.py) are a
scikit-learn-style facade over this and the Predictor."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from . import adapt
from .adapt.labelprior import class_sentences
from .adapt.selftrain import SelfTraining
from .backbones import create_backbone
from .backbones.vocab import vocabulary_report
from .config import FitConfig
from .data.examples import Examples, concat, label_indices
from .data.images import default_crop, median_short_side
from .data.readers import ESTIMATORS, DataLike, read_labeled, read_unlabeled
from .data.split import (
    check_known,
    check_trainable_multilabel,
    check_trainable_regression,
    data_summary,
    random_split,
    split_by_ids,
    stratified_split,
)
from .errors import ConfigError, DataError
from .member import Member
from .model import Classifier
from .options import resolve_name
from .predictor import Predictor
from .runtime.features import extract_features
from .tasks.fitsteps import check_classes, label_warnings, set_intervals, set_thresholds, table_encoder
from .tasks.multilabel import label_names, sets_of


def build_config(modality: str, backbone: str | None, strategy: str, options: dict[str, Any],
                 default_backbone: str, inferred: dict[str, Any] | None = None) -> FitConfig:
    """The FitConfig of an estimator's arguments, refusing options of another modality and unknown strategies;
    `inferred` (columns found in the data of the current fit) fills in options the user left unset."""
    if strategy != "auto":
        adapt.check_strategy(strategy)  # unknown names fail at construction, listing the known ones
    inferred = {k: v for k, v in (inferred or {}).items() if options.get(k) is None}
    for key in options:  # an unknown keyword is a ConfigError naming it (and what it may have meant)
        if key != "extra":  # (FitConfig's free-form dict, not an option)
            resolve_name(key, f"{ESTIMATORS[modality]}(...)")
    cfg = FitConfig(backbone=backbone or default_backbone, strategy=strategy, **{**options, **inferred})
    cfg.check(modality)  # the rules between options, and between options and the modality
    return cfg


class FitRun(SelfTraining):
    """One fit of an estimator's options on the user's data (`run` returns the fitted model)."""

    def __init__(self, modality: str, default_backbone: str, config: Any, *, cache: Any = True,
                 progress: bool | None = None, checkpoints: Any = None) -> None:
        #: config(inferred columns) -> FitConfig (the estimator's options, checked)
        self.modality, self.default_backbone, self.config = modality, default_backbone, config
        self.cache, self.progress, self.checkpoints = cache, progress, checkpoints
        self.inferred: dict[str, Any] = {}
        #: several targets (multitarget.py): the ids (table rows) of the validation split all targets share, and
        #: the backbones already built (by name), which a frozen-backbone fit reuses
        self.val_ids: frozenset[str] | None = None
        self.backbones: dict[str, Any] | None = None
        self.target_columns: list[str] | None = None  # (all of them: none is a table feature of another)
        #: several targets fine-tuned together, by (backbone, seed) of each member: (the trained Classifier, this
        #: target's rows of its heads (weight, bias, table weight), the joint run's history[, with refit_full (the
        #: run before the refit, its heads), which the validation figures come from]): trained no further
        self.tuned: dict[tuple[str, int], tuple[Any, ...]] | None = None
        #: ... with table columns beside the text (`features`): the joint run's encoding of them, which the
        #: target's table head was trained on (instead of one fitted on this target's training rows)
        self.table_encoder: Any = None

    # -- what self-training and auto use of the model being fitted ----------------------------------
    @property
    def classes_(self) -> list[str]:
        return self.predictor.classes_

    def _member_proba(self, member: Member, ex: Examples) -> np.ndarray:
        return self.predictor.member_proba(member, ex)

    def encode_labels(self, labels: Any) -> np.ndarray:
        return self.predictor.encode_labels(labels)

    def _load_pool(self, data: DataLike, cfg: FitConfig) -> Examples:
        """Unlabeled inputs for self-training (labels ignored; a table's columns as in the labeled data)."""
        return read_unlabeled(self.modality, data, cfg)

    def _labeled(self, data: DataLike, cfg: FitConfig) -> dict[str, Examples]:
        splits, inferred = read_labeled(self.modality, data, cfg, fitting=True)
        self.inferred = self.inferred or inferred  # (the training data's columns; validation data must match)
        return splits

    # -- the pipeline --------------------------------------------------------------------------
    def run(self, data: DataLike, val: DataLike | None, unlabeled: DataLike | None = None) -> Predictor:
        cfg = self.config(None)  # (build_config checked the rules between options and with the modality)
        if unlabeled is not None:
            cfg.check(unlabeled=True)  # the rules with unlabeled data, before any data is read
        splits = self._labeled(data, cfg)
        train = splits["train"]
        sep = cfg.label_sep if cfg.task == "multilabel" else None  # multi-label: the labels' separator
        regression = cfg.task == "regression"
        if regression:
            check_trainable_regression(train)
        elif sep is None:
            check_classes(train)
        else:
            check_trainable_multilabel(train, sep)
        # what the default crop is chosen by (every member and refit of this fit uses the same)
        self._short_side = median_short_side(train.inputs) if self.modality == "image" else None
        cfg = self.config(self.inferred)  # now with the columns inferred from the data
        if val is not None:
            splits["val"] = self._labeled(val, cfg)["train"]
        split_made = "val" not in splits
        if split_made and self.val_ids is not None:  # the split the other targets of this table use
            train, splits["val"] = split_by_ids(train, self.val_ids, str(cfg.label_col))
            splits["train"] = train
        elif split_made:
            train, splits["val"] = (stratified_split if sep is None and not regression else random_split)(
                train, cfg.val_fraction, cfg.seed, cfg.split_groups)
            splits["train"] = train
        scale = None
        if regression:  # one output: the standardised target
            classes = [str(cfg.label_col or "target")]
            y = np.asarray([float(v) for v in train.labels or []])
            scale = (float(y.mean()), float(y.std()) or 1.0)
        elif sep is None:
            classes = sorted(set(train.labels or []))
            for name in ("val", "test"):
                if name in splits:
                    check_known(splits[name], classes, name)
        else:
            classes = label_names(sets_of(train.labels or [], sep))
            label_warnings(splits, classes, sep)
        if cfg.label_template:  # numeric class names are refused before any feature is computed
            class_sentences(classes, cfg.label_template)
        self.predictor = out = Predictor(self.modality, classes, cfg, cache=self.cache, progress=self.progress)
        out.target_scale_ = scale
        out.table_encoder_ = self.table_encoder or (table_encoder(cfg, train, self.target_columns) if cfg.features
                                                    else None)
        ctx = adapt.FitContext(classes, out.feature_cache(), out.show_progress(), checkpoints=self.checkpoints,
                               label_sep=sep, target_scale=scale, table=out.table_encoder_)
        pool = self._unlabeled_pool(unlabeled, cfg, splits) if unlabeled is not None else None
        selection_metrics = None
        if cfg.strategy == "auto":
            from .auto import AutoSearch, Unlabeled

            ranking = self._rank_backbones(cfg, train, ctx) if cfg.candidate_backbones else None
            if ranking:
                cfg = dataclasses.replace(cfg, backbone=ranking[0]["backbone"])
            cfg = dataclasses.replace(cfg, refit_full=False)  # auto retrains its winner on all data itself
            search = AutoSearch(
                cfg, self.modality,
                lambda c, tr, va: self._fit_member(c.backbone or self.default_backbone, c.seed, c, tr, va, ctx),
                lambda member: out.metrics_with(member, splits["val"]), self._classical_hooks(ctx, splits["val"])
                if self.modality == "text" and sep is None and not regression else None,
                Unlabeled(pool, self._member_proba, ctx.classes) if pool is not None else None, self.default_backbone)
            final, selection_metrics, history = search.run(train, splits["val"])
            out.ngram_, out.ngram_weight_ = search.ngram or (None, 0.0)
            if ranking:
                history["auto"]["backbone_ranking"] = ranking
            members = [dataclasses.replace(final, history=history)]
        else:
            ctx.refit_on_val = split_made
            members = [self._fit_member(b, seed, cfg, train, splits["val"], ctx, pool)
                       for b, seed in member_specs(cfg, self.default_backbone)]
            if any(m.val_proba is not None for m in members):
                # a probe head refit on train + val: its honest validation figures come from before that
                # refit (or out of fold); an ensemble averages them with its other members' as at prediction
                honest = np.mean([m.val_proba if m.val_proba is not None else out.member_proba(m, splits["val"])
                                  for m in members], axis=0)
                selection_metrics = {**out.metrics_from(honest, splits["val"]), "_proba": honest}
        out.set_members(members)
        first = members[0]
        out.config_, out.history_ = first.config, first.history
        if len(members) > 1:
            out.history_ = {"ensemble": [{"backbone": m.config.backbone, "seed": m.config.seed, **m.history}
                                         for m in members]}
        out.splits_ = splits
        val_proba = selection_metrics.pop("_proba", None) if selection_metrics is not None else None
        out.refit_on_val_ = val_proba is not None
        if val_proba is None:
            val_proba = out.proba(splits["val"])
        out._val_proba_raw = val_proba
        # calibration: fitted on the validation predictions of models that never trained on them
        source = ("validation split" if selection_metrics is None else
                  "validation split, predicted before the final refit on it")
        if regression:  # prediction intervals from the same honest predictions
            out.calibration_ = {"temperature": 1.0, "fitted": False,
                                "note": "regression: no temperature; prediction intervals by split conformal "
                                        "prediction on the validation predictions instead"}
            set_intervals(out, val_proba, out.encode_labels(splits["val"].labels), cfg.coverage, source)
            selection_metrics = None
        elif sep is None:
            out.calibration_ = self._calibrate(cfg, val_proba, splits["val"], source)
        else:  # one threshold per label, tuned on the same honest predictions a temperature would be fitted on
            out.calibration_ = {"temperature": 1.0, "fitted": False,
                                "note": "multi-label: no temperature; each label's decision threshold is tuned on "
                                        "the validation predictions instead"}
            set_thresholds(out, val_proba, ctx.indicator(splits["val"]), source)
            selection_metrics = None  # (the metrics at the tuned thresholds, below)
        out.temperature_ = out.calibration_.get("temperature", 1.0)
        self._measure(out, cfg, splits, selection_metrics, val_proba)
        out.data_summary_ = data_summary(splits, split_made, sep, regression)
        out.data_summary_.update(out.history_.pop("data_summary", None) or {})  # (trained on data never read here)
        if out.table_encoder_ is not None:
            out.data_summary_["table_features"] = {
                "columns": [c["name"] for c in out.table_encoder_.columns], "encoded": out.table_encoder_.names()}
        if pool is not None:
            out.data_summary_["unlabeled"] = {**self._pool_summary, "skipped": [s.to_dict() for s in pool.skipped]}
            out.data_summary_["warnings"] = sorted({*out.data_summary_["warnings"], *pool.warnings})
        if cfg.log_to:
            from .train.loggers import log_summary, make_logger

            log_summary(make_logger(cfg.log_to, cfg.log_dir, name="fmadapt-summary"), cfg.to_dict(),
                        {f"{split}_{k}": float(m[k]) for split, m in out.metrics_.items()
                         for k in ("accuracy", "macro_f1", "ece", "micro_f1", "rmse", "r2") if m.get(k) is not None}
                        | {"temperature": float(out.temperature_)})
        if first.vocabulary is not None:
            out.data_summary_["vocabulary"] = first.vocabulary
        return out

    def _measure(self, out: Predictor, cfg: FitConfig, splits: dict[str, Examples],
                 selection_metrics: dict[str, Any] | None, val_proba: np.ndarray) -> None:
        """The fitted model's metrics on each split but training (and what test-time mirroring added)."""
        for name, ex in splits.items():
            if name == "val":
                # (uncalibrated probabilities: the temperature was fitted on these very predictions; the
                # calibration section compares before and after)
                out.metrics_["val"] = selection_metrics or out.metrics_from(val_proba, ex)
                out.metrics_["val"]["skipped"] = [s.to_dict() for s in ex.skipped]
            elif name != "train":
                out.metrics_[name] = out.metrics_from(out.proba(ex), ex)
        if cfg.tta and not out.refit_on_val_ and len(splits["val"]):
            # what the mirror images added, on the validation split (the refit models of refit_full trained on it)
            plain = np.mean([out.member_proba(m.with_config(tta=False), splits["val"]) for m in out.members_],
                            axis=0)
            out.history_["tta"] = {"views": "image + horizontal mirror image, probabilities averaged",
                                   "val_accuracy": out.metrics_["val"]["accuracy"],
                                   "val_accuracy_without": out.metrics_from(plain, splits["val"])["accuracy"]}

    def _fit_member(self, backbone_name: str, seed: int, cfg: FitConfig, train: Examples, val: Examples,
                    ctx: adapt.FitContext, pool: Examples | None = None) -> Member:
        """One trained model; with an unlabeled `pool`, the better on `val` of that model and its self-trained
        student."""
        cfg = dataclasses.replace(cfg, backbone=backbone_name, seed=seed, ensemble=1, ensemble_backbones=None)
        torch.manual_seed(seed)
        if self.tuned is not None:  # several targets fine-tuned together: this target's head on their backbone
            trained, heads, joint_history, *before = self.tuned[(backbone_name, seed)]
            member = Member(self._with_head(trained, heads, cfg, ctx), cfg, dict(joint_history), True)
            if before and before[0] is not None:  # refit_full: the validation figures come from the run before it
                first, first_heads = before[0]
                honest = self._member_proba(Member(self._with_head(first, first_heads, cfg, ctx), cfg, {}, True), val)
                member = dataclasses.replace(member, val_proba=honest)
            return member
        strategy = adapt.get_strategy(cfg.strategy)
        # several targets on a frozen text backbone: built once, for all of them
        shared = self.backbones if not strategy.trains_backbone and self.modality == "text" else None
        backbone = shared[backbone_name] if shared and backbone_name in shared else create_backbone(backbone_name)
        if shared is not None:
            shared[backbone_name] = backbone
        crop: dict[str, Any] | None = None  # how a default crop_pct was chosen (images, crop_pct unset)
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
                            f"{ESTIMATORS[self.modality]} needs a {self.modality} one")
        vocabulary = (vocabulary_report(backbone, train, cfg, strategy.trains_backbone)
                      if backbone.cfg.modality == "text" else None)
        model = Classifier(backbone, len(ctx.classes), cfg.dropout, table_dim=ctx.table.width if ctx.table else 0)
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

    @staticmethod
    def _with_head(trained: Any, heads: tuple[Any, Any, Any], cfg: FitConfig, ctx: adapt.FitContext) -> Classifier:
        """A joint run's network with one target's rows of its heads (weight, bias, table weight), frozen."""
        weight, bias, table_weight = heads
        model = Classifier(trained.backbone, len(ctx.classes), cfg.dropout,
                           table_dim=ctx.table.width if ctx.table else 0)
        if tuple(weight.shape) != tuple(model.head.weight.shape) or (table_weight is None) != (ctx.table is None):
            raise RuntimeError(f"the joint head's rows for this target are {tuple(weight.shape)}, its head "
                               f"{tuple(model.head.weight.shape)}")
        with torch.no_grad():
            model.head.weight.copy_(weight)
            model.head.bias.copy_(bias)
            if model.table_head is not None:
                model.table_head.weight.copy_(table_weight)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

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
                                 f"({len(train) + len(val)} examples) for {best + 1} epoch(s), those of the weights "
                                 f"kept on validation {by} (keep={cfg.keep}); last weights kept"}
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
                                  f"{ESTIMATORS[self.modality]} needs a {self.modality} one")
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

    def _classical_hooks(self, ctx: adapt.FitContext, val: Examples) -> Any:
        """What `auto`'s classical text candidates need from the fit (auto.AutoSearch)."""
        from types import SimpleNamespace

        from .adapt.probe import out_of_fold

        def targets(ex: Examples) -> np.ndarray:
            return label_indices(ctx.classes, ex.labels)

        return SimpleNamespace(
            n_classes=len(ctx.classes), targets=targets,
            metrics=lambda p: {**self.predictor.metrics_from(p, val), "_proba": p},
            probe_out_of_fold=lambda m, ex, folds: out_of_fold(m.model, ex, targets(ex), m.config, ctx, m.history,
                                                               folds))


def member_specs(cfg: FitConfig, default_backbone: str) -> list[tuple[str, int]]:
    """(backbone, seed) of every model to train: one, or each ensemble backbone x `ensemble` seeds."""
    names = cfg.backbone_names(default_backbone)
    return [(b, cfg.seed + i) for b in names for i in range(cfg.ensemble)]
