"""Continued pretraining (issue 26): fine-tuning with and without `fmadapt pretrain` first, against the character
TF-IDF + logistic regression script, in the same run.

    python benchmarks/pretrain.py [--datasets thucnews,sst2,fashion_mnist] [--labels N,...] [--seeds 0]
                                  [--pretrain-epochs 1] [--time-budget T] [--test N] [--work /tmp/ptbench] [--csv PATH]

THUCNews titles (Chinese headlines, 10 classes): the labeled pool is dev.txt (10,000 titles), the test set test.txt
(all 10,000 unless --test). Unlabeled texts: zh_unlabeled/weibo.txt (52,044 Weibo sentences) and the 10,000 dev
titles without their labels (task-adaptive pretraining: the texts of the task itself; never the test titles).
One `fmadapt pretrain` run (masked-LM with --extend-vocab, on minilm-l6) is timed as a whole process; then for each
label budget and seed, the same labeled sample (stratified, seeded) is fitted three ways:
- tfidf: character 1-2-gram TF-IDF + LogisticRegression(C=1) (the script a user writes; as benchmarks/strategies.py);
- finetune: `TextClassifier(strategy="finetune", extend_vocab=True, epochs=4, lr=1e-4)` on minilm-l6 (the setting of
  benchmarks/notes/strategies_thucnews.md);
- pretrained+finetune: the same on the pretrained backbone directory.
SST-2 (English movie-review phrases, 2 classes; --labels default 100, seeds 0,1,2): the pool is train.tsv
deduplicated, the test set test.tsv; unlabeled: 20,000 pool sentences (seeded sample; their labels unused). Three
pretraining runs, `mlm`, `simcse` and `tsdae`; per seed: tfidf (word 1-2 grams), the probe on minilm-l6 and on the
simcse and tsdae backbones, finetune (`TextClassifier(strategy="finetune")`, defaults) on minilm-l6 and on the mlm
backbone.
Fashion-MNIST (--datasets fashion_mnist; --labels default 1000): the 60,000 training images written once as PNG
files are the pool and, without their labels, the unlabeled folder; the test set the 10,000 t10k images. One
`fmadapt pretrain` run (SimCLR on efficientnet_lite0 at 64 px, the side benchmarks/core.py uses for these 28 px
images); per seed: the probe on efficientnet_lite0 and on the pretrained backbone, both at 64 px.
AG News, clothing reviews `recommended` and `rating` (--datasets ag_news,clothing_recommended,clothing_rating;
--labels default 100, seeds 0,1,2): no pretraining; per seed the word TF-IDF script, the probe and `auto` (5 min),
whose validation split then holds 20 texts (notes/auto_small_validation.md).
Rows in results/pretrain.csv: dataset, labels, seed, method, test accuracy, macro-F1, fit seconds; the pretraining
run's row has its steps, seconds and its guard's quick probe before/after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_csv_argument, append_rows, csv_path, measured_process  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIELDS = ["dataset", "labels", "seed", "method", "options", "accuracy", "macro_f1", "fit_seconds",
          "process_seconds", "n_test", "notes"]


def load_thucnews(work: Path, n_test: int | None) -> tuple:
    import pandas as pd

    root = DATA / "thucnews_titles"
    names = (root / "class.txt").read_text(encoding="utf-8").split()
    rd = {"sep": "\t", "header": None, "names": ["text", "label"], "quoting": 3, "dtype": str}
    pool, test = (pd.read_csv(root / f, **rd) for f in ("dev.txt", "test.txt"))
    for df in (pool, test):
        df["label"] = [names[int(v)] for v in df["label"]]
    if n_test is not None and n_test < len(test):
        test = test.sample(n=n_test, random_state=0).reset_index(drop=True)
    unlabeled = work / "thucnews_unlabeled.txt"
    lines = [t.strip() for t in (DATA / "zh_unlabeled" / "weibo.txt").read_text(encoding="utf-8").splitlines()]
    lines += [str(t).strip() for t in pool["text"]]
    unlabeled.write_text("\n".join(t for t in lines if t) + "\n", encoding="utf-8")
    pool.to_csv(work / "pool.csv", index=False)
    return pool, test, unlabeled


def load_sst2(work: Path, n_test: int | None) -> tuple:
    import pandas as pd

    rd = {"sep": "\t", "quoting": 3, "dtype": str}
    pool = pd.read_csv(DATA / "sst2" / "train.tsv", **rd).rename(columns={"sentence": "text"})
    pool = pool.drop_duplicates("text").reset_index(drop=True)[["text", "label"]]
    test = pd.read_csv(DATA / "sst2" / "test.tsv", **rd).rename(columns={"content": "text"})[["text", "label"]]
    if n_test is not None and n_test < len(test):
        test = test.sample(n=n_test, random_state=0).reset_index(drop=True)
    unlabeled = work / "sst2_unlabeled.txt"
    sample = pool["text"].sample(n=min(20000, len(pool)), random_state=0)
    unlabeled.write_text("\n".join(str(t).strip() for t in sample if str(t).strip()) + "\n", encoding="utf-8")
    pool.to_csv(work / "sst2_pool.csv", index=False)
    return pool, test, unlabeled


def load_english(name: str, work: Path, n_test: int | None) -> tuple:
    """AG News or clothing reviews (defaults.read_english): the whole training file as the pool (labeled draws come
    from it), the test file; no unlabeled texts (no arm pretrains on them)."""
    from defaults import read_english

    pool, test = (df[["text", "label"]].reset_index(drop=True) for df in read_english(name))
    if n_test is not None and n_test < len(test):
        test = test.sample(n=n_test, random_state=0).reset_index(drop=True)
    return pool, test, None


def load_fmnist(work: Path, n_test: int | None) -> tuple:
    """The 60,000 training images written once as PNG files (work/png/train/<i>.png): the pool (a table of paths and
    labels) and, without their labels, the unlabeled folder; the test set the 10,000 t10k images (or a stratified
    --test sample)."""
    import pandas as pd
    from core import FMNIST_CLASSES, _idx
    from PIL import Image

    tables = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _idx(DATA / "fashion_mnist" / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        y = _idx(DATA / "fashion_mnist" / f"{prefix}-labels-idx1-ubyte.gz", 8)
        folder = work / "png" / split
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{i}.png" for i in range(len(y))]
        if not all(f.is_file() for f in paths[-10:]):
            for i, f in enumerate(paths):
                Image.fromarray(x[i], mode="L").save(f)
        tables[split] = pd.DataFrame({"path": [str(f) for f in paths], "label": [FMNIST_CLASSES[int(v)] for v in y]})
    pool, test = tables["train"], tables["test"]
    if n_test is not None and n_test < len(test):
        test = stratified(test, n_test, 0)
    pool.to_csv(work / "pool.csv", index=False)
    return pool, test, work / "png" / "train"


def stratified(pool, n: int, seed: int):
    from sklearn.model_selection import train_test_split

    if n >= len(pool):
        return pool.reset_index(drop=True)
    part, _ = train_test_split(pool, train_size=n, random_state=seed, stratify=pool["label"])
    return part.reset_index(drop=True)


def tfidf(train, test, analyzer: str = "char") -> tuple[list[str], float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=(1, 2))
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(vec.fit_transform(train["text"]), train["label"])
    return list(clf.predict(vec.transform(test["text"]))), time.perf_counter() - t0


def finetune(train_csv: Path, test, backbone: str, options: dict, unlabeled: Path | None = None
             ) -> tuple[list[str], float, dict]:
    """Fit on the table `train_csv` (texts, or image paths; with `unlabeled` inputs when the options say
    "unlabeled": True) and predict `test`'s inputs."""
    from fmadapt import ImageClassifier, TextClassifier

    images = "path" in test.columns
    options = dict(options)
    given = unlabeled if options.pop("unlabeled", False) else None
    t0 = time.perf_counter()
    clf = (ImageClassifier if images else TextClassifier)(backbone=backbone, progress=False, **options)
    clf.fit(str(train_csv), unlabeled=str(given) if given is not None else None)
    seconds = time.perf_counter() - t0
    h = clf.history_
    vocab = clf.data_summary_.get("vocabulary") or {}
    info = {"best_epoch": h.get("best_epoch"), "epochs_run": h.get("epochs_run"),
            "added_tokens": vocab.get("added_tokens"), "unk_rate": vocab.get("unk_rate")}
    if "C" in h:
        info["C"] = h["C"]
    if "auto" in h:  # the candidates table: what the search tried, and what it kept
        info["auto"] = {"winner": h["auto"]["winner"], "pretrain": h["auto"].get("pretrain"),
                        "self_training": h["auto"].get("self_training"), "final": h["auto"].get("final"),
                        "candidates": [[r["candidate"], r.get("val_acc"), r["status"], r.get("seconds")]
                                       for r in h["auto"]["candidates"]]}
    return [str(p) for p in clf.predict(list(test["path" if images else "text"]))], seconds, info


