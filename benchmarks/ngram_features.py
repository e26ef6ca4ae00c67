#!/usr/bin/env python
"""Which n-gram features the classical text candidate of `auto` uses (runtime/ngram.py ANALYZERS), chosen over
the six text sets of the defaults suite (same prepared files: benchmarks/defaults.py `prepare`).

    python benchmarks/ngram_features.py thucnews,sst2,ag_news,reuters,clothing_rating,clothing_recommended \\
        > rows.jsonl
    python benchmarks/ngram_features.py thucnews --feats char13+word12,char13+jieba12,jieba12  # Chinese words

For each dataset and feature set: TF-IDF (sublinear tf, min_df 2) vectorizers fitted on 80 % of the training
file, C of a LogisticRegression chosen from 1, 3, 10, 30, 100 on the other 20 %, then refit on the whole
training file with that C and scored on the test file (as `auto` does: choose on validation, refit on all).
One JSON row per line: data, feats, C, val (accuracy on the 20 %), test (accuracy), nfeat, s (seconds).
The same rows are appended to benchmarks/results/ngram.csv (--csv): method `tfidf+logreg`, the feature set in
`features` (and its vectorizers in `options`), peak_mib = this process's peak while that row ran."""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_csv_argument, append_rows, csv_path, options_json, reset_peak, stamp, window_peak_mib
from defaults import prepare
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

FEATS = {
    "char13": [dict(analyzer="char_wb", ngram_range=(1, 3))],
    "char14": [dict(analyzer="char_wb", ngram_range=(1, 4))],
    "char13+word12": [dict(analyzer="char_wb", ngram_range=(1, 3)), dict(analyzer="word", ngram_range=(1, 2))],
    "char24+word12": [dict(analyzer="char_wb", ngram_range=(2, 4)), dict(analyzer="word", ngram_range=(1, 2))],
    # Chinese words (issue 26): jieba's segmentation (precise mode) in place of the word pattern, which sees a
    # whole headline without spaces as one token
    "char13+jieba12": [dict(analyzer="char_wb", ngram_range=(1, 3)),
                       dict(analyzer="word", tokenizer="jieba", ngram_range=(1, 2))],
    "jieba12": [dict(analyzer="word", tokenizer="jieba", ngram_range=(1, 2))],
}


def _jieba(text: str) -> list[str]:
    import jieba

    return [w for w in jieba.lcut(text) if w.strip()]


def vecs(spec, texts):
    vs = [TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32,
                          **({**s, "tokenizer": _jieba, "token_pattern": None, "lowercase": False}
                             if s.get("tokenizer") == "jieba" else s)) for s in spec]
    return vs, sparse.hstack([v.fit_transform(texts) for v in vs]).tocsr()


def transform(vs, texts):
    return sparse.hstack([v.transform(texts) for v in vs]).tocsr()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", help="comma list of the defaults suite's text sets (benchmarks/defaults.py)")
    ap.add_argument("work", nargs="?", default="/tmp/fmadapt-ngram-features",
                    help="folder for the prepared files (default /tmp/fmadapt-ngram-features)")
    ap.add_argument("--feats", default=None, help="comma list of feature sets to run (default: all but the jieba ones, "
                    "which need `pip install jieba`)")
    add_csv_argument(ap, "ngram")
    args = ap.parse_args()
    feats = {k: FEATS[k] for k in (args.feats.split(",") if args.feats else [k for k in FEATS if "jieba" not in k])}
    run_stamp = stamp()
    tmp = Path(args.work)
    rows = []
    for name in args.datasets.split(","):
        _, train, test, y_test = prepare(name, tmp)
        tr = pd.read_csv(train, dtype=str).fillna("")
        te = pd.read_csv(test, dtype=str).fillna("")
        a, b = train_test_split(tr, test_size=0.2, random_state=0, stratify=tr["label"])
        for fname, spec in feats.items():
            reset_peak()
            t0 = time.time()
            vs, xa = vecs(spec, a["text"])
            xb = transform(vs, b["text"])
            best = None
            for c in (1, 3, 10, 30, 100):
                m = LogisticRegression(C=c, max_iter=3000).fit(xa, a["label"])
                acc = (m.predict(xb) == b["label"].values).mean()
                if best is None or acc > best[0]:
                    best = (acc, c)
            vs, x = vecs(spec, tr["text"])
            m = LogisticRegression(C=best[1], max_iter=3000).fit(x, tr["label"])
            acc = (m.predict(transform(vs, te["text"])) == np.array(y_test)).mean()
            row = {"data": name, "feats": fname, "C": best[1], "val": round(best[0], 4), "test": round(acc, 4),
                   "nfeat": x.shape[1], "s": round(time.time() - t0, 1)}
            print(json.dumps(row), flush=True)
            rows.append({"dataset": name, "regime": f"train {len(tr)} / test {len(te)}", "method": "tfidf+logreg",
                         "features": fname,
                         "options": options_json({"vectorizers": spec, "sublinear_tf": True, "min_df": 2,
                                                  "C_grid": [1, 3, 10, 30, 100], "max_iter": 3000}),
                         "C": row["C"], "val_accuracy": row["val"], "accuracy": row["test"],
                         "n_features": row["nfeat"], "seconds": row["s"], "peak_mib": window_peak_mib()})
    path = csv_path(args.csv, "ngram")
    if path is not None:
        append_rows(path, ["dataset", "regime", "method", "features", "options", "C", "val_accuracy", "accuracy",
                           "n_features", "seconds", "peak_mib"], rows, run_stamp)


if __name__ == "__main__":
    main()
