"""A model directory's evaluations and its report.html: what `fit`, `evaluate` and `fmadapt report` share.

Everything the report shows is stored in the model directory first, as JSON, so `fmadapt report RUN_DIR`
re-renders it at any time without the data or a model run:
  config.json (fit configuration, training history, temperature), metrics.json (per split, data summary,
  calibration), run.json (command, time, environment), evaluation/<source>/{metrics,robustness,fairness,
  explanations,misclassified}.json (one folder per evaluated data set: "validation" after fit)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import read_json, write_json
from ..data.examples import Examples
from ..errors import ArtifactError

EVAL_DIR = "evaluation"
REPORT = "report.html"
COMPRESSION = "compression.json"  # (written by `fmadapt compress`: its leaderboard, shown in the report)
#: evaluation budgets when `fit` writes its report (CPU time is scarce; `fmadapt evaluate --robustness` is
#: the full-size run)
FIT_ROBUSTNESS = {"max_examples": 64, "max_adversarial": 16}
EVAL_ROBUSTNESS = {"max_examples": 500, "max_adversarial": 200}
MISCLASSIFIED = 24
THUMB = 96


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "data"


def run_evaluations(clf: Any, ex: Examples, *, robustness: bool, explain: bool, groups: list[str] | None = None,
                    group_col: str | None = None, explain_method: str | None = None,
                    robustness_budget: dict[str, int] | None = None, min_group_size: int = 30,
                    proba: np.ndarray | None = None, progress: bool = False) -> dict[str, Any]:
    """The evaluations of `clf` on the labeled `ex`: metrics, misclassified examples and, as asked, robustness,
    fairness by group and explanations, each with the seconds it took. `proba`: predictions to use instead
    of predicting again (fit passes its honest validation predictions)."""
    out: dict[str, Any] = {"seconds": {}}
    t = time.perf_counter()
    if proba is None:
        out["metrics"], proba = clf.evaluate_examples(ex)
    else:
        out["metrics"] = clf.metrics_from(proba, ex)
    out["misclassified"] = misclassified(clf, ex, proba)
    out["seconds"]["metrics"] = round(time.perf_counter() - t, 2)
    task = clf.check_fitted().config_.task
    if task != "classification" and groups is not None:  # (quality per group: micro-F1 or MAE, fairness_tasks.py)
        from ..evaluate.fairness_tasks import task_fairness_report

        t = time.perf_counter()
        pred = clf.labels_of(proba) if task == "regression" else proba >= clf.decision_thresholds()
        out["fairness"] = task_fairness_report(task, clf.encode_labels(ex.labels), pred, groups, clf.classes_,
                                               min_group_size=min_group_size, group_col=group_col)
        out["seconds"]["fairness"] = round(time.perf_counter() - t, 2)
    if robustness and len(ex):  # (multi-label: micro-F1, regression: RMSE; no attacks: robustness.task_scorer)
        from ..evaluate.robustness import robustness_report

        t = time.perf_counter()
        out["robustness"] = robustness_report(clf, ex, progress=progress, **(robustness_budget or EVAL_ROBUSTNESS))
        out["seconds"]["robustness"] = round(time.perf_counter() - t, 2)
    if groups is not None and task == "classification":
        from ..evaluate.fairness import fairness_report

        t = time.perf_counter()
        pred = [clf.classes_[i] for i in proba.argmax(1)]
        out["fairness"] = fairness_report(ex.labels or [], pred, groups, clf.classes_,
                                          min_group_size=min_group_size, group_col=group_col)
        out["seconds"]["fairness"] = round(time.perf_counter() - t, 2)
    if explain and len(ex):
        from ..evaluate.explain import explain_sample

        t = time.perf_counter()
        # saliency for images unless asked: IG costs ~9 s per 224 px image on 2 cores (`fmadapt explain`
        # defaults to IG); texts always get layer IG, which is cheap
        method = explain_method or ("saliency" if ex.modality == "image" else "ig")
        out["explanations"] = explain_sample(clf, ex, n_right=4, n_wrong=4, method=method)
        out["seconds"]["explanations"] = round(time.perf_counter() - t, 2)
    return out


def misclassified(clf: Any, ex: Examples, proba: np.ndarray, limit: int = MISCLASSIFIED) -> list[dict[str, Any]]:
    """The most confidently wrong predictions first."""
    if not len(ex) or not ex.labels:
        return []
    if clf.check_fitted().multilabel:
        return _wrong_label_sets(clf, ex, proba, limit)
    if clf.check_fitted().regression:  # the largest errors first ("confidence": the absolute error)
        pred = clf.labels_of(proba)
        err = np.abs(pred - clf.encode_labels(ex.labels))
        return [{"id": ex.ids[i], "label": ex.labels[i], "pred": round(float(pred[i]), 6),
                 "confidence": round(float(err[i]), 6),
                 **({"text": ex.inputs[i]} if ex.modality == "text" else {"path": ex.inputs[i]})}
                for i in np.argsort(-err, kind="stable")[:limit]]
    pred = proba.argmax(1)
    y = clf.encode_labels(ex.labels)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:limit]
    return [{"id": ex.ids[i], "label": ex.labels[i], "pred": clf.classes_[pred[i]],
             "confidence": round(float(proba[i, pred[i]]), 4),
             **({"text": ex.inputs[i]} if ex.modality == "text" else {"path": ex.inputs[i]})} for i in wrong]


def _wrong_label_sets(clf: Any, ex: Examples, proba: np.ndarray, limit: int) -> list[dict[str, Any]]:
    """Multi-label: the inputs whose predicted label set is wrong, the most confident mistake first (the
    largest distance of a wrong label's probability from its threshold)."""
    assert ex.labels is not None
    y = clf.encode_labels(ex.labels)
    t = clf.decision_thresholds()
    pred = proba >= t
    wrong_cells = pred != (y > 0.5)
    margin = np.where(wrong_cells, np.abs(proba - t), 0.0).max(1) if len(t) else np.zeros(len(ex))
    wrong = np.flatnonzero(wrong_cells.any(1))
    wrong = wrong[np.argsort(-margin[wrong], kind="stable")][:limit]
    predicted = clf.labels_of(proba[wrong])
    return [{"id": ex.ids[i], "label": ex.labels[i], "pred": str(p), "confidence": round(float(margin[i]), 4),
             **({"text": ex.inputs[i]} if ex.modality == "text" else {"path": ex.inputs[i]})}
            for i, p in zip(wrong, predicted, strict=True)]


def save_evaluations(model_dir: str | os.PathLike[str], source: str, evals: dict[str, Any],
                     data: str | None = None) -> Path:
    """evaluation/<source>/*.json (replacing an earlier evaluation of the same source)."""
    d = Path(model_dir) / EVAL_DIR / _slug(source)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("metrics", "robustness", "fairness", "explanations", "misclassified"):
        if name in evals:
            write_json(d / f"{name}.json", evals[name])
        else:
            (d / f"{name}.json").unlink(missing_ok=True)
    write_json(d / "source.json", {"source": source, "data": data, "seconds": evals.get("seconds", {}),
                                   "created": _now()})
    return d


def save_run_info(model_dir: str | os.PathLike[str], command: str | None, seed: int, seconds: float | None,
                  weight_hashes: dict[str, str]) -> None:
    from .environment import environment_info

    write_json(Path(model_dir) / "run.json", {
        "command": command, "created": _now(), "seconds": seconds,
        "environment": environment_info(seed=seed, weight_hashes=weight_hashes, command=command)})


def write_fit_report(clf: Any, out: Path, command: str | None) -> None:
    """run.json, the validation split's cheap evaluation (metrics, most confident mistakes) and report.html;
    `evaluate_held_out` adds robustness, fairness and explanations (what `fmadapt fit` does by default)."""
    hashes = {f"backbone {m.model.backbone.cfg.name}": m.model.backbone.cfg.sha256
              or m.model.backbone.cfg.extra.get("initial_sha256", "") for m in clf.members_}
    save_run_info(out, command, clf.config_.seed, getattr(clf, "fit_seconds_", None),
                  {k: v for k, v in hashes.items() if v})
    val = getattr(clf, "splits_", {}).get("val")
    proba = clf.val_proba()
    if val is not None and proba is not None:
        save_evaluations(out, "validation", {"metrics": clf.metrics_["val"],
                                             "misclassified": misclassified(clf, val, proba)},
                         data=clf.validation_note())
    write_run_report(out)


def evaluate_held_out(clf: Any, out: str | os.PathLike[str], *, robustness: bool, explain: bool,
                      groups: list[str] | None, group_col: str | None, progress: bool) -> dict[str, Any]:
    """The fit-time evaluation (FIT_ROBUSTNESS budget) on the test split when the data had one (held out from
    everything), else on the validation split with its honest predictions; stored and rendered."""
    test = clf.splits_.get("test")
    if test is not None and len(test) and groups is None:
        evals = run_evaluations(clf, test, robustness=robustness, explain=explain,
                                robustness_budget=FIT_ROBUSTNESS, progress=progress)
        evals["metrics"] = clf.metrics_["test"]
        save_evaluations(out, "test", evals, data="test split")
    else:
        val = clf.splits_["val"]
        evals = run_evaluations(clf, val, robustness=robustness, explain=explain, groups=groups,
                                group_col=group_col, robustness_budget=FIT_ROBUSTNESS, proba=clf.val_proba(),
                                progress=progress)
        evals["metrics"] = clf.metrics_["val"]
        save_evaluations(out, "validation", evals, data=clf.validation_note())
    write_run_report(out)
    return evals


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable ({e}); delete it or rerun the evaluation that wrote it") from None


def _thumb(path: str) -> str | None:
    """A small PNG of an image file that still exists, for the misclassified gallery."""
    from ..data.images import load_image

    try:
        if not os.path.isfile(path):  # a path from misclassified.json: never a FIFO or device (could block)
            return None
        im = load_image(path)
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # moved or unreadable since: the row is still listed, without a picture
        return None


def _history(history: dict[str, Any]) -> dict[str, Any]:
    """The report's training-history form: epochs (fine-tuning) or the probe's C candidates."""
    if history.get("ensemble"):
        history = history["ensemble"][0] if isinstance(history["ensemble"], list) else {}
        history = history if isinstance(history, dict) else {}
    out = {k: history[k] for k in ("epochs", "candidates") if history.get(k)}
    for k in ("C", "selection", "trained_on", "best_epoch", "epochs_run", "fit_seconds", "auto", "federation"):
        if k in history:
            out[k] = history[k]
    if isinstance(history.get("self_training"), dict):  # (the teacher's own history stays in config.json)
        out["self_training"] = {k: v for k, v in history["self_training"].items() if k != "teacher_history"}
    return out


def report_data(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The report's input (see report/__init__.py) from what the model directory holds."""
    root = Path(model_dir)
    config = _read(root / "config.json")
    if config is None:
        raise ArtifactError(f"{root}: no config.json here; give a model directory written by `fmadapt fit`")
    metrics = dict(_read(root / "metrics.json") or {})
    classes = _read(root / "labels.json") or []
    run = _read(root / "run.json") or {}
    data = metrics.pop("data", {})
    calibration = metrics.pop("calibration", None)
    splits = {k: v for k, v in metrics.items() if isinstance(v, dict) and ("accuracy" in v or "rmse" in v)}
    out: dict[str, Any] = {
        "title": f"fmadapt report: {root.resolve().name}", "created": _now(),
        "model": {"dir": str(root.resolve()), "task": config.get("task"), "backbone": config.get("backbone"),
                  "strategy": config.get("strategy"), "classes": classes, "config": config.get("fit", {})},
        "data": data, "history": _history(config.get("history") or {}), "metrics": splits,
        "environment": run.get("environment") or {},
    }
    if calibration:
        out["calibration"] = calibration
    compression = _read(root / COMPRESSION)
    if isinstance(compression, dict):
        out["compression"] = compression
    evals = sorted((p for p in (root / EVAL_DIR).glob("*/source.json")), key=lambda p: p.stat().st_mtime)
    # the validation evaluation written by fit first, then later `fmadapt evaluate` runs (newest wins a section)
    for src in evals:
        d = src.parent
        info = _read(src) or {}
        m = _read(d / "metrics.json")
        if m and d.name not in ("validation", "test"):
            splits[f"evaluation: {info.get('data') or d.name}"] = m
        for key in ("robustness", "fairness", "explanations"):
            v = _read(d / f"{key}.json")
            if v is not None:
                out[key] = v
                out.setdefault("evaluated_on", {})[key] = info.get("data") or d.name
        mis = _read(d / "misclassified.json")
        if mis is not None:
            out["misclassified"] = [{**r, "thumb_png": _thumb(r["path"]) if isinstance(r.get("path"), str) else None}
                                    for r in mis if isinstance(r, dict)]
    return out


def write_run_report(model_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Path:
    from .html import write_report

    data = report_data(model_dir)
    try:
        return write_report(data, path or Path(model_dir) / REPORT)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        # the renderer copes with odd values; a JSON file edited into a shape fmadapt never writes may still
        # defeat it: a clean error, not a traceback
        raise ArtifactError(f"{model_dir}: report.html cannot be made from its JSON files ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]}); one of config.json, metrics.json, run.json or "
                            f"{EVAL_DIR}/*/*.json holds content fmadapt did not write: restore it, or delete "
                            f"{EVAL_DIR}/ and rerun `fmadapt evaluate`") from None


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
