"""Table columns beside the text (`features`): which columns, their encoding (numbers standardised with missing
values imputed and flagged, categories one-hot with unseen ones ignored), a probe head that reads both, saving and
loading, and the errors when a table lacks them."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmadapt import TextClassifier, load_model
from fmadapt.cli import app
from fmadapt.data.tabular import TableEncoder, feature_columns
from fmadapt.errors import ArtifactError, ConfigError, DataError


def shop(n: int, seed: int) -> pd.DataFrame:
    """Reviews whose text says nothing; the label follows the department, the score the age."""
    rng = np.random.default_rng(seed)
    dept = rng.choice(["dresses", "tops", "jackets"], n)
    age = rng.integers(18, 70, n).astype(float)
    df = pd.DataFrame({"id": range(n), "text": [f"review {i} of the item" for i in rng.integers(0, 10**6, n)],
                       "age": age, "dept": dept, "label": np.where(dept == "tops", "yes", "no"),
                       "score": 1 + 4 * (age - 18) / 52 + rng.normal(0, 0.1, n)})
    df.loc[::13, "age"] = np.nan
    return df


def test_encoder_imputes_flags_scales_and_ignores_unseen_categories():
    df = pd.DataFrame({"age": [20.0, None, 40.0, 60.0], "dept": ["a", "a", "b", "b"], "once": ["x", "y", "z", "w"]})
    enc = TableEncoder.fit(df)
    assert enc.names() == ["age", "age missing", "dept=a", "dept=b"]  # "once": no category seen twice
    x = enc.transform(pd.DataFrame({"age": [40.0, None], "dept": ["b", "new"], "once": ["x", "x"]}))
    filled = np.array([20.0, 40.0, 40.0, 60.0])  # (the median imputed)
    assert x[0, 0] == pytest.approx((40 - filled.mean()) / filled.std()) and x[1, 1] == 1.0 and x[0, 1] == 0.0
    assert x[0, 2:].tolist() == [0.0, 1.0] and x[1, 2:].tolist() == [0.0, 0.0]  # unseen category: none set
    again = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())), "config.json")
    np.testing.assert_array_equal(again.transform(df), enc.transform(df))
    with pytest.raises(DataError, match="'dept'"):
        enc.transform(df.drop(columns=["dept"]), "new.csv")
    with pytest.raises(ArtifactError, match="table_features"):
        TableEncoder.from_dict({"columns": [{"name": "age", "kind": "numeric"}]}, "config.json")


def test_feature_columns_auto_leaves_out_text_labels_and_identifiers():
    df = shop(30, 0).assign(order=[f"o{i}" for i in range(30)])
    assert feature_columns(df, "auto", ["text", "label", "score"], "t.csv") == ["age", "dept"]
    assert feature_columns(df, "dept, age", ["text", "label"], "t.csv") == ["dept", "age"]
    with pytest.raises(DataError, match="'nope' not found"):
        feature_columns(df, "age,nope", ["text", "label"], "t.csv")
    with pytest.raises(DataError, match="'label' is the text or a label"):
        feature_columns(df, "label", ["text", "label"], "t.csv")


def test_the_probe_reads_the_table_beside_the_text_and_saves_its_encoding(tmp_path):
    train, test = shop(160, 0), shop(60, 1)
    text_only = TextClassifier(backbone="tiny-bert", progress=False).fit(train.drop(columns=["score"]))
    both = TextClassifier(backbone="tiny-bert", features="auto", progress=False).fit(train.drop(columns=["score"]))
    assert both.data_summary_["table_features"]["columns"] == ["age", "dept"]
    # the department decides the label: only the model that reads it gets it right
    assert both.evaluate(test)["accuracy"] > 0.95 > text_only.evaluate(test)["accuracy"] + 0.1
    both.save_pretrained(tmp_path / "m")
    assert "table_features" in json.loads((tmp_path / "m" / "config.json").read_text())
    back = load_model(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(test).to_numpy(), both.predict_proba(test).to_numpy(), atol=1e-6)
    with pytest.raises(DataError, match=r"reads table columns beside the text \(age, dept\)"):
        back.predict(["only a text"])
    with pytest.raises(DataError, match="'dept'"):
        back.predict(test.drop(columns=["dept"]))


def test_regression_reads_numbers_from_the_table():
    train, test = shop(160, 2), shop(60, 3)
    clf = TextClassifier(backbone="tiny-bert", task="regression", label_col="score", features="age",
                         progress=False).fit(train.drop(columns=["label"]))
    assert clf.evaluate(test)["r2"] > 0.8  # the score follows the age


def test_fine_tuning_trains_the_table_head_from_the_batches(tmp_path):
    train, test = shop(160, 4), shop(60, 5)
    # a random head: only batches that carry the table columns can teach it the department
    clf = TextClassifier(backbone="tiny-bert", features="auto", strategy="finetune", head_init="random",
                         epochs=6, head_lr=0.05, progress=False).fit(train.drop(columns=["score"]))
    h = clf.history_
    assert h["epochs_run"] == 6 and h["best_epoch"] >= 1 and not h["cached_activations"]
    assert clf.evaluate(test)["accuracy"] > 0.95
    (group,) = [g for g in h["param_groups"] if g["name"] == "head"]
    width = len(clf.data_summary_["table_features"]["encoded"])
    assert group["params"] == 32 * 2 + 2 + width * 2  # the text head (weights, bias) and the table head
    clf.save_pretrained(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(test).to_numpy(),
                               clf.predict_proba(test).to_numpy(), atol=1e-5)


def test_fine_tuning_a_regression_from_text_and_table():
    train, test = shop(160, 6), shop(60, 7)
    clf = TextClassifier(backbone="tiny-bert", task="regression", label_col="score", features="age",
                         strategy="finetune", epochs=2, progress=False).fit(train.drop(columns=["label"]))
    assert clf.history_["epochs_run"] == 2 and clf.evaluate(test)["r2"] > 0.8


def test_features_options_are_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="not 'contrastive'"):
        TextClassifier(backbone="tiny-bert", features="auto", strategy="contrastive")
    from fmadapt import ImageClassifier

    with pytest.raises(ConfigError, match="is for text tables"):
        ImageClassifier(backbone="tiny-cnn", features="auto")


@pytest.mark.parametrize("options", [{"ensemble_backbones": "tiny-bert,tiny-bert-cached"},
                                     {"strategy": "auto", "time_budget": "15s"}])
def test_ensembles_and_auto_read_the_table_too(tmp_path, options):
    train, test = shop(200, 10), shop(60, 11)
    clf = TextClassifier(backbone="tiny-bert", features="auto", progress=False, **options).fit(
        train.drop(columns=["score"]))
    assert all(m.model.reads_table for m in clf.members_)
    assert clf.evaluate(test)["accuracy"] > 0.95  # (the department, only in the table, decides the label)
    clf.save_pretrained(tmp_path / "m", report=False)
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(test).to_numpy(),
                               clf.predict_proba(test).to_numpy(), atol=1e-6)


def test_cli_fit_and_predict_with_features(tmp_path):
    runner = CliRunner()
    shop(100, 0).drop(columns=["score"]).to_csv(tmp_path / "train.csv", index=False)
    shop(30, 1).drop(columns=["score", "label"]).to_csv(tmp_path / "new.csv", index=False)
    r = runner.invoke(app, ["fit", str(tmp_path / "train.csv"), "--backbone", "tiny-bert", "--text", "text",
                            "--label", "label", "--features", "age,dept", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--output",
                            str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(tmp_path / "p.csv")
    assert pred["pred"].tolist() == load_model(tmp_path / "m").predict(tmp_path / "new.csv").tolist()


def test_auto_features_leave_out_multilabel_zero_one_columns():
    def tagged(n: int, seed: int) -> pd.DataFrame:
        df = shop(n, seed).drop(columns=["label", "score"])
        return df.assign(is_top=(df["dept"] == "tops").astype(int), is_old=(df["age"].fillna(40) > 40).astype(int))

    clf = TextClassifier(backbone="tiny-bert", task="multilabel", label_col="is_top,is_old", features="auto",
                         progress=False).fit(tagged(120, 4))
    assert clf.data_summary_["table_features"]["columns"] == ["age", "dept"]  # not the label columns
    assert clf.evaluate(tagged(40, 5))["micro_f1"] > 0.9  # both labels follow the table


def test_a_referenced_backbone_keeps_the_table_head(tmp_path):
    # a frozen, identifiable backbone (the packaged MiniLM) is saved by reference: only the heads are stored, and
    # the table columns' head is one of them (it was dropped, and the model refused to load)
    train, test = shop(120, 0), shop(30, 1)
    clf = TextClassifier(backbone="tiny-bert-cached", features="auto", progress=False).fit(
        train.drop(columns=["score"]))
    out = clf.save_pretrained(tmp_path / "m", report=False)
    assert json.loads((out / "config.json").read_text())["backbone_weights"] == "reference"
    back = load_model(out)
    assert back.members_[0].model.table_head is not None
    pd.testing.assert_frame_equal(back.predict_proba(test), clf.predict_proba(test))


def test_explanations_of_a_model_with_table_columns_hold_the_row_fixed():
    from fmadapt.evaluate.explain import explain_inputs

    train, test = shop(120, 8), shop(6, 9)
    clf = TextClassifier(backbone="tiny-bert", features="auto", progress=False).fit(train.drop(columns=["score"]))
    ex = clf.read_inputs(test.drop(columns=["score", "label"]))
    items = explain_inputs(clf, ex, limit=3, n_steps=4)
    assert len(items) == 3 and all("error" not in it for it in items)
    assert all(it["tokens"] and "table columns held" in it["note"] for it in items)
    # the predicted class is the one the model gives with this row's columns
    assert [it["pred"] for it in items] == clf.predict(test.drop(columns=["score", "label"]))[:3].tolist()


@pytest.mark.integration
def test_lora_reads_the_table_and_an_interrupted_fine_tune_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from conftest import interrupt_then_resume
    from test_resume import _state_hash

    train, test = shop(120, 12), shop(40, 13)
    lora = TextClassifier(backbone="tiny-bert", features="auto", strategy="lora", epochs=1, progress=False).fit(
        train.drop(columns=["score"]))
    assert lora.members_[0].model.table_head is not None and lora.evaluate(test)["accuracy"] > 0.95
    data = tmp_path / "t.csv"
    shop(24, 14).drop(columns=["score"]).to_csv(data, index=False)
    make = lambda: TextClassifier(backbone="tiny-bert", features="auto", strategy="finetune", epochs=3,  # noqa: E731
                                  batch_size=4, head_init="random", cache=False, progress=False)
    whole = make().fit(data)
    resumed = interrupt_then_resume(make, data, tmp_path / "ck", monkeypatch)
    assert _state_hash(resumed) == _state_hash(whole)
    assert resumed.members_[0].model.table_head is not None


def test_a_column_that_alone_gives_the_label_is_said_in_the_data_summary():
    train = shop(200, 15).drop(columns=["score"])
    train["outcome_code"] = np.where(train["label"] == "yes", "A", "B")  # recorded with the label: a leak
    clf = TextClassifier(backbone="tiny-bert", features="auto", progress=False).fit(train)
    said = [w for w in clf.data_summary_["warnings"] if "alone gives the label" in w]
    # (dept decides the label in this data too: both are said, nothing else is)
    assert {w.split("'")[1] for w in said} == {"outcome_code", "dept"}
    reg = shop(200, 16).drop(columns=["label"]).assign(score_again=lambda d: d["score"] * 2 + 1)
    clf = TextClassifier(backbone="tiny-bert", task="regression", label_col="score", features="auto",
                         progress=False).fit(reg)
    said = [w for w in clf.data_summary_["warnings"] if "follows the label" in w]
    assert {w.split("'")[1] for w in said} == {"score_again", "age"}  # (the score is made from the age here)
    quiet = TextClassifier(backbone="tiny-bert", task="regression", label_col="score", features="dept",
                           progress=False).fit(reg)
    assert not [w for w in quiet.data_summary_["warnings"] if "follows the label" in w]


def test_the_out_of_fold_probe_that_auto_stacks_reads_the_table_as_the_probe_does():
    """`auto` weighs its stack of the probe and the n-gram model on the probe's out-of-fold predictions: they come
    from heads over the same inputs as the probe's own, text features and table columns (here the department, only
    in the table, decides the label; from the text alone the heads are near chance)."""
    from fmadapt.adapt.base import FitContext
    from fmadapt.adapt.probe import out_of_fold
    from fmadapt.data.examples import label_indices

    clf = TextClassifier(backbone="tiny-bert", features="auto", progress=False).fit(
        shop(200, 10).drop(columns=["score"]))
    fitted = clf.predictor_
    train = fitted.splits_["train"]
    ctx = FitContext(list(fitted.classes_), fitted.feature_cache(), False, table=fitted.table_encoder_)
    y = np.asarray(label_indices(list(fitted.classes_), train.labels))
    member = fitted.members_[0]
    p = out_of_fold(member.model, train, y, member.config, ctx, member.history, 5)
    assert p.shape == (len(train), len(fitted.classes_)) and (p.argmax(1) == y).mean() > 0.95
