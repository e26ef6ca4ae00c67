"""Federated probe, fine-tuning and LoRA (issue 25) against centralised training of the same strategy, same run.

    python benchmarks/federated.py [--datasets ag_news,fashion_mnist] [--scenarios clean,poisoned] [--rounds 20]
                                   [--clients 10] [--strategies probe,finetune,lora] [--unfreeze 2]
                                   [--fed KEY=VALUE ...] [--work /tmp/fedbench] [--csv PATH]

Per dataset (the training/test samples of benchmarks/defaults.py: 4,000 training texts of AG News, 2,000 28-px
Fashion-MNIST images; the whole test split of each sample): the centralised probe (`TextClassifier` /
`ImageClassifier`, strategy probe, defaults), then `strategy="federated"` with `--clients` clients:
- clean: partitions iid, dirichlet:0.5 and classes:2 (FedAvg);
- poisoned: 2 of the clients send sign-flipped, enlarged updates (attack sign-flip, clients 0 and 1) and the
  partition is iid: FedAvg with the norm screen off (max_norm_ratio none), FedAvg with it, trimmed-mean, median,
  krum, multikrum; plus the clean FedAvg run they are compared with;
- dp: DP-SGD on every client at epsilon 1, 4 and 8 (delta 1e-5), iid, FedAvg; plus the clean run (infinity);
- secure: SecAgg+ (iid, FedAvg) against the same federation without it.
--strategies finetune, lora: the centralised run on the training split (refit off) — finetune trains the same top
`--unfreeze` blocks; lora puts adapters in all layers, the centralised strategy's only form, while the federated
run puts them in the top `--unfreeze` blocks (a reference, not the same model) — then `federated-finetune` /
`federated-lora` with the clean scenarios' partitions iid and dirichlet:0.5 (classes:2 is left out: CPU time).
Rows in results/federated.csv: dataset, method, partition, aggregation, attack, test accuracy, fit seconds (in
process), bytes sent, rounds. Both methods use fmadapt's feature cache: the features are computed once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_csv_argument, append_rows, csv_path, md_table, measured_process, options_json  # noqa: E402
from defaults import prepare  # noqa: E402

FIELDS = ["dataset", "method", "partition", "aggregation", "attack", "options", "accuracy", "fit_seconds",
          "process_seconds", "bytes", "rounds", "rejected", "n_train", "n_test"]


def scenarios(names: list[str]) -> list[dict]:
    out: list[dict] = []
    if "clean" in names:
        out += [{"partition": p, "aggregation": "fedavg"} for p in ("iid", "dirichlet:0.5", "classes:2")]
    if "poisoned" in names:
        attack = ["sign-flip:0,1"]
        if "clean" not in names:
            out.append({"partition": "iid", "aggregation": "fedavg"})
        out += [{"partition": "iid", "aggregation": "fedavg", "attacks": attack, "max_norm_ratio": None},
                {"partition": "iid", "aggregation": "fedavg", "attacks": attack},
                *({"partition": "iid", "aggregation": a, "attacks": attack}
                  for a in ("trimmed-mean", "median", "krum", "multikrum"))]
    if "secure" in names:  # SecAgg+ against the same run without it: what it costs in time
        if not {"clean", "poisoned", "dp"} & set(names):
            out.append({"partition": "iid", "aggregation": "fedavg"})
        out.append({"partition": "iid", "aggregation": "fedavg", "secure": True})
    if "dp" in names:  # differential privacy: epsilon 1, 4, 8 at delta 1e-5 (and the clean run: infinity)
        if not {"clean", "poisoned"} & set(names):
            out.append({"partition": "iid", "aggregation": "fedavg"})
        out += [{"partition": "iid", "aggregation": "fedavg", "dp_epsilon": eps} for eps in (1.0, 4.0, 8.0)]
    return out


def run_one(kind: str, train: str, test: str, labels: list[str], strategy: str, extra: dict, **options) -> dict:
    import numpy as np

    from fmadapt import ImageClassifier, TextClassifier

    cls = TextClassifier if kind == "text" else ImageClassifier
    clf = cls(strategy=strategy, extra=extra, **options) if extra else cls(strategy=strategy, **options)
    t0 = time.perf_counter()
    clf.fit(train)
    seconds = time.perf_counter() - t0
    pred = clf.predict(test)
    fed = (clf.history_ or {}).get("federation") or {}
    return {"accuracy": round(float(np.mean(np.asarray(pred) == np.asarray(labels))), 4),
            "fit_seconds": round(seconds, 1), "bytes": fed.get("bytes", ""), "rounds": len(fed.get("rounds", [])) or "",
            "rejected": fed.get("rejected", ""),
            "n_train": len(clf.splits_["train"]) + (len(clf.splits_["val"]) if clf.refit_on_val_ else 0)}


def top(name: str, kind: str, train: str, test: str, labels: list[str], strategy: str, a: argparse.Namespace,
        base: dict, rows: list[dict], table: list[list]) -> None:
    """Centralised `strategy` (finetune / lora) on the training split against its federated form, same data."""
    unfreeze = a.unfreeze
    options = {"refit": False, **({"unfreeze": unfreeze} if strategy == "finetune" else {})}
    central = run_one(kind, train, test, labels, strategy, {}, **options)
    what = "" if strategy == "finetune" else " (all layers)"
    rows.append({"dataset": name, "method": f"centralised {strategy}{what}, training split",
                 "options": options_json(options), **central, "n_test": len(labels)})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table.append([name, f"centralised {strategy}{what}", "", "-", f"{central['accuracy']:.4f}", "",
                  central["fit_seconds"], ""])
    for partition in ("iid", "dirichlet:0.5"):
        fc = {**base, "partition": partition, "aggregation": "fedavg", "unfreeze": unfreeze}
        r = run_one(kind, train, test, labels, f"federated-{strategy}", {"federated": fc})
        rows.append({"dataset": name, "method": f"federated {strategy}, top {unfreeze} blocks", "partition": partition,
                     "aggregation": "fedavg", "options": options_json(fc), **r, "n_test": len(labels)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        table.append([name, f"federated {strategy}, {partition}", "fedavg", "-", f"{r['accuracy']:.4f}",
                      f"{(r['accuracy'] - central['accuracy']) * 100:+.2f}", r["fit_seconds"], r["bytes"]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ag_news,fashion_mnist")
    ap.add_argument("--scenarios", default="clean,poisoned")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--fed", action="append", default=[], help="KEY=VALUE federation option for every run")
    ap.add_argument("--strategies", default="probe", help="probe,finetune,lora")
    ap.add_argument("--unfreeze", type=int, default=2, help="finetune: the top blocks trained (centralised too)")
    ap.add_argument("--work", default="/tmp/fedbench")
    ap.add_argument("--process", action="store_true",
                    help="also time `fmadapt federate` (iid, fedavg, --report off) as a whole process per dataset")
    add_csv_argument(ap, "federated")
    a = ap.parse_args()
    from fmadapt.federated.config import assignments

    base = {"clients": a.clients, "rounds": a.rounds, **assignments(a.fed)}
    rows, table = [], []
    path = csv_path(a.csv, "federated")
    for name in a.datasets.split(","):
        kind, train, test, labels = prepare(name, Path(a.work))
        for strategy in a.strategies.split(","):
            if strategy != "probe":
                top(name, kind, train, test, labels, strategy, a, base, rows, table)
                if path is not None:  # (each strategy's rows as soon as they are measured: runs take long)
                    append_rows(path, FIELDS, rows)
                    rows = []
        if "probe" not in a.strategies.split(","):
            continue
        for method, options in (("centralised probe", {}), ("centralised probe, training split", {"refit": False})):
            r = run_one(kind, train, test, labels, "probe", {}, **options)
            rows.append({"dataset": name, "method": method, "options": options_json(options), **r,
                         "n_test": len(labels)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            table.append([name, method, "", "-", f"{r['accuracy']:.4f}", "", r["fit_seconds"], ""])
        central = rows[-1]  # (the same training examples as the clients hold; the server keeps the validation split)
        if a.process:
            cmd = [sys.executable, "-m", "fmadapt", "federate", train, "--out", str(Path(a.work) / f"{name}_fed"),
                   "--clients", str(a.clients), "--rounds", str(a.rounds), "--report", "off", "--json",
                   *(x for kv in a.fed for x in ("--fed", kv))]
            proc, seconds, _ = measured_process(cmd)
            if proc.returncode:
                raise SystemExit(f"fmadapt federate failed:\n{proc.stderr[-3000:]}")
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"dataset": name, "method": "fmadapt federate (whole process)", "partition": "iid",
                         "aggregation": "fedavg", "process_seconds": round(seconds, 1),
                         "accuracy": summary["metrics"]["val"]["accuracy"], "n_test": "(validation split)",
                         "rounds": a.rounds, "bytes": summary["history"]["federation"]["bytes"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for sc in scenarios(a.scenarios.split(",")):
            fc = {**base, **sc}
            r = run_one(kind, train, test, labels, "federated", {"federated": fc})
            dp = (f", dp epsilon {sc['dp_epsilon']:g}" if sc.get("dp_epsilon") else "") + (
                ", SecAgg+" if sc.get("secure") else "")
            rows.append({"dataset": name, "method": "federated probe" + dp, "partition": sc["partition"],
                         "aggregation": sc["aggregation"], "attack": ";".join(sc.get("attacks", [])),
                         "options": options_json(fc), **r, "n_test": len(labels)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            screen = "" if sc.get("max_norm_ratio", 1) else " (no norm screen)"
            table.append([name, f"federated probe, {sc['partition']}{dp}", sc["aggregation"] + screen,
                          rows[-1]["attack"] or "-", f"{r['accuracy']:.4f}",
                          f"{(r['accuracy'] - central['accuracy']) * 100:+.2f}", r["fit_seconds"], r["bytes"]])
    if path is not None and rows:
        append_rows(path, FIELDS, rows)
    print(md_table(["dataset", "method", "aggregation", "attack", "accuracy", "Δ vs centralised, same data",
                    "fit s", "bytes"], table, "---|---|---|---|---:|---:|---:|---:"))


if __name__ == "__main__":
    main()
