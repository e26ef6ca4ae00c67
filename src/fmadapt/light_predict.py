"""`fmadapt predict` without torch: a text (or sound) model whose backbone is frozen and referenced (only its linear
head is stored, e.g. `probe`), run from the backbone's remembered ONNX graph (runtime/light.py) with the head and the
calibration temperature applied in numpy; with `auto`'s n-gram TF-IDF model (runtime/ngram.py, scikit-learn)
blended in, or alone (then no graph is needed). Multi-label models (sigmoids and their thresholds), regression
models (the target's scale and intervals) and models reading table columns (their encoding, the table head or
the stacked trees) too. It writes what `predict_table` writes; anything it does not handle
exactly (ensembles, adapters, included or fine-tuned backbones, images, an interrupted save, anything that looks
wrong) returns None and the full path runs, with its own checks and messages."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: the strategies that keep the backbone frozen (adapt/: trains_backbone False) and save a linear head only
FROZEN_STRATEGIES = ("probe",)
#: the model directory versions this reader knows (artifact.FORMAT_VERSION)
FORMAT_VERSIONS = (1,)
_JOURNAL = ".fmadapt-commit.json"  # atomic.JOURNAL: an interrupted save the full path must finish first


def _read(path: Path, kind: type) -> Any:
    obj = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(obj, kind):
        raise ValueError(path)
    return obj


def _load_head(root: Path, n: int, dim: int, width: int | None = None) -> dict[str, Any] | None:
    """The head's weights (`w`, `b`), and for a model reading `width` encoded table columns its table head's
    weights (`table`) or its stacked trees (`stack`: runtime/boosted.py's arrays); None when anything differs."""
    from safetensors.numpy import load_file

    from .runtime.boosted import problem

    state = load_file(str(root / "model.safetensors"))
    w, b = state.get("head.weight"), state.get("head.bias")
    table = state.get("table_head.weight")
    stack = {k[len("stack."):]: v for k, v in state.items() if k.startswith("stack.")}
    if set(state) - {"head.weight", "head.bias", "table_head.weight"} - {f"stack.{k}" for k in stack} \
            or w is None or b is None or w.dtype != np.float32 \
            or b.dtype != np.float32 or w.shape != (n, dim) or b.shape != (n,) \
            or not (np.isfinite(w).all() and np.isfinite(b).all()):
        return None
    if width is None:
        return {"w": w, "b": b} if table is None and not stack else None
    if table is not None:
        ok = not stack and table.dtype == np.float32 and table.shape == (n, width) and np.isfinite(table).all()
        return {"w": w, "b": b, "table": table} if ok else None
    if problem(stack, n, n + width) is not None:
        return None
    return {"w": w, "b": b, "stack": stack}


def _model(root: Path) -> dict[str, Any] | None:
    """What prediction needs from a model directory the light path can run, or None."""
    from .config import FitConfig

    if not root.is_dir() or (root / _JOURNAL).exists():
        return None
    config = _read(root / "config.json", dict)
    classes = _read(root / "labels.json", list)
    bcfg = _read(root / "backbone.json", dict)
    n = config.get("num_classes")
    if (config.get("backbone_weights") != "reference" or config.get("adapter") or config.get("ensemble")
            or config.get("format_version", 1) not in FORMAT_VERSIONS or config.get("strategy") not in FROZEN_STRATEGIES
            or type(n) is not int or len(classes) != n or len(set(classes)) != n
            or not all(isinstance(c, str) for c in classes) or bcfg.get("modality") not in ("text", "audio")
            or (bcfg.get("extra") or {}).get("added_tokens")):
        return None
    ngram = config.get("ngram")  # auto's n-gram TF-IDF model and its weight in the prediction, if any
    weight = ngram.get("weight") if isinstance(ngram, dict) else (None if ngram is None else -1)
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or not 0.0 <= weight <= 1.0):
        return None
    fit = FitConfig.from_dict(config.get("fit", {}))
    if fit.strategy not in FROZEN_STRATEGIES or fit.task not in ("classification", "multilabel", "regression"):
        return None
    if bcfg.get("modality") == "audio" and (weight is not None or fit.task != "classification" or fit.features):
        return None
    task = _task_entries(fit, config, classes)
    if task is None or (fit.task != "classification" and weight is not None):
        return None
    table = None
    if fit.features or "table_features" in config:  # table columns beside the text: their encoding
        from .data.tabular import TableEncoder

        table = TableEncoder.from_dict(config["table_features"], str(root / "config.json"))
    t = (config.get("calibration") or {}).get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        return None
    return {"classes": classes, "bcfg": bcfg, "fit": fit, "temperature": float(t),
            "ngram_weight": None if weight is None else float(weight), "table": table, "task": task}


