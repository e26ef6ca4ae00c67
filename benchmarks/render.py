#!/usr/bin/env python
"""The benchmark tables of the documentation, rendered from `benchmarks/results/*.csv` (nothing typed by hand):

    python benchmarks/render.py --out docs/benchmarks/results.md     # `mkdocs build` runs the same (docs/hooks.py)

For a topic with a main metric: the best row per (dataset, method) over every run, and its difference to the
baseline method measured in the SAME run (same commit and start time), with the ratio of their seconds; a cell
is empty where that run did not measure the baseline. For timing topics: the latest run's rows as they are.
Every row names its run (commit, date), so a figure in the docs can be traced to the CSV row it came from.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table  # noqa: E402


def _defaults_baseline(method: str) -> str:
    return "hand_finetune" if method.startswith("finetune") or method == "auto" else "hand_probe"


#: topic -> (metrics as (column, higher is better), seconds column, method -> its baseline method, title)
TOPICS: dict[str, tuple[list[tuple[str, bool]], str, Callable[[str], str | None], str]] = {
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
}


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


def best_table(rows: list[dict[str, str]], metrics: list[tuple[str, bool]], seconds: str,
               baseline: Callable[[str], str | None]) -> str:
    run = lambda r: (r["commit"], r["date"])  # noqa: E731
    by_run = {(run(r), r["dataset"], r["method"]): r for r in rows}
    best: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        m = metric_of(r, metrics)
        if m is None:
            continue
        key = (r["dataset"], r["method"])
        old = best.get(key)
        om = metric_of(old, metrics) if old else None
        if om is None or (m[2] > om[2] if m[1] else m[2] < om[2]):
            best[key] = r
    out = []
    for (ds, method), r in sorted(best.items()):
        name, higher, v = metric_of(r, metrics)  # type: ignore[misc]
        base_name = baseline(method)
        base = by_run.get((run(r), ds, base_name)) if base_name and base_name != method else None
        bm = metric_of(base, metrics) if base else None
        diff = f"{(v - bm[2]) * (100 if name in ('accuracy', 'micro_f1', 'auc') else 1):+.2f}" if bm else ""
        s, bs = _num(r.get(seconds)), _num(base.get(seconds)) if base else None
        ratio = f"{s / bs:.2f}x" if s and bs else ""
        out.append([ds, f"`{method}`", f"{name} {v:.4f}", f"{s:.0f}" if s is not None else "",
                    f"`{base_name}`" if base else "", diff, ratio, f"{r['commit']}, {r['date']}"])
    return markdown_table(["dataset", "method", "best", "seconds", "baseline (same run)", "Δ (points; RMSE)",
                           "seconds / baseline's", "run"], out, numeric_from=2)


def latest_table(rows: list[dict[str, str]]) -> str:
    last = (rows[-1]["commit"], rows[-1]["date"])  # rows are appended: the file's last row is the latest run's
    last_rows = [r for r in rows if (r["commit"], r["date"]) == last]
    cols = [c for c in last_rows[0] if c not in ("commit", "date", "machine")]
    return (f"Latest run: {last[0]}, {last[1]}, {last_rows[0].get('machine', '')}.\n\n"
            + markdown_table(cols, [[r.get(c, "") for c in cols] for r in last_rows], numeric_from=len(cols)))


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
            parts += [f"## {title}\n", f"`benchmarks/results/{path.name}`, {len(rows)} rows; the best row per "
                      "dataset and method.\n", best_table(rows, metrics, seconds, baseline)]
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
