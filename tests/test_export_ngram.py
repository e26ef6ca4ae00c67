"""`fmadapt export` of a text model that blends in `auto`'s n-gram TF-IDF model (issue 21: a stacked model exports
like the rest): the counting in predict.py as scikit-learn counts, the weights and the blend in the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from conftest import predict_without_torch
from fmadapt import TextClassifier, load_model
from fmadapt.adapt import ngram
from fmadapt.compress import export as ex
from fmadapt.compress.exported_inputs import NgramFeatures
from test_export import _exported
from test_ngram import word_frame

TEXTS = ["a cat with a saw", "The  SAW,\tthe   drill\u00a0and a goose!", "", "   ", "x", "中文 文本 goose 鹅",
         "cat cat cat cat dog", "🙂 emoji🙂 ok", "hammer-drill's pliers_2 ab", "a\nb\n\nc  d"]


@pytest.mark.parametrize("analyzer,ngram_range", [("char_wb", (1, 3)), ("word", (1, 2)), ("char", (2, 4)),
                                                  ("word", (2, 3)), ("char_wb", (2, 5))])
def test_the_exported_ngram_counting_is_scikit_learns(tmp_path, analyzer, ngram_range):
    corpus = [r["text"] for _, r in word_frame(20).iterrows()] + TEXTS
    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, sublinear_tf=True, dtype=np.float32)
    vec.fit(corpus)
    model = ngram.NgramModel([vec], np.zeros((2, len(vec.vocabulary_))), np.zeros(2))
    (tmp_path / "ngram.json").write_text(json.dumps({**model.spec(), "pad_index": len(vec.vocabulary_)}))
    feats = NgramFeatures(tmp_path / "ngram.json")
    want = vec.transform(TEXTS).toarray()
    got = np.zeros_like(want)
    for i, (cols, vals) in enumerate(feats.rows(TEXTS)):
        got[i, cols] = vals
    np.testing.assert_allclose(got, want, atol=1e-6)
    padded = NgramFeatures.feeds(feats.rows(TEXTS[:3]), feats.pad)
    assert padded["ngram_index"].shape == padded["ngram_value"].shape and padded["ngram_index"][2].tolist() == \
        [feats.pad] * padded["ngram_index"].shape[1]  # (the empty text: padding alone)


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """A tiny-bert probe with an n-gram model blended in at 0.3, calibrated, saved."""
    df = word_frame(30)
    clf = TextClassifier(backbone="tiny-bert", progress=False).fit(df)
    y = (df["label"] == "tool").to_numpy().astype(int)
    fitted = clf.predictor_
    fitted.ngram_, fitted.ngram_weight_ = ngram.fit(df["text"].tolist(), y, 2, 1.0, False, 0), 0.3
    fitted.temperature_ = 1.4
    return clf.save_pretrained(tmp_path_factory.mktemp("stacked") / "m", report=False)


def test_a_stacked_model_exports_and_predicts_as_the_model(stacked, tmp_path):
    meta = ex.export_model(stacked, tmp_path / "out", int8=True)
    out = tmp_path / "out"
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "ngram.json"} <= {p.name for p in out.iterdir()}
    assert meta["ngram"]["weight"] == 0.3 and set(meta["inputs"]) == {"input_ids", "attention_mask",
                                                                      "ngram_index", "ngram_value"}
    model = load_model(stacked, cache=False)
    texts = TEXTS + ["a cat and a hammer with the goose"] * 3
    want = model.predict_proba(texts).to_numpy()
    got = _exported(out)(out, "fp32").predict_proba(texts, batch_size=4)  # (several length batches)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the n-gram part matters: without it the graph's probe alone would not give these probabilities
    probe = model.members_[0]
    assert np.abs(model.member_proba(probe, model.read_inputs(texts)) - want).max() > 1e-2
    rows = predict_without_torch(out, texts[:3])
    assert [r["label"] for r in rows] == list(model.predict(texts[:3]))
    # exported again without the n-gram part, the directory holds no stale ngram.json
    fitted = load_model(stacked, cache=False)
    fitted.ngram_, fitted.ngram_weight_ = None, 0.0
    plain = fitted.save_pretrained(tmp_path / "plain", report=False)
    ex.export_model(plain, out)
    assert not (out / "ngram.json").exists() and "ngram" not in json.loads((out / "export.json").read_text())


def test_the_ngram_model_alone_exports_without_a_tokenizer(stacked, tmp_path):
    fitted = load_model(stacked, cache=False)
    fitted.ngram_weight_ = 1.0
    alone = fitted.save_pretrained(tmp_path / "alone", report=False)
    meta = ex.export_model(alone, tmp_path / "out")
    out = tmp_path / "out"
    assert not (out / "tokenizer.json").exists() and set(meta["inputs"]) == {"ngram_index", "ngram_value"}
    exported = _exported(out)(out)
    assert [i.name for i in exported.session.get_inputs()] == ["ngram_index", "ngram_value"]
    texts = TEXTS + ["cat dog hammer"]
    np.testing.assert_allclose(exported.predict_proba(texts), load_model(alone).predict_proba(texts).to_numpy(),
                               atol=1e-4)


def _table_frame(n: int = 48, seed: int = 0):
    """Texts that say little, and table columns that decide the label: a number (with gaps) and a category."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        rows.append({"text": str(rng.choice(["fine", "ok", "so so", "a film"])),
                     "score": (float(rng.normal(3 if good else -3)) if i % 7 else None),
                     "shop": str(rng.choice(["north", "east"] if good else ["south", "west"])),
                     "label": "pos" if good else "neg"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("head", ["linear", "stack"])