def _task_entries(fit: Any, config: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    """What the task adds to the head (persistence's checks, or None): multi-label, each label's threshold (0.5
    where none was tuned) and the separator; regression, the target's mean and std and the intervals' half-width."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if fit.task == "multilabel":
        t = config.get("thresholds")
        if t is None:
            return {"thresholds": np.full(len(classes), 0.5), "sep": fit.label_sep}
        if not (isinstance(t, dict) and set(t) == set(classes) and all(number(v) and 0 <= v <= 1 for v in t.values())):
            return None
        return {"thresholds": np.asarray([float(t[c]) for c in classes]), "sep": fit.label_sep}
    if fit.task == "regression":
        target, interval = config.get("target"), config.get("interval")
        if not (len(classes) == 1 and isinstance(target, dict) and number(target.get("mean"))
                and number(target.get("std")) and target["std"] > 0):
            return None
        half = None
        if interval is not None:
            if not (isinstance(interval, dict) and number(interval.get("halfwidth")) and interval["halfwidth"] >= 0):
                return None
            half = float(interval["halfwidth"])
        return {"mean": float(target["mean"]), "std": float(target["std"]), "halfwidth": half}
    return {} if "thresholds" not in config else None


def predict_table(model_dir: str | os.PathLike[str], data: str | os.PathLike[str], text_col: str | None = None
                  ) -> pd.DataFrame | None:
    """`load_model(model_dir).predict_table(data)` (with `text_col` overriding the training column, as
    `fmadapt predict --text`) without torch, or None when the full path must run."""
    from .data.cache import FeatureCache
    from .runtime.light import enabled, light_audio_encoder, light_encoder

    if not enabled():
        return None
    dirs = _target_dirs(Path(model_dir))
    if dirs:
        return _targets_table(dirs, data, text_col)
    try:
        m = _model(Path(model_dir))
    except Exception:  # unreadable, malformed or hostile files: the full path reports what is wrong, naming the file
        return None
    if m is None or (Path(data).is_dir() and m["bcfg"].get("modality") == "text"):
        return None
    fit, bcfg, n, weight = m["fit"], m["bcfg"], len(m["classes"]), m["ngram_weight"]
    audio = bcfg.get("modality") == "audio"
    ngram = None
    if weight is not None:
        from .runtime.ngram import NgramModel

        try:
            ngram = NgramModel.load(Path(model_dir), n)
        except Exception:
            return None
    enc = head = None
    if weight is None or weight < 1.0:  # (the n-gram model alone needs no encoder)
        enc = (light_audio_encoder if audio else light_encoder)(str(bcfg.get("name")), fit.runtime)
        # the installed backbone must be the one the model was trained on (load_model refuses it otherwise), and a
        # sound model's clips padded with the silence it was trained with
        if enc is None or enc.cfg.get("sha256") != bcfg.get("sha256") or enc.embed_dim != bcfg.get("embed_dim") \
                or (audio and enc.cfg["extra"].get("context_seconds") != bcfg["extra"].get("context_seconds")):
            return None
        try:
            head = _load_head(Path(model_dir), n, enc.embed_dim, m["table"].width if m["table"] else None)
        except Exception:
            return None
        if head is None:
            return None
    ex = _examples(data, text_col or fit.text_col, fit, "audio" if audio else "text")  # DataError: as the full path
    if m["table"] is not None and head is not None and len(ex):
        if ex.table is None:
            return None  # (the full path says which columns are missing)
        head = {**head, "rows": m["table"].transform(ex.table, ex.source)}  # (DataError names a missing column)
    try:
        feats = enc.features(ex.inputs, FeatureCache()) if enc is not None and len(ex) else None
    except Exception:  # e.g. a graph damaged since it loaded: the full path rebuilds it
        return None
    if m["fit"].task != "classification":
        return _task_table(ex, _logits(feats, head, n), m)
    if ngram is None or not len(ex):
        return _table(ex, _proba(feats, head, m["temperature"], n), m["classes"])
    from .runtime.ngram import combined

    p = combined(lambda: _proba(feats, head, 1.0, n), ngram, weight or 0.0, list(ex.inputs))  # as the full path
    return _table(ex, apply_temperature(p, m["temperature"]), m["classes"])


def _target_dirs(root: Path) -> dict[str, Path] | None:
    """A model of several targets: {name: its directory} from config.json's "targets" ({} when it is one model;
    None when the list is malformed: the full path says what is wrong)."""
    try:
        top = _read(root / "config.json", dict)
    except Exception:
        return None
    targets = top.get("targets")
    if targets is None:
        return {}
    if not (isinstance(targets, list) and targets and all(
            isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dir"), str)
            and (root / t["dir"]).resolve().is_relative_to(root.resolve()) for t in targets)):
        return None
    return {t["name"]: root / t["dir"] for t in targets}


def _targets_table(dirs: dict[str, Path] | None, data: Any, text_col: str | None) -> pd.DataFrame | None:
    """MultiTarget.predict_table: ids and texts, then each target's columns prefixed by its name, then the
    unreadable rows; None unless every target's model takes the light path."""
    if not dirs:
        return None
    tables = {}
    for name, d in dirs.items():
        t = predict_table(d, data, text_col)
        if t is None:
            return None
        tables[name] = t
    first = next(iter(tables.values()))
    n = int(first["error"].isna().sum()) if "error" in first else len(first)
    out = first.iloc[:n][["id", "text"]].reset_index(drop=True)
    for name, t in tables.items():
        for col in t.columns:
            if col not in ("id", "text", "error"):
                out[f"{name}_{col}"] = t[col].iloc[:n].tolist()
    if n < len(first):
        out = pd.concat([out, first.iloc[n:][["id", "error"]]], ignore_index=True)
    return out


