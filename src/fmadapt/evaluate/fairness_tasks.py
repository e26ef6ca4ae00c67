"""Fairness for multi-label and regression models: how the model's quality differs across groups of examples.

The same groups as for single-label models (evaluate/fairness.py: a table column or an image metadata file; no
group = ``(missing)``, shown and left out of the differences), the same report keys where they mean the same
thing (`groups`, `worst_group`, `missing_groups`, `min_group_size`, `notes`), and per task:

- multi-label: per group n, micro-F1, macro-F1 (over the labels present in that group's labels or predictions),
  subset accuracy; worst group = lowest micro-F1 (`score_gap`: best - worst). Demographic parity and equalized
  odds differences per label (Fairlearn's, the label's 0/1 decision against its truth), the headline values the
  maximum over labels (`per_class`).
- regression: per group n, MAE, RMSE, mean error (prediction - truth: a group the model systematically under- or
  over-estimates) and mean prediction; worst group = highest MAE (`score_gap`: worst - best). The regression
  analogues of parity: `mean_prediction_gap` (max - min of the groups' mean predictions: what demographic parity
  compares for a number) and `mean_error_gap` (max - min of the groups' mean errors: whether the errors' sign
  depends on the group).

`metric` names the headline column (`micro_f1`, `mae`), `higher_is_better` its direction; the report draws it."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from ..errors import DataError
from .fairness import MISSING, binary_gaps, finite_or_none

#: per task: the headline metric and whether higher is better
HEADLINE = {"multilabel": ("micro_f1", True), "regression": ("mae", False)}


def _group_row(task: str, yt: np.ndarray, yp: np.ndarray) -> dict[str, Any]:
    if task == "regression":
        err = yp - yt
        return {"n": len(yt), "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
                "mean_error": float(np.mean(err)), "mean_prediction": float(np.mean(yp)),
                "mean_target": float(np.mean(yt))}
    present = np.flatnonzero(yt.any(0) | yp.any(0))
    macro = f1_score(yt[:, present], yp[:, present], average="macro", zero_division=0) if len(present) else 1.0
    return {"n": len(yt), "micro_f1": float(f1_score(yt, yp, average="micro", zero_division=0)),
            "macro_f1": float(macro), "subset_accuracy": float(np.mean((yt == yp).all(1)))}


def task_fairness_report(task: str, y_true: np.ndarray, y_pred: np.ndarray, groups: list[str],
                         classes: list[str], *, min_group_size: int = 1, group_col: str | None = None
                         ) -> dict[str, Any]:
    """Per-group quality and disparities of a `task` ("multilabel": 0/1 matrices of the labels, columns in the
    order of `classes`; "regression": the targets and the predictions) by `groups`; JSON-serialisable."""
    if task not in HEADLINE:
        raise ValueError(f"task must be one of {sorted(HEADLINE)}, not {task!r}")
    yt = np.asarray(y_true, dtype=np.float64 if task == "regression" else np.int64)
    yp = np.asarray(y_pred, dtype=np.float64 if task == "regression" else np.int64)
    g = np.array([str(x) for x in groups], dtype=object)
    if not len(yt) == len(yp) == len(g) or yt.shape != yp.shape:
        raise ValueError(f"y_true, y_pred and groups differ in length or shape: {yt.shape}, {yp.shape}, {len(g)}")
    metric, higher = HEADLINE[task]
    out_groups = {}
    for name in sorted(set(g.tolist())):
        rows = g == name
        out_groups[str(name)] = {**_group_row(task, yt[rows], yp[rows]), "small": int(rows.sum()) < min_group_size}
    known = g != MISSING
    missing = int((~known).sum())
    real = sorted({str(x) for x in g[known]})
    if not real:
        raise DataError("no example has a group label: check the group column or metadata file")
    notes: list[str] = []
    if missing:
        notes.append(f"{missing} example(s) have no group ({MISSING!r}): shown, but left out of the "
                     "differences and the worst group")
    small = [k for k in real if out_groups[k]["small"]]
    ranked = [k for k in real if k not in small] or real  # small groups' numbers are mostly noise
    if small:
        notes.append(f"{len(small)} group(s) have fewer than {min_group_size} examples ({', '.join(small[:10])})"
                     ": their numbers are noisy" + ("; left out of the worst group and the gap"
                                                    if len(ranked) < len(real) else ""))
    sign = 1.0 if higher else -1.0
    worst = min(ranked, key=lambda k: (sign * out_groups[k][metric], k))
    best = max(sign * out_groups[k][metric] for k in ranked)
    out: dict[str, Any] = {
        "task": task, "metric": metric, "higher_is_better": higher, "group_col": group_col, "n": len(yt),
        "groups": out_groups, "worst_group": worst, "worst_group_score": out_groups[worst][metric],
        "score_gap": best - sign * out_groups[worst][metric], "missing_groups": missing,
        "min_group_size": min_group_size, "notes": notes}
    if len(real) < 2:
        notes.append("only one group: fairness differences need at least 2 groups, so they are 0")
    if task == "regression":
        for key, field in (("mean_prediction_gap", "mean_prediction"), ("mean_error_gap", "mean_error")):
            vals = [out_groups[k][field] for k in real]
            out[key] = float(max(vals) - min(vals))
        notes.append("regression: mean_prediction_gap compares the groups' mean predictions (demographic parity "
                     "for a number), mean_error_gap their mean errors (prediction - truth)")
        return out
    per_class: dict[str, dict[str, float]] = {}
    if len(real) >= 2:
        undefined = False
        for j, c in enumerate(classes):
            d, e, u = binary_gaps(yt[known, j], yp[known, j], g[known])
            undefined |= u
            per_class[str(c)] = {"demographic_parity_difference": d, "equalized_odds_difference": e}
        if undefined:
            notes.append("some group has no true positives or no true negatives for a label: Fairlearn counts "
                         "its undefined true/false-positive rate as 0, which can inflate equalized odds")
    notes.append("multi-label: parity and odds differences are computed per label (its 0/1 decision); the "
                 "headline values are the maximum over labels (see per_class)")
    out["per_class"] = per_class
    for key in ("demographic_parity_difference", "equalized_odds_difference"):
        out[key] = finite_or_none(max((v[key] for v in per_class.values()), default=0.0))
    return out


def task_fairness_lines(report: dict[str, Any], max_groups: int = 30) -> list[str]:
    """A short plain-text table for terminals, worst groups first."""
    groups, metric = report.get("groups") or {}, str(report.get("metric"))
    cols = (["mae", "rmse", "mean_error"] if report.get("task") == "regression"
            else ["micro_f1", "macro_f1", "subset_accuracy"])
    width = min(30, max([len("group"), *(len(str(k)) for k in groups)]))
    lines = [f"Fairness by {report.get('group_col') or 'group'!s} (n={report.get('n')}, {metric} per group)",
             f"{'group':<{width}}  {'n':>6}  " + "  ".join(f"{c:>15}" for c in cols)]
    sign = 1.0 if report.get("higher_is_better") else -1.0
    order = sorted(groups, key=lambda k: (sign * groups[k][metric], str(k)))
    for k in order[:max_groups]:
        v = groups[k]
        lines.append(f"{str(k)[:width]:<{width}}  {v['n']:>6}  " + "  ".join(f"{v[c]:>15.4g}" for c in cols)
                     + ("  (small)" if v.get("small") else ""))
    if len(order) > max_groups:
        lines.append(f"... {len(order) - max_groups} more group(s)")
    gaps = [f"{k.replace('_', ' ')} {report[k]:.4g}" for k in ("demographic_parity_difference",
            "equalized_odds_difference", "mean_prediction_gap", "mean_error_gap") if report.get(k) is not None]
    lines.append(f"worst group {report.get('worst_group')!s} ({metric} {report.get('worst_group_score'):.4g}), "
                 f"gap {report.get('score_gap'):.4g}" + (f"; {', '.join(gaps)}" if gaps else ""))
    lines.extend(f"note: {n}" for n in report.get("notes") or [])
    return lines
