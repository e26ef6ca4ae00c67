#!/usr/bin/env python
"""Audio (issue 27): fmadapt's AudioClassifier against the hand-written probe, on speech_keywords (../shared/data,
10 words, 180 training clips, speakers disjoint) and a synthetic spoken-digit set made on this machine
(benchmarks/spoken_digits.py: espeak-ng voices, 240/60 clips, voices disjoint), in one run; and the speed of the
features, in one process and as whole processes.

    python benchmarks/audio.py                                   # both datasets: hand_probe, probe, finetune
    python benchmarks/audio.py --methods probe --context 0,0.125,0.25,0.5      # the silence padding, measured
    python benchmarks/audio.py --datasets speech_keywords --speed              # features: clips/s

Methods (each in this process, its own empty feature cache; seconds = fit + predict of the test split):
  hand_probe  the script below (no fmadapt import): openwakeword's own two ONNX graphs in ONNX Runtime, each clip
              with 0.25 s of silence on both sides, 76-frame windows every 8 frames pooled by mean, max and std
              (288-d), StandardScaler + LogisticRegression(C=1): the recipe of issue 27's 96.7 % (without the
              silence it scores 81.7 % on speech_keywords).
  probe, finetune, auto  AudioClassifier(strategy=...) with every other option at its default;
              `finetune:augment=true;epochs=8` with these options.
--context S,...: the probe with the backbone's silence padding set to each value (seconds); the row's `cv_score` is
the probe's own 5-fold cross-validation accuracy on the training split (what a default is chosen by), `accuracy`
the test split's.
--speed: features of every clip (train + test) through fmadapt (ONNX Runtime, then PyTorch) and through the
hand-written loop, in this process; then `fmadapt embed DIR` and the hand-written feature script as whole
processes (start-up and imports included), with no features cached: `fmadapt embed` twice, first with an empty
cache (it exports and checks the graph), then with that graph remembered (the torch-free path).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, add_csv_argument, append_rows, csv_path, md_table, measured_process, options_json

DATA = ROOT.parent / "shared" / "data"
FIELDS = ["dataset", "method", "options", "accuracy", "macro_f1", "n_test", "cv_score", "seconds", "clips_per_s",
          "process_seconds"]

HAND = '''
import glob, importlib.util, os, sys
import numpy as np, onnxruntime as ort, soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from scipy.signal import resample_poly

d = os.path.join(importlib.util.find_spec("openwakeword").submodule_search_locations[0], "resources", "models")
mel, emb = (ort.InferenceSession(f"{d}/{n}.onnx") for n in ("melspectrogram", "embedding_model"))

def features(path):
    a, sr = sf.read(path, dtype="float32", always_2d=True)
    a = resample_poly(a.mean(1), 16000, sr) if sr != 16000 else a.mean(1)
    a = np.pad(a, 4000) * 32767  # 0.25 s of silence each side; the graphs read int16-scaled samples
    spec = np.squeeze(mel.run(None, {"input": a.astype(np.float32)[None]})[0]) / 10 + 2
    w = np.stack([spec[i:i + 76] for i in range(0, len(spec) - 75, 8)])[..., None].astype(np.float32)
    e = emb.run(None, {"input_1": w})[0].reshape(len(w), 96)
    return np.concatenate([e.mean(0), e.max(0), e.std(0)])

def load(root):
    files = sorted(glob.glob(f"{root}/*/*.*"))
    return np.stack([features(f) for f in files]), [f.split("/")[-2] for f in files]
'''


def hand_probe(train: Path, test: Path) -> tuple[list[str], list[str]]:
    scope: dict = {}
    exec(HAND, scope)  # noqa: S102 - the hand-written script above, verbatim
    (xt, yt), (xe, ye) = scope["load"](str(train)), scope["load"](str(test))
    clf = scope["make_pipeline"](scope["StandardScaler"](), scope["LogisticRegression"](C=1.0, max_iter=5000))
    return list(clf.fit(xt, yt).predict(xe)), ye


def datasets(names: list[str], work: Path) -> dict[str, Path]:
    out = {}
    for n in names:
        if n == "speech_keywords":
            out[n] = DATA / "speech_keywords"
        elif n == "spoken_digits":
            from spoken_digits import make

            out[n] = make(work / "spoken_digits")
        else:
            raise SystemExit(f"unknown dataset {n}")
    return out


def scores(pred: list[str], truth: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(accuracy_score(truth, pred), 4),
            "macro_f1": round(f1_score(truth, pred, average="macro"), 4), "n_test": len(truth)}


def run_fmadapt(root: Path, method: str, context: float | None) -> dict:
    """`method`: a strategy, optionally with options: `finetune:augment=true;epochs=8`."""
    import json

    from fmadapt import AudioClassifier
    from fmadapt.backbones import audio as A

    strategy, _, rest = method.partition(":")
    given = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in rest.split(";") if kv)}
    default = A.CONTEXT_SECONDS
    if context is not None:
        A.CONTEXT_SECONDS = context
    try:
        clf = AudioClassifier(strategy=strategy, progress=False, **given).fit(root / "train")
        opts = {"context_seconds": A.CONTEXT_SECONDS, **given}
    finally:
        A.CONTEXT_SECONDS = default
    truth = [p.parent.name for p in sorted((root / "test").glob("*/*.*"))]
    pred = list(clf.predict(sorted(str(p) for p in (root / "test").glob("*/*.*"))))
    h = clf.members_[0].history
    row = scores(pred, truth)
    if strategy == "probe":
        row["cv_score"] = max(r["val_acc"] for r in h["candidates"])
    if strategy == "auto":
        opts["winner"] = h.get("auto", {}).get("winner")
    if "epochs_run" in h:  # fine-tuning: the validation curve the kept epoch was chosen on (the probe start first)
        opts.update(lr=h.get("lr"), best_epoch=h.get("best_epoch"),
                    val_acc=[h.get("initial_val_acc")] + [round(e["val_acc"], 4) for e in h.get("epochs") or []
                                                          if "val_acc" in e])
    return {**row, "options": options_json(opts)}


def speed(root: Path, work: Path) -> list[dict]:
    """Clips per second of the features: fmadapt (ONNX Runtime, PyTorch) and the hand-written loop, in this process;
    then whole processes."""
    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime.features import extract_features

    files = sorted(str(p) for p in root.glob("*/*/*.*"))
    rows = []
    bb = create_backbone("speech-embedding")
    ex = Examples(inputs=files, labels=None, ids=files, modality="audio")
    extract_features(bb, ex.subset(list(range(8))), runtime="auto")  # the ONNX export, once (cached on disk)
    for runtime in ("auto", "torch"):
        t = time.perf_counter()
        extract_features(bb, ex, runtime=runtime, progress=False)
        s = time.perf_counter() - t
        rows.append({"method": f"fmadapt features ({'ONNX Runtime' if runtime == 'auto' else 'PyTorch'})",
                     "seconds": round(s, 2), "clips_per_s": round(len(files) / s, 1)})
    scope: dict = {}
    exec(HAND, scope)  # noqa: S102
    t = time.perf_counter()
    for f in files:
        scope["features"](f)
    s = time.perf_counter() - t
    rows.append({"method": "hand-written features", "seconds": round(s, 2), "clips_per_s": round(len(files) / s, 1)})
    script = work / "hand_features.py"
    script.write_text(HAND + f"\nimport numpy as np\nnp.save({str(work / 'h.npy')!r}, "
                      f"np.stack([features(f) for f in sorted(glob.glob({str(root)!r} + '/*/*/*.*'))]))\n")
    env = {**os.environ, "FMADAPT_CACHE": str(work / "cold-cache")}
    embed_cmd = ["fmadapt", "embed", str(root), "-o", str(work / "f.npy")]
    for name, cmd in (("fmadapt embed (whole process)", embed_cmd),
                      ("fmadapt embed, graph remembered (whole process)", embed_cmd),
                      ("hand-written features (whole process)", [sys.executable, str(script)])):
        # (the second embed finds the graph the first exported and checked, not the features it computed)
        shutil.rmtree(work / "cold-cache" / "features", ignore_errors=True)
        p, s, _ = measured_process(cmd, env=env)
        if p.returncode:
            raise SystemExit(f"{name} failed:\n{p.stderr[-2000:]}")
        rows.append({"method": name, "process_seconds": round(s, 2), "clips_per_s": round(len(files) / s, 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="speech_keywords,spoken_digits")
    ap.add_argument("--methods", default="hand_probe,probe,finetune")
    ap.add_argument("--context", default="", help="probe with these silence paddings (seconds, comma-separated)")
    ap.add_argument("--speed", action="store_true", help="time the features (first dataset)")
    ap.add_argument("--work", default=None, help="where generated data and scratch files go (default: a temp dir)")
    add_csv_argument(ap, "audio")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="fmadapt-audio-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["FMADAPT_CACHE"] = str(work / "cache")
    roots = datasets(a.datasets.split(","), work)
    rows: list[dict] = []
    for ds, root in roots.items():
        runs = [(m, None) for m in a.methods.split(",") if m] + [("probe", float(c)) for c in a.context.split(",") if c]
        for method, context in runs:
            t = time.perf_counter()
            if method == "hand_probe":
                row = {**scores(*hand_probe(root / "train", root / "test")), "options": options_json({"C": 1.0})}
            else:
                row = run_fmadapt(root, method, context)
            row.update(dataset=ds, method=method if context is None else f"probe, context {context:g} s",
                       seconds=round(time.perf_counter() - t, 1))
            # (a fresh feature cache for the next method: its seconds include its features)
            os.environ["FMADAPT_CACHE"] = str(work / f"cache-{len(rows)}")
            print(row, flush=True)
            rows.append(row)
    if a.speed:
        ds, root = next(iter(roots.items()))
        for r in speed(root, work):
            r["dataset"] = ds
            print(r, flush=True)
            rows.append(r)
    print(md_table(["dataset", "method", "accuracy", "cv", "s", "clips/s", "process s"],
                   [[r.get("dataset"), r["method"], r.get("accuracy", ""), r.get("cv_score", ""), r.get("seconds", ""),
                     r.get("clips_per_s", ""), r.get("process_seconds", "")] for r in rows]))
    path = csv_path(a.csv, "audio")
    if path:
        append_rows(path, FIELDS, rows)


if __name__ == "__main__":
    main()
