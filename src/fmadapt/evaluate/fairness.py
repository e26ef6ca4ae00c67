"""Fairness: how a model's quality differs across groups of examples (Fairlearn's group metrics).

Groups come from a column of the evaluation table (`group_labels_from_table`) or, for image folders, from a
metadata file mapping images to groups (`group_labels_from_metadata`). Examples with no group get the group
``(missing)``: it is shown, counted in ``missing_groups``, and left out of the differences and of the worst
group, because "unknown" is not a population one can be fair or unfair to.

Definitions (`fairness_report`):
- per group: n, accuracy, macro-F1 (over the classes present in that group's labels or predictions, so a
  class absent from a group does not count as F1 = 0), selection rate (share predicted positive; for
  multiclass, the share predicted as each class).
- demographic parity difference: max - min over groups of the selection rate;
  equalized odds difference: the larger of the max - min gaps in true-positive and false-positive rate.
  Both are Fairlearn's, for a binary view of the task: binary tasks use positive class = classes[1];
  multiclass tasks use each class one-vs-rest and report the maximum over classes plus every class.
- worst group: lowest accuracy among groups with at least `min_group_size` examples (all groups if none is
  that large); accuracy gap: best - worst accuracy among those same groups.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equalized_odds_difference,
    selection_rate,
)
from sklearn.metrics import accuracy_score, f1_score

from ..data.examples import Examples
from ..data.tables import missing_column, read_table
from ..errors import DataError

MISSING = "(missing)"
#: accepted names (case-insensitive) of the metadata column holding image paths, in order of preference
PATH_COLUMNS = ("path", "file", "filename", "image", "filepath", "file_path", "file_name", "image_path")


def _group_str(v: Any) -> str:
    """A group value as a string; NaN/None/blank -> MISSING; 1.0 (a numeric column with gaps) -> '1'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v).strip()
    return s if s else MISSING


def _row_name(source: str, i: int) -> str:
    # same numbering as tables.py: CSV/TSV rows as a spreadsheet shows them (header is row 1)
    return f"{source}:row {i + 2 if source.endswith(('.csv', '.tsv')) else i}"


def _warn_missing(ex: Examples, groups: list[str], what: str) -> None:
    """Record in ex.warnings (shown in the run summary) how many examples got no group, with examples."""
    miss = [ex.ids[i] for i, g in enumerate(groups) if g == MISSING]
    if miss:
        ex.warnings.append(f"{what}: {len(miss)} of {len(groups)} examples have no group; they are counted as "
                           f"{MISSING!r} (e.g. {', '.join(miss[:5])})")


def group_labels_from_table(path_or_df: str | os.PathLike[str] | pd.DataFrame, group_col: str, ex: Examples,
                            *, id_col: str | None = None, encoding: str = "auto", header: bool = True,
                            option: str = "--group-col") -> list[str]:
    """The group of every example in `ex`, read from `group_col` of the table `ex` was built from.

    Rows are aligned by `ex.ids`: row positions (what `examples_from_table` assigns, so rows it skipped and
    train/val splits are handled), or values of `id_col` when the examples were built with one."""
    df, source = read_table(path_or_df, encoding=encoding, header=header)
    df.columns = [str(c) for c in df.columns]
    if group_col not in df.columns:
        raise missing_column(source, group_col, df, option)
    values = df[group_col].tolist()
    if id_col is not None:
        if id_col not in df.columns:
            raise missing_column(source, id_col, df, "id column")
        keys = [str(v) for v in df[id_col].tolist()]
        dup = pd.Series(keys)[pd.Series(keys).duplicated()].unique().tolist()
        if dup:
            raise DataError(f"{source}: id column {id_col!r} repeats {', '.join(map(repr, dup[:5]))}; "
                            "ids must be unique to align groups with examples")
        pos = {k: i for i, k in enumerate(keys)}
    else:
        pos = {str(i): i for i in range(len(df))}
    unknown = [i for i in ex.ids if i not in pos]
    if unknown:
        raise DataError(f"{source}: {len(unknown)} example id(s) not found in this table (e.g. "
                        f"{', '.join(unknown[:5])}); pass the same table the examples were read from")
    groups = [_group_str(values[pos[i]]) for i in ex.ids]
    _warn_missing(ex, groups, f"{source}: column {group_col!r}")
    return groups


