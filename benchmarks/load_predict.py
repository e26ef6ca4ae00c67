#!/usr/bin/env python
"""`load_model(D).predict([2 texts])` as a whole process, as a user times it: this checkout against an older
commit (a git worktree), alternating, on the same model directory (a MiniLM probe on 400 SST-2 texts, written
by the older commit so that both can read it). Rows go to benchmarks/results/load_predict.csv.

    python benchmarks/load_predict.py --before bde406c --runs 3
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, describe_machine, git  # (benchmarks/ is on sys.path when this runs as a script)

SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
FIT = """
import pandas as pd, sys
from fmadapt import TextClassifier
df = pd.read_csv(sys.argv[1], sep="\\t", quoting=3, dtype=str).set_axis(["label", "text"], axis=1)
TextClassifier(strategy="probe").fit(df.sample(400, random_state=0)).save_pretrained(sys.argv[2], report=False)
"""
PREDICT = """
import json, sys, time
t = time.perf_counter()
from fmadapt import load_model
pred = load_model(sys.argv[1]).predict(["a gripping, funny film", "dull and far too long"])
print(json.dumps({"inside": time.perf_counter() - t, "lightning": "lightning" in sys.modules,
                  "pred": [str(p) for p in pred]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare with")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "load_predict.csv"))
    args = ap.parse_args()
    commit = git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", "src") else "")
    before = git("rev-parse", "--short", args.before)
    started = dt.datetime.now().isoformat(timespec="seconds")
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="fmadapt-load-") as tmp:
        wt = Path(tmp) / "before"
        git("worktree", "add", "--detach", str(wt), before)
        try:
            srcs = {"before": str(wt / "src"), "after": str(ROOT / "src")}
            model = Path(tmp) / "model"
            subprocess.run([sys.executable, "-c", FIT, str(SST2), str(model)], check=True,
                           env=dict(os.environ, PYTHONPATH=srcs["before"]), capture_output=True)
            rows = []
            for run in range(args.runs):
                for side in ("before", "after"):
                    t = time.perf_counter()
                    r = subprocess.run([sys.executable, "-c", PREDICT, str(model)], capture_output=True, text=True,
                                       env=dict(os.environ, PYTHONPATH=srcs[side]), check=True)
                    wall = time.perf_counter() - t
                    out = json.loads(r.stdout.strip().splitlines()[-1])
                    rows.append({"side": side, "code": before if side == "before" else commit, "run": run,
                                 "process_seconds": round(wall, 2), "inside_seconds": round(out["inside"], 2),
                                 "lightning_imported": out["lightning"], "pred": " ".join(out["pred"])})
                    print(rows[-1], flush=True)
        finally:
            git("worktree", "remove", "--force", str(wt))
    mean = {s: statistics.mean(r["process_seconds"] for r in rows if r["side"] == s) for s in ("before", "after")}
    print(f"process seconds, mean of {args.runs}: before {mean['before']:.2f}, after {mean['after']:.2f}: "
          f"{mean['before'] / mean['after']:.2f}x")
    path = Path(args.csv)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["commit", "date", "machine", *rows[0]])
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"commit": commit, "date": started, "machine": machine, **r})


if __name__ == "__main__":
    main()
