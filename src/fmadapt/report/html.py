"""Render the run report: one self-contained HTML file (inline CSS, images as data: URIs, no network).

``render_report`` turns the plain report dict (see ``fmadapt.report`` for its schema) into a view model of
already-formatted values, so the template stays declarative and every odd input (missing keys, None, NaN,
strings where numbers were expected) is dealt with once, here, in Python.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ._template import CSS, TEMPLATE
from .figures import build_figures, figure_mime
from .format import _kv, _mapping, _num, codeify, data_uri, fmt, pct, token_style

# Section ids are part of the report's contract (links, tests, tools that scrape the report): keep them stable.
SECTIONS: list[tuple[str, str]] = [
    ("data", "Data"), ("training", "Training"), ("metrics", "Metrics"), ("confusion", "Confusion matrix"),
    ("per-class", "Per-class metrics"), ("calibration", "Calibration"), ("robustness", "Robustness"),
    ("fairness", "Fairness"), ("explanations", "Explanations"), ("misclassified", "Misclassified examples"),
    ("compression", "Compression"), ("environment", "Environment"),
]

# Shown in place of a section that was not run; `backticks` become <code>.
HOW_TO_ENABLE: dict[str, str] = {
    "data": "the data summary is recorded by `fmadapt fit`.",
    "training": "training history is recorded by `fmadapt fit`.",
    "metrics": "run `fmadapt evaluate MODEL DATA`.",
    "confusion": "run `fmadapt evaluate MODEL DATA`.",
    "per-class": "run `fmadapt evaluate MODEL DATA`.",
    "calibration": "temperature scaling is fitted on the validation split by `fmadapt fit`; "
                   "it needs a validation split.",
    "robustness": "run `fmadapt fit` with the default `--report full`, or `fmadapt evaluate MODEL DATA "
                  "--robustness`.",
    "fairness": "pass `--group-col COL` to `fmadapt fit` or `fmadapt evaluate` (texts: a column of group labels "
                "in your table; images: add `--group-metadata FILE`, a CSV mapping image paths to groups).",
    "explanations": "run `fmadapt fit` with the default `--report full`, `fmadapt evaluate MODEL DATA --explain`, "
                    "or `fmadapt explain MODEL INPUTS`.",
    "misclassified": "run `fmadapt evaluate MODEL DATA`.",
    "compression": "run `fmadapt compress MODEL DATA --out DIR`: the model, a distilled student and their fp32 and "
                   "int8 exports, measured side by side.",
    "environment": "the environment was not recorded for this run.",
}

# Runs once the page has loaded: how many images actually decoded. Lets a headless browser (and a curious
# user with dev tools) verify the embedded PNGs. Its hash goes into the CSP, which blocks every other script.
IMAGE_CHECK_JS = ("window.addEventListener('load',function(){var n=0,a=document.images;"
                  "for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0)n++;}"
                  "document.body.dataset.imagesOk=String(n);});")
_JS_HASH = base64.b64encode(hashlib.sha256(IMAGE_CHECK_JS.encode()).digest()).decode()
# No default network access of any kind: images only from data: URIs, styles only inline, one known script.
CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_JS_HASH}'"

MAX_ROWS = 200  # skipped files, epochs, etc.: beyond this the list is truncated with a count
MAX_GALLERY = 60  # explanation / misclassified cards
MAX_PAIRS = 20  # most-confused pairs listed
PRIMARY_SPLITS = ("test", "evaluation", "val", "validation")


# --------------------------------------------------------------------------------------- view model parts
def _epochs(history: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The epoch list, also from a columnar history ({"train_loss": [...], ...}) as Lightning loggers keep it."""
    eps = history.get("epochs")
    if isinstance(eps, list):
        return [e for e in eps if isinstance(e, Mapping)]
    cols = {k: v for k, v in history.items() if isinstance(v, list) and v and not isinstance(v[0], Mapping)}
    if not cols or "candidates" in history:
        return []
    n = min(len(v) for v in cols.values())
    return [{"epoch": i, **{k: v[i] for k, v in cols.items()}} for i in range(n)]


def _primary_split(metrics: Mapping[str, Any]) -> str | None:
    splits = [s for s, m in metrics.items() if isinstance(m, Mapping)]
    return next((s for s in PRIMARY_SPLITS if s in splits), splits[0] if splits else None)


