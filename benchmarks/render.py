#!/usr/bin/env python
"""The benchmark tables of the documentation, rendered from `benchmarks/results/*.csv` (nothing typed by hand):

    python benchmarks/render.py --out docs/benchmarks/results.md     # `mkdocs build` runs the same (docs/hooks.py)

For a topic with a main metric: the best row per (dataset, regime, method) over every run (a CSV without a
regime column: per dataset and method), and its difference to the baseline method measured in the SAME run (same
commit and start time) on the same dataset and regime, with the ratio of their seconds; a cell is empty where that
run did not measure the baseline. For timing topics: the latest run's rows as they are.
Every row names its run (commit, date), so a figure in the docs can be traced to the CSV row it came from.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, md_table  # noqa: E402


def _defaults_baseline(method: str) -> str:
    return "hand_finetune" if method.startswith("finetune") or method == "auto" else "hand_probe"


def _throughput_baseline(method: str) -> tuple[str, ...]:
    if method.startswith("cache_"):  # cached activations: the like-for-like uncached run (images: no augmentation)
        return ("cache_off_noaug", "cache_off") if method == "cache_on" else ()
    if method.startswith("lr_grid"):
        return ("lr_grid_default",)
    return ("st_encode", "timm_eager")  # texts: sentence-transformers encode; images: eager timm


#: topic -> (metrics as (column, higher is better), seconds column, method -> its baseline method (or several:
#: the first one the same run measured on the same dataset and regime), title)
TOPICS: dict[str, tuple[list[tuple[str, bool]], str, Callable[[str], str | tuple[str, ...] | None], str]] = {
    "defaults": ([("accuracy", True)], "seconds", _defaults_baseline,
                 "Defaults suite (issue 21): fmadapt against the hand-written scripts (`benchmarks/defaults.py`)"),
    "ngram": ([("accuracy", True)], "seconds", lambda m: None,
              "The n-gram TF-IDF candidate (`benchmarks/ngram_features.py`)"),
    "multilabel": ([("micro_f1", True)], "seconds", lambda m: "hand_probe",
                   "Several labels per text (`benchmarks/multilabel.py`)"),
    "regression": ([("rmse", False)], "seconds", lambda m: "hand_ridge",
                   "A number per text (`benchmarks/regression.py`)"),
    "table_features": ([("rmse", False), ("auc", True)], "seconds", lambda m: "text_only",
                       "Table columns beside the text (`benchmarks/table_features.py`)"),
    "multitarget": ([("rmse", False), ("auc", True)], "fit_seconds", lambda m: "separate",
                    "Several targets with one backbone (`benchmarks/multitarget.py`)"),
    "core": ([("accuracy", True)], "seconds", lambda m: ("st_logreg", "timm_logreg"),
             "Core: fmadapt against frozen embeddings + LogisticRegression (`benchmarks/core.py`)"),
    "strategies": ([("accuracy", True)], "seconds",
                   lambda m: None if m in ("setfit", "tfidf_logreg") else ("setfit", "tfidf_logreg", "probe"),
                   "Every strategy, few-shot against SetFit (`benchmarks/strategies.py`; baseline: SetFit, "
                   "TF-IDF or else the probe of the same regime)"),
    "throughput": ([("items_per_s", True), ("accuracy", True), ("val_accuracy", True)], "seconds",
                   _throughput_baseline, "CPU throughput against sentence-transformers and eager timm "
                   "(`benchmarks/throughput.py`)"),
    "int8": ([("items_per_s", True), ("accuracy", True)], "seconds",
             lambda m: "probe_fp32" if m.startswith("probe") else "st_encode",
             "The int8 text runtime (`benchmarks/int8.py`)"),
    "images_fast": ([("items_per_s", True), ("accuracy", True)], "seconds",
                    lambda m: "probe_fp32" if m.startswith("probe") else "timm_eager",
                    "The image fast path at 224 px (`benchmarks/images_fast.py`)"),
    "train_speed": ([("examples_per_s", True)], "seconds", lambda m: ("fp32_nchw", "fp32"),
                    "Training-step speed (`benchmarks/train_speed.py`)"),
}


def table(header: list[str], rows: list[list[object]], numeric_from: int) -> str:
    """md_table with columns from `numeric_from` on right-aligned and empty cells as "—"."""
    align = "|".join("---" if i < numeric_from else "---:" for i in range(len(header)))
    return md_table(header, [["—" if v is None or v == "" else v for v in r] for r in rows], align) + "\n"


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def metric_of(row: dict[str, str], metrics: list[tuple[str, bool]]) -> tuple[str, bool, float] | None:
    """The row's main metric: the first of `metrics` it has a value for."""
    for name, higher in metrics:
        v = _num(row.get(name))
        if v is not None:
            return name, higher, v
    return None


