#!/usr/bin/env python
"""Knowledge distillation (issue 24): a fine-tuned MiniLM teacher on SST-2 and students that keep 3 (and 2) of its 6
layers (`fmadapt distill`), with and without unlabeled texts (the next SST-2 training sentences, labels dropped), and
a student with half of every layer's heads and feed-forward neurons pruned (`--student-prune 0.5`), and static
students (`--student static:256`, with and without the unlabeled texts),
all in one run: accuracy on the dev set (872 sentences, never seen by either), texts per second of each model's
`proba` on it in this process (best of 2, after a warm-up), and the seconds each fit took.

Rows go to benchmarks/results/distill.csv (--csv): method teacher | student_L<k>[_unlabeled] | student_prune<pct> |
student_static<dim>[_unlabeled].

    python benchmarks/distill.py --train 4000 --unlabeled 4000
    python benchmarks/distill.py --layers 3 --prune '' --static '' --hidden-weight 0,1 --work /tmp/distillrun
    python benchmarks/distill.py --dataset ag_news --train 2000 --unlabeled 2000 --layers 3 --prune '' --static '' \
        --hidden-weight 0,1 --work /tmp/distill-agn
    python benchmarks/distill.py --layers '' --prune '' --static 256:0,256:512 --work /tmp/distw
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import ROOT, add_csv_argument, append_rows, csv_path, md_table, options_json, stamp

DATA = ROOT.parent / "shared" / "data" / "sst2"
FIELDS = ["dataset", "method", "accuracy", "texts_per_s", "speedup", "accuracy_ratio", "fit_seconds", "options"]


def _speed(model, texts: list[str], repeats: int = 2) -> float:
    """Texts per second of `model.predict_proba(texts)`: best of `repeats`, after a warm-up on 8 texts."""
    model.predict_proba(texts[:8])
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict_proba(texts)
        best = max(best, len(texts) / (time.perf_counter() - t))
    return round(best, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("sst2", "ag_news"), default="sst2")
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--unlabeled", type=int, default=4000)
    ap.add_argument("--layers", default="3,2", help="students cutting the encoder to these layer counts ('' none)")
    ap.add_argument("--prune", default="0.5", help="students pruning this share of heads and neurons ('' none)")
    ap.add_argument("--static", default="256", help="static students of these dimensions, DIM or DIM:HIDDEN (a hidden "
                    "layer's width, 0: none; method suffix _h<HIDDEN>) ('' none)")
    ap.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: fmadapt distill's)")
    ap.add_argument("--hidden-weight", default="", help="layer and pruned students: comma-separated weights of the "
                    "hidden-state loss, one student each (method suffix _h<w>; default: fmadapt distill's)")
    ap.add_argument("--work", default=None)
    add_csv_argument(ap, "distill")
    args = ap.parse_args()
    run_stamp = stamp()
    work = Path(args.work or tempfile.mkdtemp(prefix="fmadapt-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from fmadapt import load_model

    if args.dataset == "sst2":
        train = pd.read_csv(DATA / "train.tsv", sep="\t", quoting=3, dtype=str).rename(columns={"sentence": "text"})
        dev = pd.read_csv(DATA / "dev.tsv", sep="\t", quoting=3, dtype=str)
    else:  # AG News: a seeded shuffle of the training file; "dev": the first 1,000 of its test file
        agn = DATA.parent / "ag_news"
        names = (agn / "class.txt").read_text(encoding="utf-8").split()
        train, dev = (pd.read_csv(agn / f, header=None, names=["text", "label"], dtype=str)
                      for f in ("train.csv", "test.csv"))
        train = train.sample(frac=1.0, random_state=0).reset_index(drop=True)
        dev = dev.head(1000).rename(columns={"text": "content"})
        for df in (train, dev):
            df["label"] = [names[int(v)] for v in df["label"]]
    train.head(args.train).to_csv(work / "train.csv", index=False)
    train.iloc[args.train:args.train + args.unlabeled][["text"]].to_csv(work / "unlabeled.csv", index=False)
    fm = [sys.executable, "-m", "fmadapt"]
    teacher = work / "teacher"
    t = time.perf_counter()
    reused = (teacher / "config.json").is_file()  # (a teacher fitted by an earlier run in the same --work)
    if not reused:
        subprocess.run([*fm, "fit", str(work / "train.csv"), "--strategy", "finetune", "--out", str(teacher),
                        "--report", "off"], check=True, capture_output=True)
    teacher_seconds = "" if reused else round(time.perf_counter() - t, 1)
    texts, labels = dev["content"].tolist(), dev["label"].tolist()
    tm = load_model(teacher, cache=False)
    t_acc = float((tm.predict(texts) == pd.Series(labels)).mean())
    t_speed = _speed(tm, texts)
    rows = [{"dataset": args.dataset, "method": "teacher", "accuracy": round(t_acc, 4), "texts_per_s": t_speed,
             "fit_seconds": teacher_seconds, "options": options_json({"strategy": "finetune", "train": args.train,
                                                      "reused": str(teacher) if reused else ""})}]
    variants = [(f"student_L{k}" + ("_unlabeled" if extra else ""), ["--student-layers", str(k)], extra)
                for k in [int(x) for x in args.layers.split(",") if x] for extra in (False, True)]
    variants += [(f"student_prune{int(float(r) * 100)}", ["--student-prune", r], False)
                 for r in args.prune.split(",") if r]
    variants += [(f"student_static{d.replace(':', '_h')}" + ("_unlabeled" if extra else ""),
                  ["--student", f"static:{d}"], extra) for d in args.static.split(",") if d for extra in (False, True)]
    weights = [w for w in args.hidden_weight.split(",") if w]
    if weights:  # (static students have no layers to pair: they run once, at distill's default)
        variants = [(f"{n}_h{w}", [*h, "--hidden-weight", w], e) for n, h, e in variants if "static" not in n
                    for w in weights] + [v for v in variants if "static" in v[0]]
    for name, how, extra in variants:
        name += f"_e{args.epochs}" if args.epochs else ""
        out = work / name
        cmd = [*fm, "distill", str(teacher), str(work / "train.csv"), "--out", str(out), *how,
               "--json", *(["--unlabeled", str(work / "unlabeled.csv")] if extra else []),
               *(["--epochs", str(args.epochs)] if args.epochs else [])]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        seconds = round(time.perf_counter() - t, 1)
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        sm = load_model(out, cache=False)
        acc = float((sm.predict(texts) == pd.Series(labels)).mean())
        speed = _speed(sm, texts)
        rows.append({"dataset": args.dataset, "method": name, "accuracy": round(acc, 4), "texts_per_s": speed,
                     "speedup": round(speed / t_speed, 2), "accuracy_ratio": round(acc / t_acc, 4),
                     "fit_seconds": seconds,
                     "options": options_json({**summary["options"], "unlabeled": summary["unlabeled"],
                                              "held_out_in_distill": summary["validation"]})})
        print(json.dumps(rows[-1]), file=sys.stderr)
    out_csv = csv_path(args.csv, "distill")
    if out_csv:
        append_rows(out_csv, FIELDS, rows, run_stamp)
    print(md_table(["method", "dev accuracy", "texts/s", "speed-up", "accuracy / teacher's", "fit s"],
                   [[r["method"], r["accuracy"], r["texts_per_s"], r.get("speedup", ""), r.get("accuracy_ratio", ""),
                     r["fit_seconds"]] for r in rows], "---|---:|---:|---:|---:|---:"))


if __name__ == "__main__":
    main()