def _path_key(p: str) -> tuple[str, ...]:
    """Path components for suffix matching: Windows separators accepted, './' and the root dropped."""
    parts = PurePosixPath(p.strip().replace("\\", "/")).parts
    return tuple(x for x in parts if x not in ("/", "."))


def group_labels_from_metadata(metadata_file: str | os.PathLike[str], ex: Examples,
                               group_col: str | None = None) -> list[str]:
    """The group of every image in `ex` from a metadata table (CSV/TSV/JSONL/JSON, read with pandas only).

    The path column is the first of PATH_COLUMNS present; the group column is `group_col`, or else the only
    other column. Matching rule: a metadata path matches an image when it equals the image's path or is a
    trailing part of it in whole components, so ``train/cat/001.jpg``, ``cat/001.jpg`` (relative to the data
    folder) and ``001.jpg`` (file name) all work. A metadata path that fits several of the images is refused
    as ambiguous (give more of the path), as is an image given different groups by two rows. Images with no
    row get MISSING and are listed in ex.warnings."""
    df, source = read_table(metadata_file)
    df.columns = [str(c) for c in df.columns]
    lower = {c.lower(): c for c in df.columns if c != group_col}
    path_col = next((lower[n] for n in PATH_COLUMNS if n in lower), None)
    listing = ", ".join(repr(c) for c in df.columns)
    if path_col is None:
        raise DataError(f"{source}: no image path column; name one of {', '.join(PATH_COLUMNS)}. "
                        f"Columns: {listing}")
    if group_col is None:
        others = [c for c in df.columns if c != path_col]
        if len(others) != 1:
            raise DataError(f"{source}: cannot tell which column holds the groups; pass --group-col. "
                            f"Columns: {listing}")
        group_col = others[0]
    elif group_col not in df.columns:
        raise missing_column(source, group_col, df, "--group-col")
    meta: dict[tuple[str, ...], tuple[str, int]] = {}  # path key -> (group, row index)
    for i, (p, g) in enumerate(zip(df[path_col].tolist(), df[group_col].tolist(), strict=True)):
        if _group_str(p) == MISSING:
            continue  # a row without a path cannot be matched to anything
        key, grp = _path_key(str(p)), _group_str(g)
        if key in meta and meta[key][0] != grp:
            raise DataError(f"{_row_name(source, i)}: {p!r} is given group {grp!r} here and {meta[key][0]!r} "
                            f"at {_row_name(source, meta[key][1])}; keep one")
        meta.setdefault(key, (grp, i))
    # each image against every trailing part of its absolute path: O(images x depth) dict lookups
    hits: dict[tuple[str, ...], list[int]] = {}
    per_image: list[list[tuple[str, ...]]] = []
    for j, img in enumerate(ex.ids):
        parts = _path_key(os.path.abspath(img))
        found = [parts[-k:] for k in range(1, len(parts) + 1) if parts[-k:] in meta]
        for key in found:
            hits.setdefault(key, []).append(j)
        per_image.append(found)
    for key, imgs in hits.items():
        if len(imgs) > 1:
            raise DataError(f"{_row_name(source, meta[key][1])}: {'/'.join(key)!r} matches {len(imgs)} images "
                            f"({', '.join(ex.ids[j] for j in imgs[:3])}); write more of the path, relative "
                            "to the data folder (e.g. class/file.jpg)")
    groups: list[str] = []
    for j, found in enumerate(per_image):
        distinct = {meta[k][0] for k in found}
        if len(distinct) > 1:
            raise DataError(f"{source}: image {ex.ids[j]} is given groups {sorted(distinct)} by rows "
                            f"{', '.join(_row_name(source, meta[k][1]) for k in found)}; keep one")
        groups.append(distinct.pop() if distinct else MISSING)
    if ex.ids and all(g == MISSING for g in groups):
        raise DataError(f"{source}: no image matched column {path_col!r} (e.g. {df[path_col].iloc[0]!r} vs "
                        f"image {ex.ids[0]}). Use paths relative to the data folder, or unique file names.")
    _warn_missing(ex, groups, f"{source}")
    return groups


