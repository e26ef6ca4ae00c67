"""Text + table columns on clothing reviews (issue 22's target: `rating` RMSE and `recommended` AUC each better with
text + features than with the text alone or the features alone).

    python benchmarks/table_features.py --csv benchmarks/results/table_features.csv

Rows (one run; the fmadapt rows share one feature cache, so the second pays no feature extraction):
  features_only   the script a user writes for the table alone (no fmadapt import): scikit-learn
                  HistGradientBoosting on age, positive_feedback_count, clothing_id and the three category columns
                  (categories native), default settings
  text_only       fmadapt's probe on the review text (`TextClassifier(task=...)`, defaults)
  text_features   the same with `features="auto"` (the table's other columns beside the text) and the default
                  `table_head="auto"`: a linear term in the head, or boosted trees stacked over the text head's
                  outputs and the columns when they are better on validation (the row's options say which)
  text_features_linear / text_features_stack   the same with `table_head` "linear" / "stack" (each forced)
Targets: `rating` as a number (`task="regression"`: RMSE, lower is better) and `recommended` 0/1 (ROC AUC of the
probability of 1, higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "clothing_reviews")
TABLE = ["age", "positive_feedback_count", "clothing_id", "division_name", "department_name", "class_name"]


# --- the hand-written baseline for the table alone (<= 30 lines, no fmadapt) ----------------------------------
def features_only(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cats = ["division_name", "department_name", "class_name"]
    x_tr, x_te = train[TABLE].copy(), test[TABLE].copy()
    for c in cats:
        kinds = pd.CategoricalDtype(sorted(x_tr[c].dropna().astype(str).unique()))
        x_tr[c], x_te[c] = x_tr[c].astype(str).astype(kinds), x_te[c].astype(str).astype(kinds)
    if target == "rating":
        return HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0).fit(
            x_tr, train[target]).predict(x_te)
    clf = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0).fit(x_tr, train[target])
    return clf.predict_proba(x_te)[:, list(clf.classes_).index(1)]
# ----------------------------------------------------------------------------------------------------------------


def fmadapt_fit(train: pd.DataFrame, test: pd.DataFrame, target: str, features: str | None,
                table_head: str = "auto") -> tuple[np.ndarray, dict]:
    from fmadapt import TextClassifier

    task = "regression" if target == "rating" else "classification"
    cols = ["text", target, *TABLE] if features else ["text", target]
    clf = TextClassifier(task=task, text_col="text", label_col=target, features=features, progress=False,
                         **({"table_head": table_head} if features else {})).fit(
        train[cols].assign(**{target: train[target].astype(str)}))
    h = clf.history_
    info = {k: h[k] for k in ("C", "alpha", "scaling") if h.get(k) is not None}
    if h.get("table_head"):
        info["table_head"] = {k: v for k, v in h["table_head"].items() if k.startswith(("val_", "linear", "kept"))}
    if task == "regression":
        return clf.predict(test[cols]), info
    return clf.predict_proba(test[cols])["prob_1"].to_numpy(), info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--csv", default=None, help="append rows to this CSV")
    args = ap.parse_args()
    os.environ["FMADAPT_CACHE"] = tempfile.mkdtemp(prefix="fmadapt-table-cache-")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from sklearn.metrics import roc_auc_score

    read = {"keep_default_na": False, "na_values": [""]}
    train = pd.read_csv(os.path.join(args.data, "train.csv"), **read).rename(columns={"review_text": "text"})
    test = pd.read_csv(os.path.join(args.data, "test.csv"), **read).rename(columns={"review_text": "text"})
    train = train[train["text"].fillna("").str.strip() != ""].reset_index(drop=True)  # (fmadapt skips empty texts)
    test = test[test["text"].fillna("").str.strip() != ""].reset_index(drop=True)
    rows = []
    for target in ("rating", "recommended"):
        y = test[target].astype(float).to_numpy()

        def score(p: np.ndarray, target: str = target, y: np.ndarray = y) -> dict[str, float]:
            if target == "rating":
                return {"rmse": float(np.sqrt(((p - y) ** 2).mean()))}
            return {"auc": float(roc_auc_score(y, p))}

        t = time.perf_counter()
        rows.append((target, "features_only", {}, score(features_only(train, test, target)),
                     time.perf_counter() - t))
        for name, features, head in (("text_only", None, "auto"), ("text_features", "auto", "auto"),
                                     ("text_features_linear", "auto", "linear"),
                                     ("text_features_stack", "auto", "stack")):
            t = time.perf_counter()
            p, info = fmadapt_fit(train, test, target, features, head)
            rows.append((target, name, info, score(p), time.perf_counter() - t))
            print(rows[-1], flush=True)

    for target, method, info, s, seconds in rows:
        print(f"{target:12s} {method:20s} " + "  ".join(f"{k} {v:.4f}" for k, v in s.items()) +
              f"  {seconds:.1f} s  {info}")
    if args.csv:
        sys.path.insert(0, os.path.dirname(__file__))
        from common import append_rows

        append_rows(Path(args.csv), ["dataset", "method", "options", "rmse", "auc", "n_test", "seconds"],
                    [{"dataset": f"clothing_{target}", "method": method, "options": json.dumps(info),
                      **{k: round(v, 4) for k, v in s.items()}, "n_test": len(test), "seconds": round(seconds, 1)}
                     for target, method, info, s, seconds in rows])

if __name__ == "__main__":
    main()
