#!/usr/bin/env python
"""`fmadapt predict` of probe models beyond one class per text, as a user times it (whole processes): the torch-free
path against the full path (FMADAPT_FAST_PATH=0: torch and Lightning imported, as before the light path took these
models), in ONE run, repeats interleaved after a warm-up, medians.

    python benchmarks/predict_tasks.py --csv benchmarks/results/predict_tasks.csv

Models (MiniLM probes fitted on the first 1,000 clothing reviews, each by `fmadapt fit`):
  rating_table   `rating` as a number with the six table columns beside the text (table_head auto)
  two_targets    `rating:regression` and `recommended` at once, with the same columns
Data to predict: the first 100 test reviews. The feature cache is emptied before every timed run (the ONNX graph
stays remembered, as on a user's second run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fastpath import run  # noqa: E402  (a whole process, timed; `clear` emptied first)

DATA = HERE.parent.parent / "shared" / "data" / "clothing_reviews"
TABLE = "age,positive_feedback_count,clothing_id,division_name,department_name,class_name"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=None, help="append rows to this CSV")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fmadapt-predict-tasks-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["FMADAPT_CACHE"] = str(work / "cache")
    slow = dict(env, FMADAPT_FAST_PATH="0")
    pd.read_csv(DATA / "train.csv").head(1000).to_csv(work / "train.csv", index=False)
    pd.read_csv(DATA / "test.csv").head(100).to_csv(work / "new.csv", index=False)
    fm = [sys.executable, "-m", "fmadapt"]
    common = ["--text", "review_text", "--features", TABLE, "--report", "off"]
    fits = {"rating_table": ["--label", "rating", "--task", "regression"],
            "two_targets": ["--label", "rating:regression", "--label", "recommended"]}
    rows = []
    for name, labels in fits.items():
        model = work / name
        run([*fm, "fit", str(work / "train.csv"), *labels, *common, "--out", str(model)], env, [])
        cmd = {k: [*fm, "predict", str(model), str(work / "new.csv"), "-o", str(work / f"{name}-{k}.csv")]
               for k in ("full", "light")}
        for key in ("full", "light"):  # warm-up (the full one remembers the graph for the light one)
            run(cmd[key], slow if key == "full" else env, [])
        times: dict[str, list[float]] = {"full": [], "light": []}
        for _ in range(args.repeats):
            for key in ("full", "light"):
                times[key].append(run(cmd[key], slow if key == "full" else env, [work / "cache" / "features"]))
        a, b = (pd.read_csv(work / f"{name}-{k}.csv") for k in ("full", "light"))
        numbers = [c for c in a.columns if c not in ("id", "text", "error") and a[c].dtype.kind == "f"]
        same = [c for c in a.columns if c not in numbers]
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"model": name, "full_s": round(med["full"], 2), "light_s": round(med["light"], 2),
                     "ratio": round(med["full"] / med["light"], 2),
                     "same_columns": list(a.columns) == list(b.columns),
                     "same_non_numbers": bool(a[same].astype(str).equals(b[same].astype(str))),
                     "max_abs_diff": float(np.nanmax(np.abs(a[numbers].to_numpy(float) - b[numbers].to_numpy(float)))),
                     "runs": json.dumps(times)})
        print(rows[-1], flush=True)
    for r in rows:
        print(f"{r['model']:13s} full {r['full_s']:.2f} s  light {r['light_s']:.2f} s  ({r['ratio']:.2f}x)  "
              f"same columns {r['same_columns']}  same labels {r['same_non_numbers']}  "
              f"max diff {r['max_abs_diff']:.2e}")
    if args.csv:
        from common import append_rows

        append_rows(Path(args.csv), ["dataset", "method", "full_s", "light_s", "ratio", "same_columns",
                                     "same_non_numbers", "max_abs_diff", "runs"],
                    [{"dataset": "clothing_reviews[:1000] -> test[:100]", "method": r["model"],
                      **{k: r[k] for k in ("full_s", "light_s", "ratio", "same_columns", "same_non_numbers",
                                           "max_abs_diff", "runs")}} for r in rows])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
