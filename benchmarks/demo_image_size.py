"""Which input size should `fmadapt demo` use? Probe accuracy and wall time on scikit-learn's 8x8 digits.

Command: python benchmarks/demo_image_size.py   (writes benchmarks/demo_image_size.md; appends one row per image
size to benchmarks/results/demo_image_size.csv: validation accuracy / macro-F1, fit seconds, feature seconds,
and this process's peak memory during that fit; DataLoader worker processes are not in it)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import add_csv_argument, append_rows, csv_path, options_json, reset_peak, stamp, window_peak_mib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_csv_argument(ap, "demo_image_size")
    args = ap.parse_args()
    run_stamp = stamp()
    tmp = Path(tempfile.mkdtemp(prefix="fmadapt-demo-size-"))
    os.environ["FMADAPT_CACHE"] = str(tmp / "cache")  # cold cache for every size
    import torch

    from fmadapt import ImageClassifier, __version__
    from fmadapt.demo import write_digits_folder

    data = write_digits_folder(tmp / "digits")
    rows = []
    for size in (64, 96, 128, 224):
        reset_peak()
        t0 = time.perf_counter()
        clf = ImageClassifier(backbone="efficientnet_lite0", strategy="probe", image_size=size, progress=False)
        clf.fit(data)
        rows.append((size, clf.metrics_["val"]["accuracy"], clf.metrics_["val"]["macro_f1"],
                     time.perf_counter() - t0, clf.history_["feature_seconds"], window_peak_mib()))
        print(rows[-1], flush=True)
    base = next(r for r in rows if r[0] == 224)
    lines = ["# `fmadapt demo`: input size", "",
             f"Command: `python benchmarks/demo_image_size.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, fmadapt {__version__}). Probe on frozen EfficientNet-Lite0, 1,797 digits "
             "(8x8 upscaled), stratified split 1,438 train / 359 val, cold feature cache, ONNX Runtime fast path.",
             "", "| image size | val accuracy | macro-F1 | fit wall s | feature s | time vs 224 px |",
             "|---|---|---|---|---|---|"]
    for size, acc, f1, wall, feat, _ in rows:
        lines.append(f"| {size} | {acc:.4f} | {f1:.4f} | {wall:.1f} | {feat:.1f} | {wall / base[3]:.2f} |")
    Path(__file__).with_name("demo_image_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    path = csv_path(args.csv, "demo_image_size")
    if path is not None:
        # the 224 px row is the reference of "time vs 224 px" (no baseline method: every row is the probe)
        append_rows(path, ["dataset", "regime", "method", "options", "val_accuracy", "val_macro_f1",
                           "feature_seconds", "x_time_vs_224", "seconds", "peak_mib"],
                    [{"dataset": "sklearn_digits", "regime": f"{size} px, 1438 train / 359 val", "method": "probe",
                      "options": options_json({"backbone": "efficientnet_lite0", "image_size": size}),
                      "val_accuracy": round(acc, 4), "val_macro_f1": round(f1, 4), "feature_seconds": round(feat, 1),
                      "x_time_vs_224": round(wall / base[3], 2), "seconds": round(wall, 1), "peak_mib": peak}
                     for size, acc, f1, wall, feat, peak in rows], run_stamp)
        print(f"appended {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
