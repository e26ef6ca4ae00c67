#!/usr/bin/env python
"""Image fast path at 224 px: constant-pad ONNX export and the opt-in static int8 runtime, against eager
timm in the same run; and what int8 costs in probe accuracy.

Command: python benchmarks/images_fast.py   (writes benchmarks/images_fast.md; needs ../shared/data)

1. model only, on pre-made (64, 3, 224, 224) tensors: eager timm (baseline); ONNX Runtime on the export
   with dynamic height/width (what fmadapt exported before: TF 'SAME' pads computed in-graph); fmadapt's
   constant-pad fp32 export; fmadapt's static int8 graph (calibrated on 64 hymenoptera photos).
2. end to end from files (decode + resize + crop in 2 DataLoader workers + model): eager timm +
   torchvision DataLoader (baseline), fmadapt runtime="auto" (fp32 ONNX) and runtime="int8".
3. probe accuracy, fp32 vs int8 features: hymenoptera (train / val) and Fashion-MNIST (2,000 / 1,000 PNGs),
   both at 224 px.
Timings: median of 3 interleaved repeats after an untimed warm-up; torch and ORT get 2 threads.

Rows appended to benchmarks/results/images_fast.csv (--csv): speed rows of parts 1 and 2 (images/s, × baseline,
cosine; method `timm_eager` is their baseline) and the accuracy rows of part 3 (`probe_fp32` the baseline of
`probe_int8`). peak_mib: this process's peak while the row's calls ran (the largest over the repeats; DataLoader
worker processes are not in it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import throughput as tp  # noqa: E402  (shared data writers, baseline model, timing helpers)
from common import (  # noqa: E402
    add_csv_argument,
    append_rows,
    csv_path,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

DATA = tp.DEFAULT_DATA
N_END2END = 512
#: the CSV's method name of each method label (timm_eager: the baseline)
METHOD_IDS = {"baseline: eager timm": "timm_eager",
              "ONNX fp32, dynamic height/width (previous export)": "onnx_fp32_dynamic_hw",
              "fmadapt ONNX fp32, constant pads (runtime=\"auto\")": "fm_onnx_fp32",
              "fmadapt ONNX int8 static QDQ (runtime=\"int8\")": "fm_int8",
              "baseline: eager timm + torchvision DataLoader": "timm_eager",
              "fmadapt runtime=\"auto\" (ONNX fp32)": "fm_onnx_fp32",
              "fmadapt runtime=\"int8\"": "fm_int8"}
CSV_FIELDS = ["dataset", "regime", "method", "options", "n", "items_per_s", "x_baseline", "cosine_mean",
              "cosine_min", "accuracy", "macro_f1", "min_seconds", "max_seconds", "seconds", "peak_mib"]


def rate_rows(res: dict[str, dict[str, Any]], base_name: str, n: int, label: str) -> list[list[Any]]:
    base = res[base_name]
    return [[label, name, n, tp.spread(r["times"]), f"{n / r['median']:.1f}", f"{base['median'] / r['median']:.2f}",
             tp.fmt_cos(tp.cosine_rows(r["out"], base["out"]))] for name, r in res.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_csv_argument(ap, "images_fast")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    run_stamp = stamp()
    csv_rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="fmadapt-imgfast-"))
    os.environ["FMADAPT_CACHE"] = str(tmp / "cache")
    import torch

    torch.set_num_threads(2)
    from fmadapt import ImageClassifier
    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime import onnx as ort_mod
    from fmadapt.runtime.features import _calibration_pixels, extract_features

    t_start = time.perf_counter()
    cmd = "python benchmarks/images_fast.py"
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    hym = {c: fs for c, fs in tp.hymenoptera_files(DATA, "train", None).items()}
    hym_paths = [str(p) for fs in hym.values() for p in fs]
    bb = create_backbone("efficientnet_lite0")
    base_model = tp.timm_baseline_model()
    out = ["# Image fast path at 224 px: constant-pad ONNX export and opt-in static int8", ""]

    # -- 1. model only ------------------------------------------------------------------------
    tp.log("1. model only")
    calib_ex = Examples(inputs=hym_paths, labels=None, ids=hym_paths, modality="image")
    pixels = _calibration_pixels(bb, calib_ex)  # 64 preprocessed photos, evenly spaced
    x = torch.from_numpy(pixels[:64].copy())
    dyn_path = tmp / "dynamic.onnx"
    with torch.no_grad():
        torch.onnx.export(bb.eval(), (x[:2],), str(dyn_path), input_names=["pixel_values"],
                          output_names=["features"], opset_version=ort_mod.OPSET, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                                        "features": {0: "batch"}})
    dyn = ort_mod.OnnxEncoder(dyn_path, "image", threads=2)
    fp32 = ort_mod.onnx_encoder(bb)
    t0 = time.perf_counter()
    q = ort_mod.int8_encoder(bb, calibration_pixels=lambda: pixels)
    quant_s = time.perf_counter() - t0
    assert fp32 is not None and q is not None, "fast path unavailable"

    def eager() -> Any:
        with torch.inference_mode():
            return base_model(x).numpy()

    methods = {"baseline: eager timm": eager,
               "ONNX fp32, dynamic height/width (previous export)": lambda: dyn(x),
               "fmadapt ONNX fp32, constant pads (runtime=\"auto\")": lambda: fp32(x),
               "fmadapt ONNX int8 static QDQ (runtime=\"int8\")": lambda: q(x)}
    for f in methods.values():
        f()
    res = tp.race(methods, 3)
    csv_rows += tp.race_rows(res, "baseline: eager timm", "hymenoptera_calibration_64",
                             "model only: pre-made tensors, batch 64, 224 px", 64, METHOD_IDS)
    out += ["## 1. Model only: images/s on pre-made tensors (batch 64, 224 px)", "",
            "Cosine = per-image feature cosine vs eager timm (mean / min), on the 64 calibration photos.", "",
            tp.md_table(["input", "method", "N", "median s (min–max)", "images/s", "× baseline", "cosine vs baseline"],
                        rate_rows(res, "baseline: eager timm", 64, "64 hymenoptera photos"),
                        "---|---|---:|---:|---:|---:|---:"),
            "", f"- int8: calibration on 64 photos + static quantization + check took {quant_s:.1f} s (once per "
            "model; the ranges are saved with it)", ""]

    # -- 2. end to end ------------------------------------------------------------------------
    tp.log("2. end to end")
    fm_paths = tp.write_fmnist_flat(DATA, tmp / "fm_e2e", N_END2END)
    rows = []
    for label, paths in (("Fashion-MNIST 28x28 PNG -> 224 px", fm_paths),
                         ("hymenoptera JPEG photos (train) -> 224 px", hym_paths)):
        ex = Examples(inputs=paths, labels=None, ids=paths, modality="image")
        run = {"baseline: eager timm + torchvision DataLoader": lambda p=paths: tp.timm_embed(base_model, p, 224),
               "fmadapt runtime=\"auto\" (ONNX fp32)": lambda e=ex: extract_features(bb, e, cache=None, progress=False),
               "fmadapt runtime=\"int8\"": lambda e=ex: extract_features(bb, e, cache=None, progress=False,
                                                                     runtime="int8")}
        warm = Examples(inputs=paths[:64], labels=None, ids=paths[:64], modality="image")
        bb.int8_calibration = None  # each data set calibrates on its own images (in the untimed warm-up)
        tp.timm_embed(base_model, paths[:64], 224)
        extract_features(bb, warm, cache=None, progress=False)
        extract_features(bb, warm, cache=None, progress=False, runtime="int8")
        res = tp.race(run, 3)
        rows += rate_rows(res, "baseline: eager timm + torchvision DataLoader", len(paths), label)
        csv_rows += tp.race_rows(res, "baseline: eager timm + torchvision DataLoader",
                                 "hymenoptera_train" if label.startswith("hymenoptera") else "fashion_mnist_png",
                                 f"end to end from files, 224 px, n={len(paths)}", len(paths), METHOD_IDS)
    out += ["## 2. End to end from files: images/s (EfficientNet-Lite0, batch 64, 224 px)", "",
            "Each call starts from paths: 2 DataLoader worker processes decode, resize (short side 256, bicubic), "
            "centre-crop; the model runs in the main process. The workers share the same 2 cores. For int8, each "
            "data set is calibrated on 64 of its own images in the untimed warm-up.", "",
            tp.md_table(["input", "method", "N", "median s (min–max)", "images/s", "× baseline", "cosine vs baseline"],
                        rows, "---|---|---:|---:|---:|---:|---:"), ""]

    # -- 3. accuracy ----------------------------------------------------------------------------
    tp.log("3. accuracy")
    hym_root = tmp / "hym"
    tp.link_hymenoptera(DATA, hym_root, None)
    fm_root = tmp / "fm_acc"
    tp.write_fmnist_split(DATA, fm_root, "train", 2000)
    tp.write_fmnist_split(DATA, fm_root, "test", 1000)
    acc_rows = []
    for label, root in (("hymenoptera 245 / 153", hym_root), ("Fashion-MNIST 2000 / 1000", fm_root)):
        for runtime in ("auto", "int8"):
            os.environ["FMADAPT_CACHE"] = str(tmp / f"cache-{label[:3]}-{runtime}")
            ort_mod._SESSIONS.clear()
            reset_peak()
            t0 = time.perf_counter()
            clf = ImageClassifier(runtime=runtime, seed=0).fit(root)
            fit_s = time.perf_counter() - t0
            peak = window_peak_mib()
            split = "test" if "test" in clf.metrics_ else "val"
            m = clf.metrics_[split]
            used = "yes" if getattr(clf.model_.backbone, "int8_calibration", None) else "no (fp32)"
            acc_rows.append([label, split, f"runtime=\"{runtime}\"", used if runtime == "int8" else "",
                             f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{fit_s:.1f}"])
            csv_rows.append({"dataset": "hymenoptera" if label.startswith("hymenoptera") else "fashion_mnist",
                             "regime": f"{label.split(' ', 1)[1]} (train / {split}), 224 px",
                             "method": "probe_fp32" if runtime == "auto" else "probe_int8",
                             "options": options_json({"runtime": runtime, "seed": 0, "split": split,
                                                      **({"int8_graph_used": used} if runtime == "int8" else {})}),
                             "n": m.get("n", ""), "accuracy": round(m["accuracy"], 4),
                             "macro_f1": round(m["macro_f1"], 4), "seconds": round(fit_s, 1), "peak_mib": peak})
            tp.log(f"  {label} {runtime}: {m['accuracy']:.4f} in {fit_s:.1f} s")
    out += ["## 3. Probe accuracy, fp32 vs int8 features (224 px, cold cache, `ImageClassifier(runtime=...)`)", "",
            "hymenoptera: train/ and val/ as given (the val split is the evaluation); Fashion-MNIST: 2,000 "
            "training PNGs (10 % held out for C) and 1,000 test PNGs. Fit time includes export, calibration and "
            "quantization.", "",
            tp.md_table(["data (train / eval)", "split", "runtime", "int8 graph used", "accuracy", "macro-F1",
                         "fit s"], acc_rows, "---|---|---|---|---:|---:|---:"), ""]
    mach = tp.machine()
    total = time.perf_counter() - t_start
    head = [f"- Command: `{cmd}`; {started}; total {total / 60:.1f} min, one run, every number from it",
            f"- Machine: nproc = {mach['nproc']} ({mach['cpu']}); torch {mach['torch']}, onnxruntime "
                    f"{mach['onnxruntime']}, timm {mach['timm']}; fmadapt @ {mach['commit']}", ""]
    md = "\n".join(out[:2] + head + out[2:])
    print(md)
    HERE.joinpath("images_fast.md").write_text(md, encoding="utf-8")
    path = csv_path(args.csv, "images_fast")
    if path is not None:
        append_rows(path, CSV_FIELDS, csv_rows, run_stamp)
        print(f"appended {len(csv_rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
