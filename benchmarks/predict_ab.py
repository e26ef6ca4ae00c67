#!/usr/bin/env python
"""The prediction speed of saved text models under two commits, in one run: for each round and each commit (in
turn, so both share the machine's state), a fresh process loads every model and times `predict_proba` on the
SST-2 dev sentences (872; texts per second, best of 5 after a warm-up), then `fmadapt predict MODEL` runs once on
the same sentences as a whole process (start-up included) for the last model. The commits are read from git
worktrees (`--before DIR --after DIR`); models are any saved fmadapt text models.

Rows go to benchmarks/results/predict_ab.csv: side (before|after), its commit, round, model, per_s (in process)
or process_seconds (whole process).

    python benchmarks/predict_ab.py --before /tmp/bench-u --after /tmp/bench-t \\
        --models /tmp/distw/teacher,/tmp/distw/student_static256_h512_unlabeled
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, add_csv_argument, append_rows, csv_path, git, measured_process, stamp

DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
FIELDS = ["side", "side_commit", "round", "model", "per_s", "process_seconds"]

TIMER = '''
import json, sys
import pandas as pd
from fmadapt import load_model
from distill import _speed
texts = pd.read_csv(sys.argv[1])["text"].tolist()
for d in sys.argv[2:]:
    print(json.dumps({"model": d, "per_s": _speed(load_model(d, cache=False), texts, repeats=5)}))
'''


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a worktree of the first commit")
    ap.add_argument("--after", required=True, help="a worktree of the second commit")
    ap.add_argument("--models", required=True, help="comma-separated saved model directories")
    ap.add_argument("--rounds", type=int, default=3)
    add_csv_argument(ap, "predict_ab")
    args = ap.parse_args()
    run_stamp = stamp()
    models = [m for m in args.models.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="fmadapt-ab-"))
    data = work / "dev.csv"
    pd.DataFrame({"text": pd.read_csv(DEV, sep="\t", quoting=3, dtype=str)["content"]}).to_csv(data, index=False)
    rows = []
    for r in range(args.rounds):
        for side, tree in (("before", args.before), ("after", args.after)):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tree) / "src"), str(Path(__file__).parent)])}
            commit = git("rev-parse", "--short", "HEAD", cwd=Path(tree))
            out = subprocess.run([sys.executable, "-c", TIMER, str(data), *models], env=env, capture_output=True,
                                 text=True, check=True).stdout
            for line in out.splitlines():
                rows.append({"side": side, "side_commit": commit, "round": r, **json.loads(line)})
            proc, seconds, _ = measured_process([sys.executable, "-m", "fmadapt", "predict", models[-1], str(data),
                                                 "-o", str(work / f"{side}.csv")], env=env)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            rows.append({"side": side, "side_commit": commit, "round": r, "model": models[-1],
                         "process_seconds": round(seconds, 2)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    out_csv = csv_path(args.csv, "predict_ab")
    if out_csv:
        append_rows(out_csv, FIELDS, rows, run_stamp)
    df = pd.DataFrame(rows)
    print(df.groupby(["model", "side"])[["per_s", "process_seconds"]].median().to_string())


if __name__ == "__main__":
    main()
