"""Persistence and report hooks of the fitted model: save_pretrained (weights as safetensors, JSON configuration,
metrics, model card, report.html), as a mixin of `predictor.Predictor`, and read_model_dir, what
`Predictor.from_pretrained` builds from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .artifact import checked_listing, json_text, model_card, read_json, save_model, stored_temperature
from .artifact import load_model as _load_artifact
from .atomic import commit
from .config import FitConfig
from .errors import ArtifactError, DataError
from .member import Member
from .model import Classifier
from .runtime.ngram import FILES as NGRAM_FILES
from .runtime.ngram import NgramModel
from .strategies import trains_backbone


class Persisted:
    """What a fitted model saves and reloads (see `predictor.Predictor` for the attributes it uses)."""

    # (set by predictor.Predictor)
    task: str
    classes_: list[str]
    members_: list[Member]
    model_: Classifier
    config_: FitConfig
    trains_backbone_: bool
    history_: dict[str, Any]
    metrics_: dict[str, Any]
    calibration_: dict[str, Any] | None
    data_summary_: dict[str, Any]
    splits_: dict[str, Any]
    temperature_: float
    ngram_: Any
    ngram_weight_: float
    _val_proba_raw: np.ndarray | None
    thresholds_: np.ndarray | None
    target_scale_: tuple[float, float] | None
    interval_: dict[str, Any] | None
    table_encoder_: Any

    def check_fitted(self) -> Any: ...  # (predictor.Predictor)

    def save_pretrained(self, path: str | os.PathLike[str], command: str | None = None, report: bool = True
                        ) -> Path:
        """The model directory: weights (safetensors), JSON configuration and metrics, a model card and, with
        `report`, report.html (see `evaluate_validation` for its robustness, fairness and explanations)."""
        self.check_fitted()
        out = Path(path)
        members = self.members_
        metrics = {**self.metrics_,
                   **({"calibration": self.calibration_} if self.calibration_ else {})}
        data = self.data_summary_

        ngram = self.ngram_
        bcfg = members[0].model.backbone.cfg
        backbone = {"license": getattr(bcfg, "license", ""), "source": getattr(bcfg, "source", "")}

        def described(config: dict[str, Any]) -> dict[str, Any]:
            # metrics, the model card and the n-gram model go into the same commit as the weights they describe
            return {"metrics.json": json_text({**metrics, "data": data}),
                    "README.md": model_card(config, self.classes_, metrics, data, command, backbone),
                    **(ngram.files() if ngram is not None else {})}

        stale = [] if ngram is not None else list(NGRAM_FILES)  # an earlier model's n-gram model must go

        if len(members) > 1:
            # every member is a complete model directory; the top level lists them (and holds the metrics)
            listing = []
            for i, m in enumerate(members):
                self._save_member(out / "members" / str(i), m.model, m.config, m.history, m.trains_backbone)
                listing.append({"dir": f"members/{i}", "backbone": m.config.backbone, "seed": m.config.seed})
            config = {"task": self.task, "backbone": "+".join(sorted({m["backbone"] for m in listing})),
                      "strategy": self.config_.strategy, "fit": self.config_.to_dict(), "ensemble": listing,
                      "fmadapt_version": __version__, "num_classes": len(self.classes_),
                      **self._calibration_entry(), **self._ngram_entry(), **self._task_entries()}
            commit(out, {"labels.json": json_text(self.classes_), "config.json": json_text(config),
                         **described(config)}, remove=["model.safetensors", *stale])
        else:
            self._save_member(out, self.model_, self.config_, self.history_,
                              self.trains_backbone_,
                              {**self._calibration_entry(), **self._ngram_entry(), **self._task_entries()},
                              described, remove=stale)
        for name, ex in self.splits_.items():
            (out / "manifests").mkdir(exist_ok=True)
            pd.DataFrame({"id": ex.ids, "label": ex.labels}).to_csv(out / "manifests" / f"{name}.csv", index=False)
        # self-training: the unlabeled inputs the kept student trained on, with the labels it was given (a list
        # from an earlier model saved to this directory must not stay behind)
        for old in (out / "manifests").glob("pseudo_labels*.csv"):
            old.unlink()
        for i, m in enumerate(members):
            pseudo = m.pseudo
            if pseudo is not None:
                (out / "manifests").mkdir(exist_ok=True)
                name = "pseudo_labels.csv" if len(members) == 1 else f"pseudo_labels_member{i}.csv"
                pd.DataFrame({"id": [x.split(":", 1)[1] for x in pseudo.ids], "label": pseudo.labels}).to_csv(
                    out / "manifests" / name, index=False)
        if report:
            self._write_fit_report(out, command)
        return out

    def _write_fit_report(self, out: Path, command: str | None) -> None:
        from .report.run import write_fit_report

        write_fit_report(self, out, command)

    def val_proba(self) -> np.ndarray | None:
        """Calibrated validation probabilities from models that did not train on the validation split (before a
        refit on it), or None when not fitted in this session."""
        raw = self._val_proba_raw
        if raw is None:
            return None
        from .evaluate.calibration import apply_temperature

        return apply_temperature(raw, self.temperature_)

    def evaluate_validation(self, out: str | os.PathLike[str], *, robustness: bool = True, explain: bool = True,
                            groups: list[str] | None = None, group_col: str | None = None,
                            progress: bool = False) -> dict[str, Any]:
        """Robustness, fairness (with `groups`, one per validation example) and explanations on the validation
        split (or the test split of a train/val/test folder), stored in `out` (a directory written by
        save_pretrained) and rendered into its report.html."""
        from .report.run import evaluate_held_out

        return evaluate_held_out(self, out, robustness=robustness, explain=explain, groups=groups,
                                 group_col=group_col, progress=progress)

    def _calibration_entry(self) -> dict[str, Any]:
        """What config.json keeps of the calibration: the temperature that prediction applies."""
        t = self.temperature_
        cal = self.calibration_ or {}
        return {"calibration": {"method": "temperature", "temperature": t,
                                "note": cal.get("note", "")}} if t != 1.0 or cal else {}

    def _task_entries(self) -> dict[str, Any]:
        """What prediction applies besides the weights, by task (config.json): multi-label, each label's decision
        threshold ("thresholds"); regression, the target's scale ("target") and the intervals ("interval"); with
        table columns, their encoding ("table_features")."""
        out: dict[str, Any] = {}
        t = self.thresholds_
        if t is not None:
            out["thresholds"] = {c: round(float(v), 6) for c, v in zip(self.classes_, t, strict=True)}
        if self.target_scale_ is not None:
            out["target"] = {"name": self.classes_[0], "mean": self.target_scale_[0], "std": self.target_scale_[1]}
        if self.interval_ is not None:
            out["interval"] = dict(self.interval_)
        if self.table_encoder_ is not None:
            out["table_features"] = self.table_encoder_.to_dict()
        return out

    def _ngram_entry(self) -> dict[str, Any]:
        """What config.json says of an n-gram model (auto on texts): its weight in the prediction and files."""
        ngram = self.ngram_
        if ngram is None:
            return {}
        return {"ngram": {"weight": float(self.ngram_weight_), "files": list(NGRAM_FILES),
                          "features": ngram.n_features, "C": ngram.info.get("C"),
                          "note": "prediction = (1 - weight) x the model above + weight x the n-gram TF-IDF model"}}

    def _config_entry(self, model: Classifier, cfg: FitConfig, history: dict[str, Any],
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"task": self.task, "backbone": model.backbone.cfg.name, "strategy": cfg.strategy,
                "fit": cfg.to_dict(), "history": history, **(extra or {})}

    def _save_member(self, out: Path, model: Classifier, cfg: FitConfig, history: dict[str, Any],
                     trains_backbone: bool, extra: dict[str, Any] | None = None,
                     described: Any = None, remove: list[str] | None = None) -> dict[str, Any]:
        bcfg = model.backbone.cfg
        include = trains_backbone or not (bcfg.pretrained and bcfg.sha256)
        config = self._config_entry(model, cfg, history, extra)
        save_model(out, model, self.classes_, config, include_backbone=include,
                   extra_files=described(config) if described else None, remove=remove)
        return config


def read_model_dir(path: str | os.PathLike[str], modality: str | None = None) -> dict[str, Any]:
    """What a model directory holds, checked: modality, classes, config (the fit options), members, temperature,
    ngram (the n-gram model and its weight, or None). With `modality`, refused unless it is that modality's."""
    from .data.readers import ESTIMATORS

    root = Path(path)
    top = read_json(root / "config.json") if (root / "config.json").is_file() else {}
    if "targets" in top:
        names = ", ".join(str(t.get("name")) for t in top["targets"] if isinstance(t, dict))
        raise ArtifactError(f"{root} holds a model of several targets ({names}): load it with fmadapt.load_model, "
                            "or one target's directory (targets/<name>) alone")
    listing = top.get("ensemble")
    loaded = [_load_artifact(root / m["dir"]) for m in checked_listing(root, listing)] if listing else \
        [_load_artifact(root)]
    model, classes, config = loaded[0]
    if any(c != classes for _, c, _ in loaded):
        raise ArtifactError(f"{root}: the ensemble members disagree on the class names")
    found = model.backbone.cfg.modality
    if modality is not None and modality != found:
        raise DataError(f"{path} holds a {config.get('task')} model; load it with {ESTIMATORS[found]} "
                        "or fmadapt.load_model")
    members = []
    for m, _, c in loaded:
        f = FitConfig.from_dict(c.get("fit", {}))
        members.append(Member(m, f, c.get("history", {}), trains_backbone(f.strategy)))
    ngram = None
    entry = top.get("ngram")
    if entry is not None:
        weight = entry.get("weight") if isinstance(entry, dict) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise ArtifactError(f"{root / 'config.json'}: 'ngram' must give a weight between 0 and 1")
        ngram = (NgramModel.load(root, len(classes)), float(weight))
    return {"modality": found, "classes": classes, "config": FitConfig.from_dict(config.get("fit", {})),
            "members": members, "temperature": stored_temperature(root / "config.json"), "ngram": ngram,
            "thresholds": _thresholds(top.get("thresholds"), classes, root / "config.json"),
            **_regression_entries(top, root / "config.json"),
            "table_encoder": _table_encoder(top.get("table_features"), members, root / "config.json")}