def confused_pairs(cm: Any, classes: list[str], k: int = MAX_PAIRS) -> list[dict[str, Any]]:
    """The k largest off-diagonal cells: which true class is most often taken for which."""
    rows = cm if isinstance(cm, list) else []
    pairs = []
    for i, row in enumerate(rows):
        total = sum(_num(c) or 0 for c in row) if isinstance(row, list) else 0
        for j, c in enumerate(row if isinstance(row, list) else []):
            n = _num(c) or 0
            if i != j and n > 0:
                pairs.append({"true": classes[i] if i < len(classes) else str(i),
                              "pred": classes[j] if j < len(classes) else str(j),
                              "count": int(n), "rate": pct(n / total) if total else "—"})
    return sorted(pairs, key=lambda p: -p["count"])[:k]


#: the headline metrics of the other tasks, shown per split below the metrics table
_TASK_METRICS = {"regression": ("rmse", "mae", "r2", "spearman", "interval_coverage", "interval_width"),
                 "multilabel": ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "macro_average_precision")}


def _metric_splits(metrics: Mapping[str, Any], model_classes: list[str]) -> list[dict[str, Any]]:
    out = []
    for split, m in metrics.items():
        if not isinstance(m, Mapping):
            continue
        classes = [str(c) for c in (m.get("classes") or model_classes)]
        per_class = [{"name": str(c), **{k: fmt(v.get(k)) for k in ("precision", "recall", "f1", "support")},
                      "low": (_num(v.get("f1")) or 0.0) < 0.5}
                     for c, v in _mapping(m.get("per_class")).items() if isinstance(v, Mapping)]
        skipped = m.get("skipped") or []
        task_rows = [(k.replace("_", " "), fmt(m.get(k))) for k in _TASK_METRICS.get(str(m.get("task")), ())
                     if k in m]
        out.append({"name": str(split), "key": split, "n": fmt(m.get("n")), "accuracy": fmt(m.get("accuracy")),
                    "task": str(m.get("task") or "classification"), "task_rows": task_rows,
                    "macro_f1": fmt(m.get("macro_f1")), "ece": fmt(m.get("ece")),
                    "skipped": len(skipped) if isinstance(skipped, list) else fmt(skipped),
                    "per_class": per_class, "n_classes": len(classes),
                    "pairs": confused_pairs(m.get("confusion_matrix"), classes),
                    "has_cm": bool(m.get("confusion_matrix"))})
    return out


def _class_counts(data: Mapping[str, Any]) -> dict[str, Any]:
    counts = {str(s): _mapping(c) for s, c in _mapping(data.get("class_counts")).items()}
    splits = list(counts)
    classes: list[str] = []
    for c in counts.values():
        classes.extend(str(k) for k in c if str(k) not in classes)
    rows = [{"name": cls, "cells": [fmt(counts[s].get(cls, 0)) for s in splits],
             "total": fmt(int(sum(_num(counts[s].get(cls, 0)) or 0 for s in splits)))} for cls in classes]
    return {"splits": splits, "rows": rows}


def _explanations(items: Any) -> list[dict[str, Any]]:
    out = []
    for e in (items or [])[:MAX_GALLERY]:
        if not isinstance(e, Mapping):
            continue
        toks = [t for t in (e.get("tokens") or []) if isinstance(t, list | tuple) and len(t) >= 2]
        scale = max((abs(_num(t[1]) or 0.0) for t in toks), default=0.0)
        out.append({"id": str(e.get("id", "")), "kind": str(e.get("kind", "")), "label": str(e.get("label", "")),
                    "pred": str(e.get("pred", "")), "confidence": pct(e.get("confidence")),
                    "correct": e.get("correct"), "method": str(e.get("method") or ""),
                    "image": data_uri(e.get("image_png")), "original": data_uri(e.get("original_png")),
                    "tokens": [{"text": str(t[0]), "style": token_style(t[1], scale), "score": fmt(t[1], 3)}
                               for t in toks]})
    return out


def _misclassified(items: Any) -> list[dict[str, Any]]:
    out = []
    for e in (items or [])[:MAX_GALLERY]:
        if not isinstance(e, Mapping):
            continue
        text = e.get("text")
        text = None if text is None else str(text)
        out.append({"id": str(e.get("id", "")), "label": str(e.get("label", "")), "pred": str(e.get("pred", "")),
                    "confidence": pct(e.get("confidence")), "thumb": data_uri(e.get("thumb_png")),
                    "text": text if text is None or len(text) <= 400 else text[:400] + "…"})
    return out