def finite_or_none(x: Any) -> float | None:
    """JSON has no NaN: undefined numbers become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def binary_gaps(yt: np.ndarray, yp: np.ndarray, g: np.ndarray) -> tuple[float, float, bool]:
    """(DP difference, EO difference, some group lacks positives or negatives) for 0/1 arrays."""
    dp = demographic_parity_difference(yt, yp, sensitive_features=g)
    eo = equalized_odds_difference(yt, yp, sensitive_features=g)
    # Fairlearn scores an undefined TPR/FPR (no positives/negatives in a group) as 0: worth a note
    undefined = any(yt[g == k].min() == yt[g == k].max() for k in np.unique(g))
    return float(dp), float(eo), undefined


def _wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval for an accuracy of k/n: shows how much a small group's number can move."""
    if n == 0:
        return [0.0, 1.0]
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]


def fairness_report(y_true: list[Any] | np.ndarray, y_pred: list[Any] | np.ndarray, groups: list[str],
                    classes: list[str], *, min_group_size: int = 1, group_col: str | None = None
                    ) -> dict[str, Any]:
    """Per-group quality and disparities (see the module docstring). y_true/y_pred hold class names (or
    indices into `classes`); the result is JSON-serialisable."""
    names = [str(c) for c in classes]

    def as_names(y: Any) -> np.ndarray:
        vals = list(y)
        if all(str(v) in names for v in vals):
            return np.array([str(v) for v in vals], dtype=object)
        if all(isinstance(v, (int, np.integer)) and 0 <= v < len(names) for v in vals):
            return np.array([names[int(v)] for v in vals], dtype=object)
        raise ValueError(f"labels must be class names {names} or indices into them")

    yt, yp, g = as_names(y_true), as_names(y_pred), np.array([str(x) for x in groups], dtype=object)
    if not len(yt) == len(yp) == len(g):
        raise ValueError(f"y_true, y_pred and groups differ in length: {len(yt)}, {len(yp)}, {len(g)}")
    binary = len(names) == 2
    pos = names[1] if binary else None
    sel: dict[str, Any] = ({"selection_rate": partial(selection_rate, pos_label=pos)} if binary else
                           {f"sel:{c}": partial(selection_rate, pos_label=c) for c in names})
    mf = MetricFrame(metrics={"n": count, "accuracy": accuracy_score,
                              "macro_f1": partial(f1_score, average="macro", zero_division=0), **sel},
                     y_true=yt, y_pred=yp, sensitive_features=pd.Series(g, name="group"))
    by = mf.by_group
    out_groups: dict[str, dict[str, Any]] = {}
    for name in sorted(by.index, key=str):
        row = by.loc[name]
        n = int(row["n"])
        out_groups[str(name)] = {
            "n": n, "accuracy": float(row["accuracy"]), "macro_f1": float(row["macro_f1"]),
            "selection_rate": float(row["selection_rate"]) if binary else {c: float(row[f"sel:{c}"]) for c in names},
            "accuracy_ci95": _wilson(round(row["accuracy"] * n), n), "small": n < min_group_size}
    notes: list[str] = []
    known = g != MISSING
    missing = int((~known).sum())
    real = sorted({str(x) for x in g[known]})
    if not real:
        raise DataError("no example has a group label: check the group column or metadata file")
    if missing:
        notes.append(f"{missing} example(s) have no group ({MISSING!r}): shown, but left out of the "
                     "differences and the worst group")
    if binary:
        notes.append(f"binary task: positive class = {pos!r} (selection rate = share predicted {pos!r})")
    else:
        notes.append("multiclass: parity and odds differences are computed one-vs-rest per class; the "
                     "headline values are the maximum over classes (see per_class)")
    per_class: dict[str, dict[str, float]] = {}
    dp = eo = 0.0
    if len(real) < 2:
        notes.append("only one group: fairness differences need at least 2 groups, so they are 0")
    else:
        undefined = False
        for c in ([pos] if binary else names):
            d, e, u = binary_gaps((yt[known] == c).astype(int), (yp[known] == c).astype(int), g[known])
            undefined |= u
            per_class[str(c)] = {"demographic_parity_difference": d, "equalized_odds_difference": e}
        dp = max(v["demographic_parity_difference"] for v in per_class.values())
        eo = max(v["equalized_odds_difference"] for v in per_class.values())
        if undefined:
            notes.append("some group has no true positives or no true negatives for a class: Fairlearn counts "
                         "its undefined true/false-positive rate as 0, which can inflate equalized odds")
    small = [k for k in real if out_groups[k]["small"]]
    ranked = [k for k in real if k not in small] or real  # small groups' accuracies are mostly noise
    if small:
        notes.append(f"{len(small)} group(s) have fewer than {min_group_size} examples ({', '.join(small[:10])})"
                     f": their numbers are noisy (see accuracy_ci95)" + ("; left out of the worst group and the "
                                                                      "gap" if len(ranked) < len(real) else ""))
    worst = min(ranked, key=lambda k: (out_groups[k]["accuracy"], k))
    best = max(out_groups[k]["accuracy"] for k in ranked)
    return {
        "group_col": group_col, "n": len(yt), "groups": out_groups,
        "demographic_parity_difference": finite_or_none(dp), "equalized_odds_difference": finite_or_none(eo),
        "per_class": {} if binary else per_class, "positive_class": pos,
        "worst_group": worst, "worst_group_accuracy": out_groups[worst]["accuracy"],
        "accuracy_gap": best - out_groups[worst]["accuracy"], "missing_groups": missing,
        "min_group_size": min_group_size, "notes": notes,
    }


