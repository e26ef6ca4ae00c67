#!/usr/bin/env python
"""Which n-gram features the classical text candidate of `auto` uses (runtime/ngram.py ANALYZERS), chosen over
the six text sets of the defaults suite (same prepared files: benchmarks/defaults.py `prepare`).

    python benchmarks/ngram_features.py thucnews,sst2,ag_news,reuters,clothing_rating,clothing_recommended \
        > rows.jsonl

For each dataset and feature set: TF-IDF (sublinear tf, min_df 2) vectorizers fitted on 80 % of the training
file, C of a LogisticRegression chosen from 1, 3, 10, 30, 100 on the other 20 %, then refit on the whole
training file with that C and scored on the test file (as `auto` does: choose on validation, refit on all).
One JSON row per line: data, feats, C, val (accuracy on the 20 %), test (accuracy), nfeat, s (seconds)."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defaults import prepare  # noqa: E402

FEATS = {
    "char13": [dict(analyzer="char_wb", ngram_range=(1, 3))],
    "char14": [dict(analyzer="char_wb", ngram_range=(1, 4))],
    "char13+word12": [dict(analyzer="char_wb", ngram_range=(1, 3)), dict(analyzer="word", ngram_range=(1, 2))],
    "char24+word12": [dict(analyzer="char_wb", ngram_range=(2, 4)), dict(analyzer="word", ngram_range=(1, 2))],
}


def vecs(spec, texts):
    vs = [TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32, **s) for s in spec]
    return vs, sparse.hstack([v.fit_transform(texts) for v in vs]).tocsr()


def transform(vs, texts):
    return sparse.hstack([v.transform(texts) for v in vs]).tocsr()


def main() -> None:
    tmp = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/fmadapt-ngram-features")
    for name in sys.argv[1].split(","):
        _, train, test, y_test = prepare(name, tmp)
        tr = pd.read_csv(train, dtype=str).fillna("")
        te = pd.read_csv(test, dtype=str).fillna("")
        a, b = train_test_split(tr, test_size=0.2, random_state=0, stratify=tr["label"])
        for fname, spec in FEATS.items():
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
            print(json.dumps({"data": name, "feats": fname, "C": best[1], "val": round(best[0], 4),
                              "test": round(acc, 4), "nfeat": x.shape[1], "s": round(time.time() - t0, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
