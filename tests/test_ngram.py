"""The classical text candidate of `auto` (adapt/ngram.py): n-gram TF-IDF + logistic regression, its stack with
the probe, saving without pickle, and `auto` choosing among them on validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fmadapt import TextClassifier, load_model
from fmadapt.adapt import ngram
from fmadapt.errors import ArtifactError

ANIMALS = ["cat", "dog", "horse", "cow", "goat", "sheep", "duck", "goose"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "pliers", "rake", "spade"]


def word_frame(n_per_class: int = 30, seed: int = 0) -> pd.DataFrame:
    """Classes told apart by which words occur, in random order with filler: easy for n-grams, and hard for a
    tiny randomly initialised encoder."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in (("animal", ANIMALS), ("tool", TOOLS)):
        for _ in range(n_per_class):
            w = list(rng.choice(words, size=2)) + list(rng.choice(["the", "a", "of", "and", "with"], size=4))
            rng.shuffle(w)
            rows.append({"text": " ".join(w), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_ngram_model_saves_as_json_and_safetensors_and_reloads_exactly(tmp_path):
    df = word_frame()
    y = (df["label"] == "tool").to_numpy().astype(int)
    model = ngram.fit(df["text"].tolist(), y, 2, c=10.0, weighted=False, seed=0)
    p = model.proba(df["text"].tolist())
    assert p.shape == (len(df), 2) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == y).mean() == 1.0
    for name, content in model.files().items():
        (tmp_path / name).write_bytes(content)
    meta = json.loads((tmp_path / "ngram.json").read_text(encoding="utf-8"))
    assert [v["analyzer"] for v in meta["vectorizers"]] == ["char_wb", "word"]
    again = ngram.NgramModel.load(tmp_path, 2)
    texts = ["a cat with a saw", "中文 文本 goose", ""]  # unseen mixes, another script, an empty text
    np.testing.assert_allclose(again.proba(texts), model.proba(texts), atol=1e-6)
    with pytest.raises(ArtifactError, match="classes"):
        ngram.NgramModel.load(tmp_path, 3)  # weights that do not fit the model's classes
    good = json.dumps(meta)
    for bad in ({"norm": "evil"}, {"lowercase": "yes"}):  # options a hostile file could slip in
        (tmp_path / "ngram.json").write_text(json.dumps({**meta, "common": {**meta["common"], **bad}}))
        with pytest.raises(ArtifactError, match="ngram.json"):
            ngram.NgramModel.load(tmp_path, 2)
    meta = json.loads(good)
    meta["vectorizers"][0]["vocabulary"] = meta["vectorizers"][0]["vocabulary"][:-1]
    (tmp_path / "ngram.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ArtifactError, match="ngram.json"):
        ngram.NgramModel.load(tmp_path, 2)


def test_stack_weight_follows_the_informative_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 300)
    w, rows = ngram.stack_weight(good, noise, y, "accuracy", 3)
    assert w < 0.5 and len(rows) == len(ngram.STACK_WEIGHTS)
    w, _ = ngram.stack_weight(noise, good, y, "macro_f1", 3)
    assert w > 0.5
    assert isinstance(w, float)  # saved in config.json


#: words whose characters MiniLM's tokenizer (which tiny-bert uses) maps to [UNK]: what an encoder that does not
#: know a script sees, the case the n-gram candidate is for (Chinese on MiniLM)
UNKNOWN = {"animal": ["鲸鳄", "貂獾", "鹦鹉", "骆驼"], "tool": ["锤钳", "凿锹", "螺栓", "钻头"]}


def unknown_script_frame(n_per_class: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"text": " ".join([*rng.choice(words, size=2), "the", "thing", "with", "a", "name"]), "label": label}
            for label, words in UNKNOWN.items() for _ in range(n_per_class)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_auto_on_texts_runs_the_classical_candidates_and_the_winner_saves_and_predicts(tmp_path):
    from transformers import AutoTokenizer

    from fmadapt.backbones.packaged import minilm_l6_path

    tok = AutoTokenizer.from_pretrained(str(minilm_l6_path()))
    assert {t for words in UNKNOWN.values() for w in words for t in tok.tokenize(w)} == {tok.unk_token}
    df = unknown_script_frame()
    clf = TextClassifier(backbone="tiny-bert", strategy="auto", time_budget="20s", progress=False).fit(df)
    auto = clf.history_["auto"]
    rows = {r["candidate"]: r for r in auto["candidates"]}
    assert rows["n-gram tf-idf"]["status"] == "ran" and rows["stack: probe + n-gram"]["status"] == "ran"
    ran = [r for r in auto["candidates"] if r["status"] == "ran"]
    best = max(r["val_score"] for r in ran)
    assert rows[auto["winner"]]["val_score"] == best
    assert rows["probe"]["val_score"] < 0.8 < best  # the probe sees [UNK]s; the n-grams see the words
    # the stack needs both models: on a tie with either, the one that is faster alone wins
    stack = rows["stack: probe + n-gram"]["seconds"][0]
    assert stack >= rows["probe"]["seconds"][0] + rows["n-gram tf-idf"]["seconds"][0] - 0.1
    assert auto["winner"] in ("n-gram tf-idf", "stack: probe + n-gram")
    assert auto["ngram"]["stack"]["weight"] > 0.5 and auto["ngram"]["C"] > 0
    assert clf.ngram_ is not None and clf.ngram_weight_ == rows[auto["winner"]]["ngram_weight"]
    assert clf.metrics_["val"]["accuracy"] == rows[auto["winner"]]["val_acc"]  # the selection's, before refit
    out = clf.save_pretrained(tmp_path / "m")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Strategy auto" in html and "stack: probe + n-gram" in html and auto["winner"] in html
    again = load_model(out)
    texts = ["鲸鳄 the thing", "螺栓 钻头", "貂獾"]
    np.testing.assert_allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(),
                               atol=1e-5)
    assert list(again.predict(texts)) == ["animal", "tool", "animal"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["ngram"]["weight"] == clf.ngram_weight_
    assert "ngram.safetensors" in (out / "README.md").read_text(encoding="utf-8")
    # a model saved over it without an n-gram part leaves no n-gram files behind
    TextClassifier(backbone="tiny-bert", progress=False).fit(df).save_pretrained(out, report=False)
    assert not (out / "ngram.json").exists() and load_model(out).ngram_ is None


def test_the_stacked_model_blends_the_two_predictions(tmp_path):
    """A model whose n-gram weight is between 0 and 1 predicts the weighted average of its probe and its
    n-gram model, and keeps doing so once saved and reloaded."""
    df = word_frame(30)
    clf = TextClassifier(backbone="tiny-bert", progress=False).fit(df)
    y = (df["label"] == "tool").to_numpy().astype(int)  # classes_ are sorted: animal, tool
    probe = clf.predict_proba(df).to_numpy()
    fitted = clf.predictor_  # (the fitted model, whose attributes the estimator forwards)
    fitted.ngram_, fitted.ngram_weight_ = ngram.fit(df["text"].tolist(), y, 2, 1.0, False, 0), 0.3
    expected = 0.7 * probe + 0.3 * clf.ngram_.proba(df["text"].tolist())
    np.testing.assert_allclose(clf.predict_proba(df).to_numpy(), expected, atol=1e-6)
    out = clf.save_pretrained(tmp_path / "m", report=False)
    np.testing.assert_allclose(load_model(out).predict_proba(df).to_numpy(), expected, atol=1e-5)


def test_auto_ngram_off_and_images_run_no_classical_candidate():
    df = word_frame(12)
    clf = TextClassifier(backbone="tiny-bert", strategy="auto", time_budget="4s", auto_ngram=False,
                         progress=False).fit(df)
    names = [r["candidate"] for r in clf.history_["auto"]["candidates"]]
    assert "n-gram tf-idf" not in names and clf.ngram_ is None