def fairness_summary_lines(report: dict[str, Any], max_groups: int = 30) -> list[str]:
    """A short plain-text table for terminals, worst groups first."""
    groups = report.get("groups") or {}
    head = f"Fairness by {report.get('group_col') or 'group'!s} (n={report.get('n')}"
    head += f", positive class {report['positive_class']!r})" if report.get("positive_class") else ")"
    width = max([len("group"), *(len(str(k)) for k in groups)])
    width = min(width, 30)
    lines = [head, f"{'group':<{width}}  {'n':>6}  {'accuracy':>8}  {'macro_f1':>8}"]
    order = sorted(groups, key=lambda k: (groups[k]["accuracy"], str(k)))
    for k in order[:max_groups]:
        v = groups[k]
        lines.append(f"{str(k)[:width]:<{width}}  {v['n']:>6}  {v['accuracy']:>8.3f}  {v['macro_f1']:>8.3f}"
                     + ("  (small)" if v.get("small") else ""))
    if len(order) > max_groups:
        lines.append(f"... {len(order) - max_groups} more group(s)")

    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines.append(f"demographic parity difference {f(report.get('demographic_parity_difference'))}, "
                 f"equalized odds difference {f(report.get('equalized_odds_difference'))}")
    lines.append(f"worst group {report.get('worst_group')!s} (accuracy {f(report.get('worst_group_accuracy'))}), "
                 f"accuracy gap {f(report.get('accuracy_gap'))}")
    lines.extend(f"note: {n}" for n in report.get("notes") or [])
    return lines


__all__ = ["MISSING", "PATH_COLUMNS", "fairness_report", "fairness_summary_lines", "group_labels_from_metadata",
           "group_labels_from_table"]
