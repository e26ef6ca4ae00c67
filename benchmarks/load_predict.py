#!/usr/bin/env python
"""`load_model(D).predict([2 texts])` as a whole process, as a user times it: this checkout against an older
commit (a git worktree), alternating, on the same model directory (a MiniLM probe on 400 SST-2 texts, written
by the older commit so that both can read it). Rows go to benchmarks/results/load_predict.csv (--csv), one per
process: method `before` (the older commit: the baseline) or `after` (this checkout); seconds = the whole process,
inside_seconds = from the import of fmadapt to the predictions, peak_mib = that process's peak memory (from its
own resource usage). The columns side and code of the older rows are still written.

    python benchmarks/load_predict.py --before bde406c --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# (benchmarks/ is on sys.path when this runs as a script)
from common import ROOT, add_csv_argument, append_rows, csv_path, git, measured_process, options_json, stamp

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
    add_csv_argument(ap, "load_predict")
    args = ap.parse_args()
    run_stamp = stamp()
    commit = git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", "src") else "")
    before = git("rev-parse", "--short", args.before)
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
                    cmd = [sys.executable, "-c", PREDICT, str(model)]
                    r, wall, peak = measured_process(cmd, env=dict(os.environ, PYTHONPATH=srcs[side]))
                    if r.returncode != 0:
                        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
                    out = json.loads(r.stdout.strip().splitlines()[-1])
                    code = before if side == "before" else commit
                    rows.append({"dataset": "sst2", "regime": "probe fitted on 400 texts; 2 texts predicted",
                                 "method": side, "options": options_json({"code": code}),
                                 "side": side, "code": code, "run": run,
                                 "process_seconds": round(wall, 2), "inside_seconds": round(out["inside"], 2),
                                 "lightning_imported": out["lightning"], "pred": " ".join(out["pred"]),
                                 "seconds": round(wall, 2), "peak_mib": peak})
                    print(rows[-1], flush=True)
        finally:
            git("worktree", "remove", "--force", str(wt))
    mean = {s: statistics.mean(r["process_seconds"] for r in rows if r["side"] == s) for s in ("before", "after")}
    print(f"process seconds, mean of {args.runs}: before {mean['before']:.2f}, after {mean['after']:.2f}: "
          f"{mean['before'] / mean['after']:.2f}x")
    path = csv_path(args.csv, "load_predict")
    if path is not None:
        append_rows(path, list(rows[0]), rows, run_stamp)
        print(f"appended {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