def _examples(data: Any, text_col: str | None, fit: Any, modality: str = "text") -> Any:
    """data.readers.read_unlabeled of a loaded text (or sound) model (torch-free), `text_col` overriding the
    training's."""
    import dataclasses

    from .data.readers import read_unlabeled

    return read_unlabeled(modality, data, dataclasses.replace(fit, text_col=text_col))


def _proba(feats: np.ndarray | None, head: dict[str, Any] | None, temperature: float, n: int) -> np.ndarray:
    """Classifier.forward_features + softmax (float32), then the calibration temperature, as `_proba`."""
    logits = _logits(feats, head, n)
    z = logits - logits.max(1, keepdims=True) if len(logits) else logits
    e = np.exp(z)
    proba = (e / e.sum(1, keepdims=True)).astype(np.float32)
    return apply_temperature(proba, temperature)


def _logits(feats: np.ndarray | None, head: dict[str, Any] | None, n: int) -> np.ndarray:
    """Classifier.forward_features (float32); the table columns' encoded `rows` through the table head or the
    stacked trees."""
    if feats is None or head is None:
        return np.zeros((0, n), dtype=np.float32)
    logits = feats @ head["w"].T + head["b"]  # (N, C) float32
    if "table" in head:
        logits = logits + head["rows"].astype(np.float32) @ head["table"].T
    elif "stack" in head:
        from .runtime.boosted import logits as stacked

        logits = stacked(head["stack"], logits, head["rows"])
    return np.asarray(logits, dtype=np.float32)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """evaluate.calibration.apply_temperature, which imports torch (a test keeps the two equal)."""
    if temperature == 1.0 or len(proba) == 0:
        return proba
    z = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.asarray(proba).dtype)