def score(y: list[str], pred: list[str]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return round(float(accuracy_score(y, pred)), 4), round(float(f1_score(y, pred, average="macro")), 4)


#: per dataset: loader, label budgets, pretraining runs {name: (method, extend_vocab)}, and the arms (method name,
#: strategy options, the pretraining run whose backbone it uses or None)
FINETUNE_ZH = {"strategy": "finetune", "extend_vocab": True, "epochs": 4, "lr": 1e-4}
#: Fashion-MNIST's image side, pretraining and probe alike (benchmarks/core.py's: 28 px images upscaled to 64)
FMNIST_SIZE = 64
SETS = {
    "thucnews": {"load": load_thucnews, "labels": "1000,10000", "seeds": "0", "tfidf": "char",
                 "pretrain": {"mlm": ("mlm", True)},
                 "arms": [("finetune", FINETUNE_ZH, None), ("pretrained+finetune", FINETUNE_ZH, "mlm"),
                          ("probe", {"strategy": "probe"}, None), ("pretrained+probe", {"strategy": "probe"}, "mlm"),
                          # (--arms) the search, which has the n-gram candidates: few labels, a small validation split
                          ("auto", {"strategy": "auto", "time_budget": "5m"}, None)]},
    "sst2": {"load": load_sst2, "labels": "100", "seeds": "0,1,2", "tfidf": "word",
             "pretrain": {"mlm": ("mlm", False), "simcse": ("simcse", False), "tsdae": ("tsdae", False)},
             "arms": [("probe", {"strategy": "probe"}, None), ("simcse+probe", {"strategy": "probe"}, "simcse"),
                      ("tsdae+probe", {"strategy": "probe"}, "tsdae"),
                      ("finetune", {"strategy": "finetune"}, None),
                      ("mlm+finetune", {"strategy": "finetune"}, "mlm"),
                      # (--arms) auto with and without the unlabeled sentences: whether its continued
                      # pretraining and self-training candidates pay, decided by the search itself
                      ("auto", {"strategy": "auto", "time_budget": "5m"}, None),
                      ("auto+unlabeled", {"strategy": "auto", "time_budget": "5m", "unlabeled": True}, None),
                      # (a budget in which a fine-tuned leader's student still fits after continued pretraining,
                      # SST-2 1,000 labels: notes/auto_selftrain.md)
                      ("auto+unlabeled 30m", {"strategy": "auto", "time_budget": "30m", "unlabeled": True}, None)]},
    # few labels through `auto` (its candidates judged on a validation split of 20, or cross-validated:
    # notes/auto_small_validation.md)
    **{name: {"load": (lambda work, n_test, name=name: load_english(name, work, n_test)), "labels": "100",
              "seeds": "0,1,2", "tfidf": "word", "pretrain": {},
              "arms": [("probe", {"strategy": "probe"}, None),
                       ("auto", {"strategy": "auto", "time_budget": "5m"}, None)]}
       for name in ("ag_news", "clothing_recommended", "clothing_rating")},
    "fashion_mnist": {"load": load_fmnist, "labels": "1000", "seeds": "0", "tfidf": None, "backbone":
                      "efficientnet_lite0", "pretrain_args": ["--set", f"image_size={FMNIST_SIZE}"],
                      "pretrain": {"simclr": ("simclr", False)},
                      "arms": [("probe", {"strategy": "probe", "image_size": FMNIST_SIZE}, None),
                               ("simclr+probe", {"strategy": "probe", "image_size": FMNIST_SIZE}, "simclr"),
                               # auto decides itself whether pretraining on the unlabeled images pays (--arms)
                               ("auto+unlabeled", {"strategy": "auto", "time_budget": "20m",
                                                   "image_size": FMNIST_SIZE, "unlabeled": True}, None),
                               ("auto", {"strategy": "auto", "time_budget": "20m", "image_size": FMNIST_SIZE},
                                None)]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="thucnews")
    ap.add_argument("--labels", default=None, help="label budgets (default: the dataset's)")
    ap.add_argument("--seeds", default=None, help="seeds (default: the dataset's)")
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--time-budget", default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--arms", default=None, help="which arms to run (names, comma-separated; default: all, tfidf "
                    "included)")
    ap.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a pretrain option for the pretraining runs (fmadapt pretrain --set), repeatable")
    ap.add_argument("--variant", default="", help="a name for this run's pretraining setting: the pretrained "
                    "backbones get their own folders and the rows' methods end with [VARIANT]")
    ap.add_argument("--work", default="/tmp/ptbench")
    add_csv_argument(ap, "pretrain")
    args = ap.parse_args()
    out_csv = csv_path(args.csv, "pretrain")
    for name in args.datasets.split(","):
        spec = SETS[name]
        work = Path(args.work) / name
        work.mkdir(parents=True, exist_ok=True)
        pool, test, unlabeled = spec["load"](work, args.test)
        (work / "pool.csv").exists() or pool.to_csv(work / "pool.csv", index=False)
        backbones = {}
        # (only the pretraining runs the chosen arms use)
        needed = {uses for arm, _, uses in spec["arms"] if uses and (args.arms is None or arm in args.arms.split(","))}
        for run_name, (method, extend) in spec["pretrain"].items():
            backbones[run_name] = work / f"pretrained-{run_name}{'-' + args.variant if args.variant else ''}"
            if (backbones[run_name] / "pretrain.json").is_file() or run_name not in needed:
                continue
            cmd = [sys.executable, "-m", "fmadapt", "pretrain", str(unlabeled), "--out", str(backbones[run_name]),
                   "--method", method, "--epochs", str(args.pretrain_epochs), "--labeled", str(work / "pool.csv"),
                   "--json", *(["--extend-vocab"] if extend else []), *spec.get("pretrain_args", []),
                   "--backbone", spec.get("backbone", "minilm-l6"),
                   *[a for kv in args.pretrain_set for a in ("--set", kv)],
                   *(["--time-budget", args.time_budget] if args.time_budget else [])]
            done, process_seconds, _ = measured_process(cmd)
            if done.returncode != 0:
                raise SystemExit(f"fmadapt pretrain failed:\n{done.stderr[-3000:]}")
            rec = json.loads((backbones[run_name] / "pretrain.json").read_text())
            r, g = rec["run"], rec["guard"]
            row = {"dataset": name, "labels": 0, "seed": 0, "method": f"pretrain ({method}"
                   + (", extend-vocab)" if extend else ")") + (f" [{args.variant}]" if args.variant else ""),
                   "options": json.dumps(rec["options"]),
                   "fit_seconds": r["seconds"], "process_seconds": round(process_seconds, 1),
                   "notes": json.dumps({"inputs": rec["data"]["trained_on"], "steps": r["steps"],
                                        "epochs_done": r["epochs_done"], "loss": [r["loss_first"], r["loss_last"]],
                                        "added_tokens": rec["vocabulary"].get("added_tokens"),
                                        "unk_rate": [rec["vocabulary"].get("unk_rate"),
                                                     rec["vocabulary"].get("unk_rate_after")],
                                        "probe_before_after": [g["before"].get("probe_accuracy"),
                                                               g["after"].get("probe_accuracy")]})}
            print(row, flush=True)
            if out_csv is not None:
                append_rows(out_csv, FIELDS, [row])
        for n in [int(v) for v in (args.labels or spec["labels"]).split(",")]:
            for seed in [int(v) for v in (args.seeds or spec["seeds"]).split(",")]:
                train = stratified(pool, n, seed)
                train_csv = work / f"train_{n}_{seed}.csv"
                train.to_csv(train_csv, index=False)
                arms = [a for a in [*([("tfidf", None, None)] if spec["tfidf"] else []), *spec["arms"]]
                        if args.arms is None or a[0] in args.arms.split(",")]
                for method, options, uses in arms:
                    notes: dict = {}
                    if options is None:
                        pred, secs = tfidf(train, test, spec["tfidf"])
                    else:
                        bb = str(backbones[uses]) if uses else spec.get("backbone", "minilm-l6")
                        pred, secs, notes = finetune(train_csv, test, bb, {**options, "seed": seed}, unlabeled)
                    acc, f1 = score(list(test["label"]), pred)
                    tag = f" [{args.variant}]" if args.variant and uses else ""
                    row = {"dataset": name, "labels": len(train), "seed": seed, "method": method + tag,
                           "options": json.dumps(options or {"analyzer": spec["tfidf"], "ngram_range": [1, 2],
                                                             "C": 1.0}),
                           "accuracy": acc, "macro_f1": f1, "fit_seconds": round(secs, 1), "n_test": len(test),
                           "notes": json.dumps(notes)}
                    print(row, flush=True)
                    if out_csv is not None:
                        append_rows(out_csv, FIELDS, [row])


if __name__ == "__main__":
    main()
