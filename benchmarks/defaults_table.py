#!/usr/bin/env python
"""The defaults suite's table (issue 21's targets) out of the rows in benchmarks/results/defaults.csv, which
`benchmarks/defaults.py` appends one run at a time: a 9-dataset run of every method takes hours on 2 cores,
so the table gathers each (dataset, method) from the latest run that has it, and says which run that was.

    python benchmarks/defaults_table.py --since finetune=2026-12-05T19:00 --since auto=2026-12-05T20:30 \\
        --alias 'sst2:finetune=finetune_set:epochs=4;patience=2;lr=1e-4'

--since COLUMN=DATE   only rows of that column started at or after DATE (when its defaults last changed)
--alias DS:COLUMN=M   on dataset DS, fill COLUMN from method M (a `finetune_set:` row whose options are the
                      shipped defaults, run before they were shipped)

Columns: hand_probe, probe, tfidf (texts), hand_finetune, finetune, auto. Differences in accuracy points: probe
- hand_probe; finetune - hand_finetune (and its seconds / the loop's); auto - the better of the two
hand-written baselines, and auto - tfidf on texts. The last row is the worst of each difference. Baselines and
fmadapt rows may come from different runs (the hand-written scripts do not change with fmadapt's code; their
seconds do change with the machine's load): compare seconds only where both cells name the same run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("hand_probe", "probe", "tfidf", "hand_finetune", "finetune", "auto")



def _tag(i: int) -> str:
    """a, b, ..., z, aa, ab, ...: a run's superscript."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[i] if i < 26 else _tag(i // 26 - 1) + letters[i % 26]

def pick(rows: list[dict], since: dict[str, str], alias: dict[tuple[str, str], str]) -> dict:
    """{(dataset, column): the latest matching row}."""
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        for col in COLUMNS:
            want = alias.get((r["dataset"], col), col)
            if r["method"] != want or r["date"] < since.get(col, ""):
                continue
            key = (r["dataset"], col)
            if key not in out or r["date"] >= out[key]["date"]:
                out[key] = r
    return out


def render(got: dict, datasets: list[str]) -> str:
    runs = sorted({(r["date"], r["commit"]) for r in got.values()})
    tag = {run: _tag(i) for i, run in enumerate(runs)}

    def cell(ds: str, col: str) -> str:
        r = got.get((ds, col))
        return f"{float(r['accuracy']):.4f}<sup>{tag[(r['date'], r['commit'])]}</sup>" if r else "—"

    def acc(ds: str, col: str) -> float | None:
        return float(got[(ds, col)]["accuracy"]) if (ds, col) in got else None

    head = ["dataset", *COLUMNS, "Δ probe", "Δ finetune", "s finetune / s loop", "Δ auto vs better hand",
            "Δ auto vs tfidf"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    worst: dict[str, float] = {}
    for ds in datasets:
        a = {c: acc(ds, c) for c in COLUMNS}
        d: dict[str, float | None] = {
            "probe": None if None in (a["probe"], a["hand_probe"]) else 100 * (a["probe"] - a["hand_probe"]),
            "finetune": None if None in (a["finetune"], a["hand_finetune"])
            else 100 * (a["finetune"] - a["hand_finetune"]),
            "auto": None if a["auto"] is None or a["hand_probe"] is None
            else 100 * (a["auto"] - max(a["hand_probe"], a["hand_finetune"] or 0.0)),
            "auto_tfidf": None if None in (a["auto"], a["tfidf"]) else 100 * (a["auto"] - a["tfidf"]),
        }
        ratio = None
        if (ds, "finetune") in got and (ds, "hand_finetune") in got:
            ratio = float(got[(ds, "finetune")]["seconds"]) / float(got[(ds, "hand_finetune")]["seconds"])
            worst["ratio"] = max(worst.get("ratio", 0.0), ratio)
        for k, v in d.items():
            if v is not None:
                worst[k] = min(worst.get(k, v), v)
        note = "" if a["hand_finetune"] is not None or a["auto"] is None else " (probe only)"
        lines.append("| " + " | ".join([ds, *(cell(ds, c) for c in COLUMNS),
                                          *(f"{d[k]:+.2f}" if d[k] is not None else "—"
                                            for k in ("probe", "finetune")),
                                          f"{ratio:.2f}x" if ratio is not None else "—",
                                          (f"{d['auto']:+.2f}{note}" if d["auto"] is not None else "—"),
                                          f"{d['auto_tfidf']:+.2f}" if d["auto_tfidf"] is not None else "—"]) + " |")
    lines.append("| **worst** |" + " |" * len(COLUMNS) + " " + " | ".join(
        [f"{worst[k]:+.2f}" if k in worst else "—" for k in ("probe", "finetune")]
        + [f"{worst['ratio']:.2f}x" if "ratio" in worst else "—"]
        + [f"{worst[k]:+.2f}" if k in worst else "—" for k in ("auto", "auto_tfidf")]) + " |")
    lines += ["", "Runs (the superscripts):"]
    lines += [f"- {tag[run]}: started {run[0]}, commit {run[1]}" for run in runs]
    secs = ["", "Seconds (fit + predict inside the method's process):", "",
            "| dataset | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for ds in datasets:
        secs.append(f"| {ds} | " + " | ".join(f"{float(got[(ds, c)]['seconds']):.0f}" if (ds, c) in got else "—"
                                               for c in COLUMNS) + " |")
    return "\n".join(lines + secs) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "defaults.csv"))
    ap.add_argument("--datasets", default="sst2,ag_news,thucnews,reuters,clothing_rating,clothing_recommended,"
                                          "fashion_mnist,hymenoptera,digits")
    ap.add_argument("--since", action="append", default=[], metavar="COLUMN=DATE")
    ap.add_argument("--alias", action="append", default=[], metavar="DS:COLUMN=METHOD")
    ap.add_argument("--out", help="write the table here as well")
    args = ap.parse_args()
    since = dict(s.split("=", 1) for s in args.since)
    alias = {}
    for a in args.alias:
        key, method = a.split("=", 1)
        ds, col = key.split(":", 1)
        alias[(ds, col)] = method
    with open(args.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    text = render(pick(rows, since, alias), args.datasets.split(","))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