def _task_table(ex: Any, logits: np.ndarray, m: dict[str, Any]) -> pd.DataFrame:
    """Predictor.predict_table's columns for multi-label (`pred`: the labels at or over their thresholds joined by
    the separator, `prob_<label>`: sigmoids) and regression (`pred`, and `lower`, `upper` with intervals)."""
    task, classes = m["task"], m["classes"]
    out = pd.DataFrame({"id": ex.ids})
    out["text"] = ex.inputs
    if m["fit"].task == "regression":
        pred = logits.astype(np.float64).reshape(len(logits), -1)[:, 0] * task["std"] + task["mean"]
        out["pred"] = pred.tolist()
        if task["halfwidth"] is not None:
            out["lower"], out["upper"] = (pred - task["halfwidth"]).tolist(), (pred + task["halfwidth"]).tolist()
    else:
        p = (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)
        chosen = p >= task["thresholds"]
        out["pred"] = [task["sep"].join(classes[j] for j in np.flatnonzero(row)) for row in chosen]
        for j, c in enumerate(classes):
            out[f"prob_{c}"] = p[:, j] if len(p) else []
    return _with_errors(out, ex)


def _with_errors(out: pd.DataFrame, ex: Any) -> pd.DataFrame:
    if ex.skipped:
        bad = pd.DataFrame({"id": [s.where for s in ex.skipped], "error": [s.reason for s in ex.skipped]})
        out = pd.concat([out, bad], ignore_index=True)
    return out


def _table(ex: Any, p: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The columns of Predictor.predict_table for texts (and sounds, without the text column)."""
    out = pd.DataFrame({"id": ex.ids})
    if ex.modality == "text":
        out["text"] = ex.inputs
    out["pred"] = [classes[i] for i in p.argmax(1)] if len(p) else []
    for j, c in enumerate(classes):
        out[f"prob_{c}"] = p[:, j] if len(p) else []
    return _with_errors(out, ex)


def remember_model(clf: Any, model_dir: str | os.PathLike[str]) -> None:
    """After the full path predicted with a loaded model: remember its backbone's graph when the light path could
    serve this model next time (its backbone was created by name at load and only run since)."""
    try:
        dirs = _target_dirs(Path(model_dir))
        models = list(clf.targets_.values()) if dirs else [clf]  # (several targets: each target's directory)
        if any(len(m.members_) > 1 for m in models) or any(
                _model(d) is None for d in (dirs.values() if dirs else [Path(model_dir)])):
            return
    except Exception:
        return
    from .runtime.light import remember

    remember(models[0].model_.backbone)


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory written by `fmadapt export` (rather than a model directory)."""
    return (Path(path) / "export.json").is_file() and not (Path(path) / "config.json").is_file()


def exported_table(root: str | os.PathLike[str], data: Any, text_col: str | None = None) -> pd.DataFrame:
    """`predict_table` of an exported directory (compress/exported.py's runtime, no torch): ids (+ text), `pred`,
    `prob_<class>` (regression: `lower`, `upper` with intervals), and an `error` row for each unreadable input."""
    from .compress.exported import ExportedModel
    from .config import FitConfig
    from .data.readers import read_unlabeled
    from .errors import ArtifactError

    try:
        model = ExportedModel(root)
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{root}: not a usable fmadapt export ({type(e).__name__}: {e})") from e
    features = ",".join(c["name"] for c in model.table.columns) if model.table is not None else None
    ex = read_unlabeled(model.modality, data, FitConfig(text_col=text_col, features=features) if text_col else
                        FitConfig(features=features))
    proba = model.predict_proba(list(ex.inputs), table=ex.table) if len(ex) else \
        np.zeros((0, len(model.classes)), np.float32)
    out = pd.DataFrame({"id": ex.ids})
    if ex.modality == "text":
        out["text"] = ex.inputs
    pred = model.labels_of(proba)
    out["pred"] = pred
    if model.task == "regression":
        half = (model.meta.get("interval") or {}).get("halfwidth")
        if half is not None:
            out["lower"], out["upper"] = [v - half for v in pred], [v + half for v in pred]
    else:
        for j, c in enumerate(model.classes):
            out[f"prob_{c}"] = proba[:, j]
    if ex.skipped:
        bad = pd.DataFrame({"id": [s.where for s in ex.skipped], "error": [s.reason for s in ex.skipped]})
        out = pd.concat([out, bad], ignore_index=True)
    return out
