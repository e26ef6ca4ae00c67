#!/usr/bin/env python
"""`fmadapt compress` as a user runs it (issue 24): the leaderboard of a fitted model — the model, its fp32 and int8
exports, a distilled student and its exports — measured on the same held-out 20 % of DATA in one run. Rows (one per
candidate, as OUT/leaderboard.csv has them) go to benchmarks/results/compress.csv (--csv), with the whole command's
seconds in `options`.

    python benchmarks/compress.py --dataset hymenoptera --model runs/hym --data ../shared/data/hymenoptera/train
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_csv_argument, append_rows, csv_path, md_table, options_json, stamp

FIELDS = ["dataset", "method", "kind", "accuracy", "mb", "p50_ms", "p95_ms", "per_s", "refused", "options"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="a name for the rows")
    ap.add_argument("--model", required=True, help="a model directory written by fmadapt fit")
    ap.add_argument("--data", required=True, help="labeled data (20 % held out)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--extra", default="", help="more options for fmadapt compress, e.g. '--epochs 5'")
    add_csv_argument(ap, "compress")
    args = ap.parse_args()
    run_stamp = stamp()
    out = Path(args.out or tempfile.mkdtemp(prefix="fmadapt-compress-"))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fmadapt", "compress", args.model, args.data, "--out", str(out),
                        *args.extra.split()], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    seconds = round(time.perf_counter() - t, 1)
    with (out / "leaderboard.csv").open(newline="", encoding="utf-8") as f:
        board = list(csv.DictReader(f))
    rows = [{"dataset": args.dataset, "method": b["name"], "kind": b["kind"], "accuracy": b["accuracy"],
             "mb": b["mb"], "p50_ms": b["p50_ms"], "p95_ms": b["p95_ms"], "per_s": b["per_s"],
             "refused": b["refused"][:200], "options": options_json({"command_seconds": seconds,
                                                                     "extra": args.extra})} for b in board]
    path = csv_path(args.csv, "compress")
    if path:
        append_rows(path, FIELDS, rows, run_stamp)
    print(md_table(["candidate", "accuracy", "MB", "p50 ms", "p95 ms", "inputs/s", "refused"],
                   [[r["method"], r["accuracy"], r["mb"], r["p50_ms"], r["p95_ms"], r["per_s"], r["refused"]]
                    for r in rows], "---|---:|---:|---:|---:|---:|---"))
    print(f"\n{seconds} s for the whole command", file=sys.stderr)


if __name__ == "__main__":
    main()
