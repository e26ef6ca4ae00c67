"""Peak memory of frozen-feature extraction over all 60,000 Fashion-MNIST training images.

Command:  python benchmarks/streaming.py [--n 60000] [--image-size 64]
Writes the 28x28 images as PNG files (the user's data path: a folder of files), extracts features with
fmadapt (ONNX Runtime fast path, DataLoader workers decoding), and reports wall time and the peak RSS of
this process and of its DataLoader workers (children), read from getrusage. Output: benchmarks/streaming.md, and
one row appended to benchmarks/results/streaming.csv (--csv): peak_mib = this process's peak (what the 4 GiB
limit is about), worker_peak_mib = the largest DataLoader worker's.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_csv_argument, append_rows, csv_path, options_json, stamp
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion_mnist"


def write_pngs(root: Path, n: int) -> list[str]:
    with gzip.open(DATA / "train-images-idx3-ubyte.gz") as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    paths = []
    for i, a in enumerate(imgs):
        d = root / f"{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:05d}.png"
        Image.fromarray(a, mode="L").save(p)
        paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).with_name("streaming.md")))
    add_csv_argument(ap, "streaming")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    run_stamp = stamp()
    import torch

    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime.features import extract_features

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="fmadapt-stream-"))
    os.environ["FMADAPT_CACHE"] = str(tmp / "cache")
    t0 = time.perf_counter()
    paths = write_pngs(tmp / "img", args.n)
    t_write = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bb = create_backbone("efficientnet_lite0")
    bb.set_image_size(args.image_size)
    ex = Examples(inputs=paths, labels=None, ids=paths, modality="image")
    t0 = time.perf_counter()
    feats = extract_features(bb, ex, batch_size=128, cache=None, progress=False)
    t_feat = time.perf_counter() - t0
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert feats.shape == (args.n, 1280) and np.isfinite(feats).all()
    lines = [
        "# Streaming feature extraction: peak memory",
        "",
        f"Command: `python benchmarks/streaming.py --n {args.n} --image-size {args.image_size}` "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, torch {torch.__version__})",
        "",
        "| images | image size | features | extraction s | images/s | peak RSS main (MB) | peak RSS worker (MB) |",
        "|---|---|---|---|---|---|---|",
        f"| {args.n} | {args.image_size} | {feats.shape[0]}x{feats.shape[1]} float32 ({feats.nbytes / 1e6:.0f} MB) "
        f"| {t_feat:.1f} | {args.n / t_feat:.0f} | {peak_self:.0f} | {peak_children:.0f} |",
        "",
        f"Before loading the backbone the process used {rss0:.0f} MB (Python, torch, PNG writing). "
        f"Writing the PNGs took {t_write:.0f} s (not included). The whole dataset as 224 px float tensors would "
        f"be {args.n * 3 * 224 * 224 * 4 / 1e9:.0f} GB; the pipeline holds one batch per worker at a time plus "
        "the (N, 1280) output.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    path = csv_path(args.csv, "streaming")
    if path is not None:
        append_rows(path, ["dataset", "regime", "method", "options", "n", "items_per_s", "write_seconds",
                           "rss_before_mib", "worker_peak_mib", "seconds", "peak_mib"],
                    [{"dataset": "fashion_mnist_png", "regime": f"n={args.n}, {args.image_size} px",
                      "method": "extract_features",
                      "options": options_json({"backbone": "efficientnet_lite0", "batch_size": 128, "cache": None,
                                               "runtime": "auto"}),
                      "n": args.n, "items_per_s": round(args.n / t_feat, 1), "write_seconds": round(t_write, 1),
                      "rss_before_mib": round(rss0, 1), "worker_peak_mib": round(peak_children, 1),
                      "seconds": round(t_feat, 1), "peak_mib": round(peak_self, 1)}], run_stamp)
        print(f"appended 1 row to {path}")
    sys.exit(0 if peak_self < 4096 else 1)


if __name__ == "__main__":
    main()