def _table_encoder(entry: Any, members: list[Member], where: Path) -> Any:
    """config.json's "table_features" (the encoder of the table columns read beside the text), checked against
    each member's weights: a model with a table head or stacked trees needs it, of the width they read."""
    from .data.tabular import TableEncoder

    if entry is None:
        if any(m.model.reads_table for m in members):
            raise ArtifactError(f"{where}: the weights read table columns but 'table_features' is missing")
        return None
    encoder = TableEncoder.from_dict(entry, str(where))
    for m in members:
        head, stack = m.model.table_head, m.model.stack
        if stack is not None:  # (the trees read the text head's outputs, then the table's encoded columns)
            from .runtime.boosted import problem

            n = m.model.head.out_features
            why = problem(stack.arrays(), n, n + encoder.width)
            if why:
                raise ArtifactError(f"{where}: the stacked trees {why}")
        elif head is None or encoder.width != head.in_features:
            raise ArtifactError(f"{where}: 'table_features' encodes {encoder.width} column(s), the weights read "
                                f"{0 if head is None else head.in_features}")
    return encoder


def _regression_entries(top: dict[str, Any], where: Path) -> dict[str, Any]:
    """config.json's "target" (mean, std) and "interval" (coverage, halfwidth) of a regression model, checked."""
    import math

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    target, interval = top.get("target"), top.get("interval")
    scale = None
    if target is not None:
        if not (isinstance(target, dict) and number(target.get("mean")) and number(target.get("std"))
                and target["std"] > 0):
            raise ArtifactError(f"{where}: 'target' must give the target's mean and a positive std")
        scale = (float(target["mean"]), float(target["std"]))
    if interval is not None and not (isinstance(interval, dict) and number(interval.get("halfwidth"))
                                     and interval["halfwidth"] >= 0 and number(interval.get("coverage"))):
        raise ArtifactError(f"{where}: 'interval' must give a coverage and a half-width >= 0")
    return {"target_scale": scale, "interval": interval}


def _thresholds(entry: Any, classes: list[str], where: Path) -> np.ndarray | None:
    """config.json's "thresholds" (multi-label), checked: one number in [0, 1] per label."""
    if entry is None:
        return None
    if not isinstance(entry, dict) or set(entry) != set(classes) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in entry.values()):
        raise ArtifactError(f"{where}: 'thresholds' must give every label of labels.json a number between 0 and 1")
    return np.asarray([float(entry[c]) for c in classes])
