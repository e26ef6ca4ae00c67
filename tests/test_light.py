"""The torch-free inference path (runtime/light.py, light_predict.py): same numbers and columns as the full path,
taken only when it can be, and without importing torch, transformers or Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import text_frame, tiny_bert
from fmadapt.backbones import register_backbone
from fmadapt.runtime import light


@register_backbone("tiny-bert-cached", "text", "test only: tiny-bert, identifiable (checksum), so it is referenced")
def tiny_bert_cached(pretrained: bool = True):
    bb = tiny_bert()
    bb.cfg.name, bb.cfg.sha256, bb.cfg.pretrained = "tiny-bert-cached", "1" * 64, True
    return bb


TEXTS = ["the film was great", "", "Ünïcödé façade, naïve café — 東京 and emoji 🎬!", "NA",
         " ".join(["a long review that goes on"] * 40), "short", "   ", "x" * 300]


def _csv(tmp_path: Path, texts=TEXTS, name="t.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame({"text": texts}).to_csv(p, index=False)
    return p


def test_embed_light_path_gives_the_full_paths_features_and_ids(tmp_path, monkeypatch):
    from fmadapt.embed import embed

    data = _csv(tmp_path)
    assert light.light_encoder("tiny-bert-cached", "auto") is None  # nothing remembered yet
    full, ids_full = embed(data, "tiny-bert-cached", cache=False)
    assert light.light_encoder("tiny-bert-cached", "auto") is not None  # the full path remembered its graph
    import fmadapt.backbones

    monkeypatch.setattr(fmadapt.backbones, "create_backbone", lambda *a, **k: pytest.fail("full path ran"))
    fast, ids_fast = embed(data, "tiny-bert-cached", cache=False)
    pd.testing.assert_frame_equal(ids_fast, ids_full)
    assert np.array_equal(np.isnan(fast), np.isnan(full))
    ok = ~np.isnan(full[:, 0])
    assert ok.sum() == 5 and np.allclose(fast[ok], full[ok], atol=1e-6)


def test_light_tokenizer_gives_the_transformers_ids_and_masks():
    from fmadapt.backbones import create_backbone
    from fmadapt.embed import embed  # noqa: F401

    bb = create_backbone("tiny-bert-cached")
    from fmadapt.data.examples import Examples
    from fmadapt.runtime.features import extract_features, token_counts

    texts = [t for t in TEXTS if t.strip() and t != "NA"]
    extract_features(bb, Examples(inputs=texts, labels=None, ids=[str(i) for i in range(len(texts))],
                                  source="x", modality="text"), runtime="auto")
    assert light.remember(bb)
    enc = light.light_encoder("tiny-bert-cached", "auto")
    ref = bb.collator()(texts)
    got = enc.batch(enc.tokenizer.encode_batch(texts))
    assert np.array_equal(got["input_ids"], ref["input_ids"].numpy())
    assert np.array_equal(got["attention_mask"], ref["attention_mask"].numpy())
    assert ref["input_ids"].shape[1] == bb.cfg.max_tokens  # the long texts were truncated alike
    short = enc.batch(enc.tokenizer.encode_batch(texts[:2]))  # padded to the batch's longest, as the collator
    assert np.array_equal(short["input_ids"], bb.collator()(texts[:2])["input_ids"].numpy())
    assert token_counts(bb, texts) == [len(e.ids) for e in enc.tokenizer.encode_batch(texts)]


def test_nothing_is_remembered_when_onnx_runtime_did_not_run(tmp_path):
    from fmadapt.embed import embed

    embed(_csv(tmp_path), "tiny-bert-cached", cache=False, runtime="torch")
    assert light.load_entry("tiny-bert-cached") is None
    embed(_csv(tmp_path), "tiny-bert", cache=False)  # random weights, no checksum: never remembered
    assert light.load_entry("tiny-bert") is None


def test_entry_is_dropped_when_the_backbone_files_change_or_the_switch_is_off(tmp_path, monkeypatch):
    from fmadapt.embed import embed

    embed(_csv(tmp_path), "tiny-bert-cached", cache=False)
    entry = light.load_entry("tiny-bert-cached")
    assert entry is not None and "fp32" in entry["graphs"]
    monkeypatch.setenv(light.ENV_SWITCH, "0")
    assert light.light_encoder("tiny-bert-cached", "auto") is None
    monkeypatch.delenv(light.ENV_SWITCH)
    assert light.light_encoder("tiny-bert-cached", "torch") is None
    assert light.light_encoder("tiny-bert-cached", "int8") is None  # no int8 graph ran yet
    f = tmp_path / "weights.bin"
    f.write_bytes(b"1234")
    entry["files"] = [{"path": str(f), "size": 4, "mtime_ns": f.stat().st_mtime_ns}]
    path = light._entry_path("tiny-bert-cached")
    path.write_text(json.dumps(entry))
    assert light.load_entry("tiny-bert-cached") is not None
    f.write_bytes(b"12345")  # the installed weights changed: the entry no longer describes them
    assert light.load_entry("tiny-bert-cached") is None
    f.write_bytes(b"1234")
    import os

    os.utime(f, ns=(entry["files"][0]["mtime_ns"],) * 2)
    assert light.load_entry("tiny-bert-cached") is not None
    damaged = tmp_path / "damaged.onnx"  # a damaged graph: the full path deletes and rebuilds it
    damaged.write_bytes(b"not onnx")
    path.write_text(json.dumps({**entry, "graphs": {"fp32": str(damaged)}}))
    assert light.light_encoder("tiny-bert-cached", "auto") is None


def test_int8_graph_is_remembered_and_served(tmp_path):
    from fmadapt.embed import embed

    data = _csv(tmp_path)
    full, _ = embed(data, "tiny-bert-cached", cache=False, runtime="int8")
    assert "int8" in light.load_entry("tiny-bert-cached")["graphs"]
    enc = light.light_encoder("tiny-bert-cached", "int8")
    assert enc is not None and enc.graph.endswith("-int8.onnx")
    fast, _ = embed(data, "tiny-bert-cached", cache=False, runtime="int8")
    ok = ~np.isnan(full[:, 0])
    assert np.allclose(fast[ok], full[ok], atol=1e-6)


def test_feature_cache_is_shared_with_the_full_path(tmp_path):
    from fmadapt.data.cache import FeatureCache, backbone_key
    from fmadapt.embed import embed

    data = _csv(tmp_path)
    embed(data, "tiny-bert-cached", cache=False)  # remembers the graph
    full, _ = embed(data, "tiny-bert-cached", runtime="torch")  # writes the feature cache from PyTorch features
    enc = light.light_encoder("tiny-bert-cached", "auto")
    assert backbone_key(enc.cfg) is not None
    texts = [t for t in TEXTS if t.strip() and t != "NA"]
    hit = enc.features(texts, FeatureCache())  # the very entry the full path wrote: read, not recomputed
    assert np.array_equal(hit, full[~np.isnan(full[:, 0])])


def _probe_model(tmp_path: Path, temperature: float | None = None) -> Path:
    from fmadapt import TextClassifier

    clf = TextClassifier(backbone="tiny-bert-cached", strategy="probe", seed=0)
    clf.fit(text_frame(12))
    out = clf.save_pretrained(tmp_path / "model", report=False)
    if temperature is not None:
        cfg = json.loads((out / "config.json").read_text())
        cfg["calibration"] = {"method": "temperature", "temperature": temperature, "note": "test"}
        (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("temperature", [None, 2.5])
def test_predict_light_path_writes_the_full_paths_table(tmp_path, temperature):
    from fmadapt import load_model
    from fmadapt.light_predict import predict_table, remember_model

    model = _probe_model(tmp_path, temperature)
    data = _csv(tmp_path, [*TEXTS, "the film was awful and dull"])
    assert predict_table(model, data) is None  # the graph is not remembered yet (the fit ran it, not a load)
    clf = load_model(model)
    full = clf.predict_table(data)
    remember_model(clf, model)
    fast = predict_table(model, data)
    assert fast is not None
    assert list(fast.columns) == list(full.columns) and "error" in fast
    probs = [c for c in full.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(fast.drop(columns=probs), full.drop(columns=probs))
    assert np.allclose(fast[probs].to_numpy(float), full[probs].to_numpy(float), atol=1e-6, equal_nan=True)
    renamed = _csv(tmp_path, ["great film", ""], name="r.csv")  # --text override, and a column not found
    with pytest.warns(UserWarning, match="not found"):
        light_t = predict_table(model, renamed, text_col="review")
    clf.config_.text_col = "review"
    with pytest.warns(UserWarning, match="not found"):
        full_t = clf.predict_table(renamed)
    pd.testing.assert_frame_equal(light_t.drop(columns=probs), full_t.drop(columns=probs))


def test_predict_light_path_is_refused_for_what_it_does_not_handle(tmp_path):
    from fmadapt import load_model
    from fmadapt.light_predict import predict_table, remember_model

    model = _probe_model(tmp_path)
    data = _csv(tmp_path)
    clf = load_model(model)
    clf.predict_table(data)
    remember_model(clf, model)
    assert predict_table(model, data) is not None
    cfg_file = model / "config.json"
    good = cfg_file.read_text()
    for change in ({"backbone_weights": "included"}, {"strategy": "finetune"}, {"ensemble": [{"dir": "x"}]},
                   {"format_version": 99}, {"calibration": {"temperature": -1}}, {"ngram": {"weight": 2}},
                   {"ngram": {"weight": 0.5}}):  # (the last: an n-gram model named whose files are missing)
        cfg_file.write_text(json.dumps({**json.loads(good), **change}))
        assert predict_table(model, data) is None, change
    cfg_file.write_text(good)
    (model / ".fmadapt-commit.json").write_text("{}")  # an interrupted save: load_model finishes it first
    assert predict_table(model, data) is None
    (model / ".fmadapt-commit.json").unlink()
    bb = json.loads((model / "backbone.json").read_text())
    (model / "backbone.json").write_text(json.dumps({**bb, "sha256": "2" * 64}))  # trained on other weights
    assert predict_table(model, data) is None


def test_apply_temperature_is_the_calibration_modules():
    from fmadapt.evaluate.calibration import apply_temperature
    from fmadapt.light_predict import apply_temperature as light_apply

    p = np.random.default_rng(0).dirichlet(np.ones(4), size=20).astype(np.float32)
    for t in (1.0, 0.5, 3.0):
        a, b = apply_temperature(p, t), light_apply(p, t)
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.integration
def test_cli_embed_and_predict_from_a_remembered_graph_import_no_torch(tmp_path):
    """In a fresh process: the registered test backbone does not exist there, so only the light path can work."""
    from fmadapt import load_model
    from fmadapt.embed import embed
    from fmadapt.light_predict import remember_model

    data = _csv(tmp_path)
    embed(data, "tiny-bert-cached", cache=False)
    model = _probe_model(tmp_path)
    clf = load_model(model)
    clf.predict_table(data)
    remember_model(clf, model)
    code = ("import sys\nfrom fmadapt.cli import main\nsys.argv = ['fmadapt', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'transformers', 'timm', "
            "'sklearn', 'scipy'}))")
    for args in (["embed", str(data), "-o", str(tmp_path / "f.npy"), "--backbone", "tiny-bert-cached"],
                 ["predict", str(model), str(data), "-o", str(tmp_path / "p.csv")]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert np.load(tmp_path / "f.npy").shape == (len(TEXTS), 32)
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == len(TEXTS) and table["error"].notna().sum() == 3


def test_a_failure_while_running_the_light_path_falls_back_to_the_full_path(tmp_path, monkeypatch):
    from fmadapt.embed import embed
    from fmadapt.light_predict import predict_table, remember_model

    data = _csv(tmp_path)
    full, _ = embed(data, "tiny-bert-cached", cache=False)
    model = _probe_model(tmp_path)
    from fmadapt import load_model

    clf = load_model(model)
    clf.predict_table(data)
    remember_model(clf, model)

    def broken(self, texts, batch_size=64):
        raise RuntimeError("graph damaged since it loaded")

    monkeypatch.setattr(light.LightTextEncoder, "encode", broken)
    again, _ = embed(data, "tiny-bert-cached", cache=False)  # the full path, same features
    assert np.array_equal(np.isnan(again), np.isnan(full)) and np.allclose(again[~np.isnan(full[:, 0])],
                                                                           full[~np.isnan(full[:, 0])], atol=1e-6)
    assert predict_table(model, _csv(tmp_path, ["texts never embedded"], name="n.csv")) is None  # not cached


def test_threads_follow_omp_num_threads_as_torch_does(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert light.default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert light.default_threads() >= 1


@pytest.mark.integration
@pytest.mark.parametrize("weight", [0.4, 1.0])
def test_predict_light_path_serves_autos_ngram_model(tmp_path, weight):
    """A model with auto's n-gram TF-IDF model (stacked, or alone) predicts the full path's table without torch;
    alone, it needs no graph at all (a fresh process, where the test backbone does not even exist)."""
    from fmadapt import load_model
    from fmadapt.adapt import ngram
    from fmadapt.light_predict import predict_table, remember_model

    model = _probe_model(tmp_path, temperature=1.7)
    df = text_frame(12)
    clf = load_model(model)
    y = np.asarray([clf.classes_.index(v) for v in df["label"]])
    clf.ngram_, clf.ngram_weight_ = ngram.fit(df["text"].tolist(), y, 2, 1.0, False, 0), weight
    clf.save_pretrained(model, report=False)
    data = _csv(tmp_path, [*TEXTS, "the film was awful and dull"])
    loaded = load_model(model)
    if weight < 1.0:
        assert predict_table(model, data) is None  # its graph is not remembered yet
    full = loaded.predict_table(data)
    remember_model(loaded, model)
    fast = predict_table(model, data)
    assert fast is not None
    probs = [c for c in full.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(fast.drop(columns=probs), full.drop(columns=probs))
    assert np.allclose(fast[probs].to_numpy(float), full[probs].to_numpy(float), atol=1e-6, equal_nan=True)
    if weight == 1.0:
        code = ("import sys\nfrom fmadapt.cli import main\nsys.argv = ['fmadapt', *sys.argv[1:]]\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'transformers'}))")
        r = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(data), "-o",
                            str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
        table = pd.read_csv(tmp_path / "p.csv")
        assert list(table["pred"].dropna()) == list(full["pred"].dropna())


@pytest.mark.integration
@pytest.mark.parametrize("table_head", ["linear", "stack"])
def test_predict_light_path_reads_table_columns_as_the_full_path(tmp_path, table_head):
    """A probe reading table columns beside the text (a linear table head, or stacked trees): the same table
    without torch, in a fresh process too; a table without one of the columns gets the full path's error."""
    from fmadapt import TextClassifier, load_model
    from fmadapt.errors import DataError
    from fmadapt.light_predict import predict_table, remember_model
    from test_table_stack import interactions

    clf = TextClassifier(backbone="tiny-bert-cached", features="age,dept", table_head=table_head, progress=False)
    clf.fit(interactions(200, 6).drop(columns=["score"]))
    assert (clf.members_[0].model.stack is not None) == (table_head == "stack")
    model = clf.save_pretrained(tmp_path / "model", report=False)
    data = tmp_path / "new.csv"
    interactions(30, 7).drop(columns=["label", "score"]).to_csv(data, index=False)
    loaded = load_model(model)
    full = loaded.predict_table(data)
    remember_model(loaded, model)
    fast = predict_table(model, data)
    assert fast is not None and list(fast.columns) == list(full.columns)
    probs = [c for c in full.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(fast.drop(columns=probs), full.drop(columns=probs))
    assert np.allclose(fast[probs].to_numpy(float), full[probs].to_numpy(float), atol=1e-5)
    pd.read_csv(data).drop(columns=["dept"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="'dept'"):
        predict_table(model, tmp_path / "short.csv")
    code = ("import sys\nfrom fmadapt.cli import main\nsys.argv = ['fmadapt', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'sklearn'}))")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(data), "-o", str(tmp_path / "p.csv")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stderr + r.stdout
    assert pd.read_csv(tmp_path / "p.csv")["pred"].astype(str).tolist() == full["pred"].astype(str).tolist()


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_predict_light_path_serves_multilabel_and_regression_probes(tmp_path, task):
    """Thresholds (multi-label) and the target's scale and intervals (regression) applied as the full path does."""
    from fmadapt import TextClassifier, load_model
    from fmadapt.light_predict import predict_table, remember_model
    from test_multilabel_fit import news
    from test_regression_fit import reviews

    frame = news if task == "multilabel" else reviews
    clf = TextClassifier(backbone="tiny-bert-cached", task=task, progress=False).fit(frame(80, 0))
    assert (clf.thresholds_ is not None) if task == "multilabel" else (clf.interval_ is not None)
    model = clf.save_pretrained(tmp_path / "model", report=False)
    data = tmp_path / "new.csv"
    frame(20, 1).to_csv(data, index=False)
    loaded = load_model(model)
    full = loaded.predict_table(data)
    remember_model(loaded, model)
    fast = predict_table(model, data)
    assert fast is not None and list(fast.columns) == list(full.columns)
    numbers = [c for c in full.columns if c.startswith("prob_") or c in ("lower", "upper")
               or (task == "regression" and c == "pred")]
    pd.testing.assert_frame_equal(fast.drop(columns=numbers), full.drop(columns=numbers))
    assert np.allclose(fast[numbers].to_numpy(float), full[numbers].to_numpy(float), atol=1e-5)


def test_predict_light_path_serves_a_model_of_several_targets(tmp_path):
    from fmadapt import TextClassifier, load_model
    from fmadapt.light_predict import predict_table, remember_model
    from test_multitarget import reviews

    clf = TextClassifier(backbone="tiny-bert-cached", targets="verdict,score:regression,tags:multilabel",
                         progress=False).fit(reviews(80, 0))
    model = clf.save_pretrained(tmp_path / "model", report=False)
    data = tmp_path / "new.csv"
    reviews(20, 1).assign(text=lambda d: d["text"].where(d.index != 3, "")).to_csv(data, index=False)
    loaded = load_model(model)
    full = loaded.predict_table(data)
    assert predict_table(model, data) is None  # nothing remembered yet
    remember_model(loaded, model)
    fast = predict_table(model, data)
    assert fast is not None and list(fast.columns) == list(full.columns) and fast["error"].notna().sum() == 1
    numbers = [c for c in full.columns if "_prob_" in c or c.startswith("score_")]
    pd.testing.assert_frame_equal(fast.drop(columns=numbers), full.drop(columns=numbers))
    assert np.allclose(fast[numbers].to_numpy(float), full[numbers].to_numpy(float), atol=1e-5, equal_nan=True)