def _robustness_tables(rob: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each curve family as a table: one row per corruption, one column per severity/rate/ε."""
    tables = []
    adv = _mapping(rob.get("adversarial"))
    unit = adv.get("eps_unit")
    m = str(rob.get("metric") or "accuracy").replace("_", "-").replace("rmse", "RMSE")  # (robustness.task_scorer)
    families = [(f"Corruptions ({m} by severity)", _mapping(rob.get("corruptions"))),
                (f"Text perturbations ({m} by rate)", _mapping(rob.get("text"))),
                (f"Adversarial (accuracy by ε{', ' + str(unit) if unit else ''})",
                 {k.upper(): adv[k] for k in ("fgsm", "pgd") if isinstance(adv.get(k), Mapping)})]
    for title, fam in families:
        curves = {str(n): c for n, c in fam.items() if isinstance(c, Mapping)}
        if not curves:
            continue
        cols = sorted({str(k) for c in curves.values() for k in c}, key=lambda k: (_num(k) is None, _num(k) or 0, k))
        tables.append({"title": title, "cols": cols,
                       "rows": [{"name": n, "cells": [fmt({str(k): v for k, v in c.items()}.get(col), 3)
                                                      for col in cols]} for n, c in curves.items()]})
    return tables


def _compression(data: Mapping[str, Any]) -> dict[str, Any]:
    """The leaderboard of `fmadapt compress` (compression.json beside the model)."""
    c = _mapping(data.get("compression"))
    rows = [r for r in (c.get("rows") or []) if isinstance(r, Mapping)][:MAX_ROWS]
    return {"rows": [{"name": str(r.get("name", "")), "kind": str(r.get("kind", "")),
                      "accuracy": fmt(r.get("accuracy")), "mb": fmt(r.get("mb"), 2), "p50": fmt(r.get("p50_ms"), 2),
                      "p95": fmt(r.get("p95_ms"), 2), "per_s": fmt(r.get("per_s"), 1),
                      "refused": str(r.get("refused") or "")} for r in rows],
            "held_out": fmt(c.get("held_out")), "note": str(c.get("note") or ""), "out": str(c.get("out") or ""),
            "created": str(c.get("created") or "")}


def _view(data: Mapping[str, Any], figures: dict[str, str]) -> dict[str, Any]:
    model = _mapping(data.get("model"))
    classes = [str(c) for c in (model.get("classes") or [])]
    metrics = _mapping(data.get("metrics"))
    primary = _primary_split(metrics)
    head = _mapping(metrics.get(primary)) if primary is not None else {}
    hist = _mapping(data.get("history"))
    epochs = _epochs(hist)
    dsum = _mapping(data.get("data"))
    rob, fair, cal, env = (_mapping(data.get(k)) for k in ("robustness", "fairness", "calibration", "environment"))
    splits = _metric_splits(metrics, classes)
    present = {
        "data": bool(dsum), "training": bool(hist), "metrics": bool(splits),
        "confusion": any(s["has_cm"] for s in splits), "per-class": any(s["per_class"] for s in splits),
        "calibration": bool(cal), "robustness": bool(rob), "fairness": bool(fair),
        "explanations": isinstance(data.get("explanations"), list),
        "misclassified": isinstance(data.get("misclassified"), list), "environment": bool(env),
        "compression": bool(_mapping(data.get("compression")).get("rows")),
    }
    skipped = [s for s in (dsum.get("skipped") or []) if isinstance(s, Mapping)]
    columns = FAIRNESS_COLUMNS.get(str(fair.get("task")), FAIRNESS_COLUMNS["classification"])
    groups = [{"name": str(g), "n": fmt(v.get("n")), "cells": [fmt(v.get(k)) for _, k in columns],
               "small": bool(v.get("small"))}
              for g, v in _mapping(fair.get("groups")).items() if isinstance(v, Mapping)]
    cal_rows = [{"name": k, "before": fmt(_mapping(cal.get("before")).get(k)),
                 "after": fmt(_mapping(cal.get("after")).get(k))} for k in ("ece", "brier", "nll")]
    return {
        "title": str(data.get("title") or f"fmadapt report — {Path(str(model.get('dir') or 'model')).name}"),
        "created": str(data.get("created") or datetime.now(UTC).isoformat(timespec="seconds")),
        "model": {k: str(model.get(k) or "—") for k in ("dir", "task", "backbone", "strategy")},
        "classes": classes, "config": _kv(model.get("config")),
        "headline": {"split": None if primary is None else str(primary), "accuracy": pct(head.get("accuracy")),
                     "macro_f1": fmt(head.get("macro_f1")), "n": fmt(head.get("n"))},
        "sections": [{"id": i, "title": t, "present": present[i]} for i, t in SECTIONS],
        "present": present, "notes": HOW_TO_ENABLE, "fig": figures, "compression": _compression(data),
        "fig_mime": {k: figure_mime(v) for k, v in figures.items() if not k.startswith("_error_")},
        "evaluated_on": {k: str(v) for k, v in _mapping(data.get("evaluated_on")).items()},
        "fig_errors": {k[len("_error_"):]: v for k, v in figures.items() if k.startswith("_error_")},
        "data": {"sizes": _kv(dsum.get("sizes")), "counts": _class_counts(dsum),
                 "skipped": [{"where": str(s.get("where", "")), "reason": str(s.get("reason", ""))}
                             for s in skipped[:MAX_ROWS]], "n_skipped": len(skipped),
                 "warnings": [str(w) for w in (dsum.get("warnings") or [])],
                 "validation": None if dsum.get("validation") is None else str(dsum.get("validation")),
                 "vocabulary": _kv(dsum.get("vocabulary"))},
        "history": {"epochs": [{k: fmt(e.get(k), 6 if k == "lr" else 4)
                                for k in ("epoch", "train_loss", "val_loss", "val_acc", "lr")}
                               for e in epochs[:MAX_ROWS]],
                    "candidates": [{k: f"{c[k]:g}" if k == "C" and isinstance(c.get(k), int | float) else fmt(c.get(k))
                                    for k in ("C", "scaling", "class_weight", "val_acc", "val_loss")}
                                   for c in (hist.get("candidates") or []) if isinstance(c, Mapping)],
                    "auto": _auto(hist.get("auto")), "federation": _federation(hist.get("federation")),
                    "other": [] if epochs or hist.get("candidates") else
                    [(k, v) for k, v in _kv(hist) if not k.startswith("_") and k not in ("self_training", "federation")
                     ][:50],
                    "self_training": _kv({**_mapping(hist.get("self_training")),
                                          **({"unlabeled data": dsum["unlabeled"]} if dsum.get("unlabeled") else {})
                                          }) if hist.get("self_training") else []},
        "splits": splits, "primary": None if primary is None else str(primary),
        "calibration": {"temperature": fmt(cal.get("temperature")), "rows": cal_rows,
                        "note": str(cal.get("note") or "")},
        "robustness": {"modality": str(rob.get("modality") or "—"), "n": fmt(rob.get("n")),
                       "clean": fmt(rob.get("clean_accuracy")), "tables": _robustness_tables(rob),
                       "metric": str(rob.get("metric") or "accuracy").replace("_", "-").replace("rmse", "RMSE"),
                       "note": str(_mapping(rob.get("adversarial")).get("note") or rob.get("note") or ""),
                       "seconds": _kv(rob.get("seconds"))},
        "fairness": {"summary": _kv({k: fair.get(k) for k in (
            "group_col", "n", "positive_class", "demographic_parity_difference", "equalized_odds_difference",
            "worst_group", "worst_group_accuracy", "accuracy_gap", "metric", "worst_group_score", "score_gap",
            "mean_prediction_gap", "mean_error_gap") if k in fair}), "groups": groups,
            "columns": [name for name, _ in columns],
            # fairness.py counts the examples without a group (an int)
            "missing": _missing_groups(fair.get("missing_groups")),
            "notes": [str(n) for n in _as_list(fair.get("notes"))]},
        "explanations": _explanations(data.get("explanations")),
        "n_explanations": len(data.get("explanations") or []),
        "misclassified": _misclassified(data.get("misclassified")),
        "n_misclassified": len(data.get("misclassified") or []),
        "env": {"summary": _kv({k: env.get(k) for k in ("seed", "hardware", "python", "platform") if k in env}),
                "versions": _kv(env.get("versions")), "hashes": _kv(env.get("weight_hashes")),
                "command": None if not env.get("command") else str(env.get("command"))},
    }


#: the per-group columns of the fairness table, by task (evaluate/fairness.py, evaluate/fairness_tasks.py)
FAIRNESS_COLUMNS = {"classification": [("accuracy", "accuracy"), ("macro F1", "macro_f1")],
                    "multilabel": [("micro F1", "micro_f1"), ("macro F1", "macro_f1"),
                                   ("subset accuracy", "subset_accuracy")],
                    "regression": [("MAE", "mae"), ("RMSE", "rmse"), ("mean error", "mean_error"),
                                   ("mean prediction", "mean_prediction")]}


# ----------------------------------------------------------------------------------------------- public
def _auto(auto: Any) -> dict[str, Any] | None:
    """The candidates table of strategy auto (history["auto"]), formatted."""
    if not isinstance(auto, Mapping) or not isinstance(auto.get("candidates"), list):
        return None
    rows = []
    for r in auto["candidates"][:MAX_ROWS]:
        if not isinstance(r, Mapping):
            continue
        secs = r.get("seconds")
        rows.append({"candidate": str(r.get("candidate", "")), "status": str(r.get("status", "")),
                     "score": fmt(r.get("val_score", r.get("val_acc"))), "acc": fmt(r.get("val_acc")),
                     "seeds": fmt(len(r["seeds"]) if isinstance(r.get("seeds"), list) else None),
                     "seconds": fmt(sum(secs) if isinstance(secs, list) else secs, 1),
                     "weight": fmt(r.get("ngram_weight"), 1)})
    return {"rows": rows, "metric": str(auto.get("metric") or "accuracy"), "winner": str(auto.get("winner", "")),
            "why": str(auto.get("why", "")), "final": str(auto.get("final", ""))}


def _federation(fed: Any) -> dict[str, Any] | None:
    """A federated fit's clients and rounds (history["federation"]), formatted."""
    from ..federated.card import round_problems

    if not isinstance(fed, Mapping) or not isinstance(fed.get("rounds"), list):
        return None
    clients = [{"client": fmt(c.get("client")), "examples": fmt(c.get("examples")), "skew": fmt(c.get("label_skew")),
                "classes": ", ".join(f"{k} {v}" for k, v in _mapping(c.get("classes")).items())}
               for c in (fed.get("clients") or [])[:MAX_ROWS] if isinstance(c, Mapping)]
    rounds = []
    for r in fed["rounds"][:MAX_ROWS]:
        if not isinstance(r, Mapping):
            continue
        rounds.append({"round": fmt(r.get("round")), "acc": fmt(r.get("accuracy")), "loss": fmt(r.get("loss")),
                       "used": f"{r.get('used', '—')}/{r.get('sampled', '—')}", "seconds": fmt(r.get("seconds"), 2),
                       "bytes": fmt((r.get("bytes_down") or 0) + (r.get("bytes_up") or 0)),
                       "bad": round_problems(r)})
    summary = {k: fed.get(k) for k in ("partition", "aggregation", "trainable", "seconds", "workers", "bytes",
                                       "rejected", "failed") if k in fed}
    head = _mapping(fed.get("head"))
    if isinstance(head.get("rounds"), list) and head["rounds"] and isinstance(head["rounds"][-1], Mapping):
        summary["head warm-up"] = (f"{len(head['rounds'])} rounds of the federated probe first (held-out accuracy "
                                   f"{fmt(head['rounds'][-1].get('accuracy'))}); the rounds below start from it")
    deployment = _mapping(fed.get("deployment"))
    if deployment:
        summary["engine"] = (f"{deployment.get('engine')}, SuperLink {deployment.get('superlink')}"
                             f"{' over TLS' if deployment.get('tls') else ' (plain HTTP, loopback)'}")
    privacy = _mapping(fed.get("privacy"))
    if privacy:
        summary["differential privacy"] = (f"epsilon spent {privacy.get('epsilon')} at delta {privacy.get('delta')} "
                                           f"(largest over the clients; target {privacy.get('epsilon_target')})")
    return {"clients": clients, "rounds": rounds, "summary": _kv(summary)}


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True,
                          lstrip_blocks=True)
