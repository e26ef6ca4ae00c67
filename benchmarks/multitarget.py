"""Several targets from one table against one model per target, as a user runs them (whole `fmadapt` processes).

    python benchmarks/multitarget.py --csv benchmarks/results/multitarget.csv
    python benchmarks/multitarget.py --strategy finetune --train-rows 3000 --csv benchmarks/results/multitarget.csv
    python benchmarks/multitarget.py --strategy finetune --train-rows 3000 --methods targets,targets_features \
        --csv benchmarks/results/multitarget.csv

Clothing reviews, `rating` as a number and `recommended` 0/1, the table's other columns beside the text
(`--features`, the six columns of benchmarks/table_features.py; with a fine-tuning `--strategy`, none unless the
method says so), the packaged MiniLM with the strategy's defaults:
  separate   `fmadapt fit train.csv --label rating --task regression ...` then `... --label recommended ...`, and
             one `fmadapt predict` per model
  targets    `fmadapt fit train.csv --label rating:regression --label recommended ...` (one backbone pass per
             input for both heads), one `fmadapt predict`
  targets_features  the same with the six table columns beside the text (`--features`; with a fine-tuning
             strategy their linear head trains with the rest)
Each method starts from an empty feature cache (its own FMADAPT_CACHE), so both pay the feature extraction they
need. Scores on the test set: rating RMSE (lower is better), recommended ROC AUC of the probability of 1.
Seconds: the fit processes' and the predict processes' wall time (imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "clothing_reviews")
#: the table's columns beside the text, as benchmarks/table_features.py reads them (with `auto`, a target's
#: single-target model would read the other target as a feature: not the same task)
TABLE = "age,positive_feedback_count,clothing_id,division_name,department_name,class_name"
FIT = ["--text", "review_text", "--features", TABLE, "--report", "off"]


def run(args: list[str], cache: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fmadapt", *args], check=True, env={**os.environ, "FMADAPT_CACHE": cache},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def scores(test: pd.DataFrame, rating: pd.Series, prob: pd.Series) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    ok = rating.notna() & prob.notna()
    y_r, y_b = test["rating"].astype(float)[ok], test["recommended"].astype(float)[ok]
    return {"rmse": float(np.sqrt(((rating[ok].astype(float) - y_r) ** 2).mean())),
            "auc": float(roc_auc_score(y_b, prob[ok].astype(float))), "n_test": int(ok.sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--csv", default=None, help="append rows to this CSV")
    ap.add_argument("--strategy", default="probe")
    ap.add_argument("--train-rows", type=int, default=None, help="the first N training rows only")
    ap.add_argument("--methods", default="separate,targets", help="of separate, targets, targets_features")
    args = ap.parse_args()
    methods = args.methods.split(",")
    train, test = os.path.join(args.data, "train.csv"), os.path.join(args.data, "test.csv")
    frame = pd.read_csv(test, keep_default_na=False, na_values=[""])
    work = Path(tempfile.mkdtemp(prefix="fmadapt-multitarget-"))
    if args.train_rows:
        train = str(work / "train.csv")
        pd.read_csv(os.path.join(args.data, "train.csv")).head(args.train_rows).to_csv(train, index=False)
    fit_args = (FIT if args.strategy == "probe" else ["--text", "review_text", "--report", "off"]) + \
        ["--strategy", args.strategy]
    rows = []

    def predictions(model: Path, name: str, cache: str) -> tuple[pd.DataFrame, float]:
        out = work / f"{name}.csv"
        seconds = run(["predict", str(model), test, "--text", "review_text", "--output", str(out)], cache)
        p = pd.read_csv(out)
        p = p[p["id"].astype(str).str.isdigit()].assign(id=lambda d: d["id"].astype(int)).set_index("id")
        return p.reindex(range(len(frame))), seconds

    if "separate" in methods:
        separate(work, train, test, frame, fit_args, predictions, rows)
    for method in ("targets", "targets_features"):
        if method not in methods:
            continue
        cache = str(work / f"cache-{method}")
        extra = ["--features", TABLE] if method == "targets_features" and "--features" not in fit_args else []
        fit_s = run(["fit", train, "--label", "rating:regression", "--label", "recommended", "--out",
                     str(work / method), *fit_args, *extra], cache)
        p, s = predictions(work / method, method, cache)
        rows.append({"method": method, **scores(frame, p["rating_pred"], p["recommended_prob_1"]),
                     "fit_seconds": fit_s, "predict_seconds": s, "options": fit_args + extra})
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        print(f"{r['method']:16s} RMSE {r['rmse']:.4f}  AUC {r['auc']:.4f}  fit {r['fit_seconds']:.1f} s "
              f"({r['fit_seconds'] / base['fit_seconds']:.2f}x)  predict {r['predict_seconds']:.1f} s "
              f"({r['predict_seconds'] / base['predict_seconds']:.2f}x)")
    if args.csv:
        sys.path.insert(0, os.path.dirname(__file__))
        from common import append_rows

        append_rows(Path(args.csv), ["dataset", "method", "options", "rmse", "auc", "n_test", "fit_seconds",
                                     "predict_seconds", "fit_ratio", "predict_ratio"],
                    [{"dataset": "clothing_reviews" + (f"[:{args.train_rows}]" if args.train_rows else ""),
                      "method": r["method"], "options": json.dumps(r["options"]),
                      "rmse": round(r["rmse"], 4), "auc": round(r["auc"], 4), "n_test": r["n_test"],
                      "fit_seconds": round(r["fit_seconds"], 1), "predict_seconds": round(r["predict_seconds"], 1),
                      "fit_ratio": round(r["fit_seconds"] / base["fit_seconds"], 3),
                      "predict_ratio": round(r["predict_seconds"] / base["predict_seconds"], 3)} for r in rows])


def separate(work: Path, train: str, test: str, frame: pd.DataFrame, fit_args: list[str], predictions: Any,
             rows: list[dict[str, Any]]) -> None:
    """One model per target (the baseline when run)."""
    cache = str(work / "cache-separate")
    fit_s = run(["fit", train, "--label", "rating", "--task", "regression", "--out", str(work / "rating"),
                 *fit_args], cache)
    fit_s += run(["fit", train, "--label", "recommended", "--out", str(work / "recommended"), *fit_args], cache)
    pr, s1 = predictions(work / "rating", "rating", cache)
    pb, s2 = predictions(work / "recommended", "recommended", cache)
    rows.append({"method": "separate", **scores(frame, pr["pred"], pb["prob_1"]), "fit_seconds": fit_s,
                 "predict_seconds": s1 + s2, "options": fit_args})
    print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