def _baselines(baseline: Callable[[str], str | tuple[str, ...] | None], method: str) -> tuple[str, ...]:
    b = baseline(method)
    return () if b is None else (b,) if isinstance(b, str) else tuple(b)


def best_table(rows: list[dict[str, str]], metrics: list[tuple[str, bool]], seconds: str,
               baseline: Callable[[str], str | tuple[str, ...] | None]) -> str:
    """The best row per (dataset, regime, method); `baseline(method)` names the method it is compared with, or
    several (the first one the same run measured on the same dataset and regime is taken). The regime column
    is shown only where rows have one."""
    run = lambda r: (r["commit"], r["date"])  # noqa: E731
    key = lambda r: (r["dataset"], r.get("regime") or "")  # noqa: E731
    by_run = {(run(r), *key(r), r["method"]): r for r in rows}
    best: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rows:
        m = metric_of(r, metrics)
        if m is None:
            continue
        k = (*key(r), r["method"])
        old = best.get(k)
        om = metric_of(old, metrics) if old else None
        if om is None or (m[2] > om[2] if m[1] else m[2] < om[2]):
            best[k] = r
    with_regime = any(regime for _, regime, _ in best)
    out = []
    for (ds, regime, method), r in sorted(best.items()):
        name, higher, v = metric_of(r, metrics)  # type: ignore[misc]
        base_name, base = "", None
        for b in _baselines(baseline, method):
            if b != method and (run(r), ds, regime, b) in by_run:
                base_name, base = b, by_run[(run(r), ds, regime, b)]
                break
        bm = metric_of(base, metrics) if base else None
        points = name in ("accuracy", "micro_f1", "auc") or name.endswith("accuracy")
        diff = f"{(v - bm[2]) * (100 if points else 1):+.2f}" if bm else ""
        s, bs = _num(r.get(seconds)), _num(base.get(seconds)) if base else None
        ratio = f"{s / bs:.2f}x" if s and bs else ""
        secs = "" if s is None else f"{s:.0f}" if s >= 10 else f"{s:.3g}"
        out.append([ds, *([regime] if with_regime else []), f"`{method}`", f"{name} {v:.4f}", secs,
                    f"`{base_name}`" if base else "", diff, ratio,
                    f"{r['commit']}, {r['date']}"])
    return table(["dataset", *(["regime"] if with_regime else []), "method", "best", "seconds",
                           "baseline (same run)", "Δ (points; RMSE)", "seconds / baseline's", "run"], out,
                          numeric_from=3 if with_regime else 2)


def latest_table(rows: list[dict[str, str]]) -> str:
    last = (rows[-1]["commit"], rows[-1]["date"])  # rows are appended: the file's last row is the latest run's
    last_rows = [r for r in rows if (r["commit"], r["date"]) == last]
    cols = [c for c in last_rows[0] if c not in ("commit", "date", "machine")]
    return (f"Latest run: {last[0]}, {last[1]}, {last_rows[0].get('machine', '')}.\n\n"
            + table(cols, [[r.get(c, "") for c in cols] for r in last_rows], numeric_from=len(cols)))


def render(results: Path = RESULTS) -> str:
    parts = ["# Benchmark results\n",
             "Generated by `python benchmarks/render.py` from `benchmarks/results/*.csv` (every benchmark script "
             "appends its rows there: commit, date, machine, then its measurements). On a 2-core CPU unless the "
             "run says otherwise. \"Same run\": the baseline measured by the same invocation (same commit and start "
             "time); figures of different runs are not compared.\n"]
    for path in sorted(results.glob("*.csv")):
        rows = read(path)
        if not rows:
            continue
        topic = path.stem
        if topic in TOPICS:
            metrics, seconds, baseline, title = TOPICS[topic]
            per = "dataset, regime and method" if any(r.get("regime") for r in rows) else "dataset and method"
            parts += [f"## {title}\n", f"`benchmarks/results/{path.name}`, {len(rows)} rows; the best row per "
                      f"{per}.\n", best_table(rows, metrics, seconds, baseline)]
        else:
            parts += [f"## {topic}\n", f"`benchmarks/results/{path.name}`, {len(rows)} rows.\n", latest_table(rows)]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--out", help="write here (default: stdout)")
    args = ap.parse_args()
    text = render(Path(args.results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