_ENV.filters.update(fmt=fmt, pct=pct, codeify=codeify)
_TEMPLATE = _ENV.from_string(TEMPLATE)


def render_report(data: Mapping[str, Any]) -> str:
    """The report as one HTML string. ``data`` follows the schema in ``fmadapt.report``; only ``model`` is
    expected, every other section may be missing (it then shows how to produce it)."""
    figures = build_figures(data)
    html = _TEMPLATE.render(v=_view(data, figures), css=Markup(CSS), csp=CSP, script=Markup(IMAGE_CHECK_JS))
    # The image count goes on <body> after rendering, counted from the output itself so it cannot disagree
    # with the page. User strings are escaped, so "<img " and "<body " only ever come from the template.
    body = html.index("<body ")
    return html[:body] + html[body:].replace('data-images-total="0"', f'data-images-total="{html.count("<img ")}"',
                                             1)


def write_report(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render and write atomically (temp file in the same folder + os.replace): a reader never sees half a
    report, and a crash mid-write leaves the previous report intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared like any other output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _as_list(v: Any) -> list[Any]:
    """A JSON array as a list; a lone value as a one-item list; nothing as []."""
    if isinstance(v, (list, tuple)):
        return list(v)
    return [] if v is None or v == "" else [v]


def _missing_groups(v: Any) -> list[str]:
    if isinstance(v, bool) or v is None:
        return []
    if isinstance(v, (int, float)):
        return [f"{int(v)} example(s) have no group"] if v and math.isfinite(v) else []
    return [str(g) for g in v] if isinstance(v, (list, tuple)) else [str(v)]