def test_a_model_reading_table_columns_exports_with_their_encoding(tmp_path, head):
    from fmadapt.light_predict import exported_table

    df = _table_frame()
    clf = TextClassifier(backbone="tiny-bert", features="score,shop", table_head=head, progress=False).fit(df)
    fitted = clf.predictor_
    assert (fitted.members_[0].model.stack is not None) == (head == "stack")
    model_dir = clf.save_pretrained(tmp_path / "m", report=False)
    new = _table_frame(30, seed=1)
    new.loc[3, "shop"] = "nowhere"  # (a category never seen: no column set)
    new.loc[4, "score"] = None
    new.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(ex.ExportError, match="score, shop.*--data"):
        ex.export_model(model_dir, tmp_path / "out")
    meta = ex.export_model(model_dir, tmp_path / "out", data=str(tmp_path / "new.csv"))
    out = tmp_path / "out"
    assert meta["table"]["columns"] == ["score", "shop"] and "table" in meta["inputs"] and (out / "table.json").exists()
    model = load_model(model_dir, cache=False)
    want = model.predict_proba(new).to_numpy()
    exported = _exported(out)(out)
    for rows in (new, new.to_dict("records"), {k: list(v) for k, v in new.items()}):
        np.testing.assert_allclose(exported.predict_proba(list(new["text"]), table=rows), want, atol=1e-4)
    assert (want.argmax(1) == (new["label"] == "pos").to_numpy()).mean() > 0.8  # the columns decide
    with pytest.raises(ValueError, match="score"):
        exported.predict_proba(list(new["text"]))
    table = exported_table(out, str(tmp_path / "new.csv"))
    assert list(table["pred"]) == list(model.predict(new))
    rows = predict_without_torch(out, [str(tmp_path / "new.csv")])  # (python predict.py EXPORT rows.csv)
    assert [r["label"] for r in rows] == list(model.predict(new)) and meta["table"]["text_column"] == "text"
    # served: one row per text in the request, as the model's own API predicts them
    from fastapi.testclient import TestClient

    from fmadapt.serve.app import ServeConfig, create_app

    rows = json.loads(new.drop(columns=["text", "label"]).to_json(orient="records"))  # (NaN -> null)
    for source in (out, model_dir):
        with TestClient(create_app(ServeConfig(str(source)))) as c:
            r = c.post("/predict", json={"texts": list(new["text"]), "table": rows})
            assert r.status_code == 200, r.text
            got = np.asarray([[p["probabilities"][k] for k in model.classes_] for p in r.json()["predictions"]])
            np.testing.assert_allclose(got, want, atol=1e-4)
            assert c.get("/metadata").json()["table_columns"] == ["score", "shop"]
            for body, words in (({"texts": ["a"]}, '"table": a list of 1 objects'),
                                ({"texts": ["a"], "table": [{"score": 1}]}, "lacks the column(s) 'shop'"),
                                ({"texts": ["a"], "table": [{"score": [1], "shop": "x"}]}, "table[0]['score']")):
                r = c.post("/predict", json=body)
                assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_schemathesis_fuzzing_of_a_table_models_server_never_gets_a_5xx(tmp_path):
    """Generated bodies from the server's OpenAPI (texts + one row of table columns per text), conforming and
    broken ones: every answer is a 200 or a 4xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings

    from fmadapt.serve.app import ServeConfig, create_app

    df = _table_frame()
    model_dir = TextClassifier(backbone="tiny-bert", features="score,shop", progress=False).fit(df).save_pretrained(
        tmp_path / "m", report=False)
    df.head(8).to_csv(tmp_path / "check.csv", index=False)
    ex.export_model(model_dir, tmp_path / "out", data=str(tmp_path / "check.csv"))
    statuses: list[int] = []
    with TestClient(create_app(ServeConfig(str(tmp_path / "out"), max_batch=4, max_text_chars=100))) as c:
        schema = schemathesis.openapi.from_dict(c.get("/openapi.json").json())
        op = schema["/predict"]["POST"]
        assert "table" in op.definition.raw["requestBody"]["content"]["application/json"]["schema"]["required"]
        for mode in schemathesis.GenerationMode:
            @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(generation_mode=mode))
            def send(case):
                kw = case.as_transport_kwargs(base_url="http://testserver")
                r = c.request(**{k: v for k, v in kw.items() if k in ("method", "url", "headers", "params", "json",
                                                                      "content", "data", "files")})
                assert r.status_code < 500, (kw.get("json"), r.text)
                statuses.append(r.status_code)

            send()
    assert 200 in statuses and 422 in statuses, {s: statuses.count(s) for s in set(statuses)}


def test_the_exported_table_encoding_is_fmadapts_on_awkward_values(tmp_path):
    """Numbers as strings with spaces, infinities and absurd sizes (missing, or clipped: never inf or NaN), booleans,
    None and NaN, unseen categories: predict.py encodes each row as the model's own encoder does."""
    import pandas as pd

    from fmadapt.compress.exported_inputs import TableColumns
    from fmadapt.data.tabular import TableEncoder

    train = pd.DataFrame({"n": [1.0, 2.0, None, 4.0, 8.0], "c": ["a", "b", "a", "b", "x"]})
    enc = TableEncoder.fit(train)
    (tmp_path / "table.json").write_text(json.dumps(enc.to_dict()))
    new = pd.DataFrame({"n": [" 3 ", "inf", "-inf", "1e400", 1e300, -1e300, None, float("nan"), "abc", True],
                        "c": ["a", "b", "x", None, float("nan"), "zz", "a", 1, True, "b"]}, dtype=object)
    want = enc.transform(new)
    got = TableColumns(tmp_path / "table.json").encode(new.to_dict("records"), len(new))
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, atol=1e-6)
