"""Multi-label classification through fit (task multilabel): the one-vs-rest probe, thresholds tuned on
validation and saved, label-set predictions, metrics, the 0/1-columns form, the CLI, and what is refused."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmadapt import ImageClassifier, TextClassifier, load_model
from fmadapt.cli import app
from fmadapt.errors import ArtifactError, ConfigError, DataError

TOPICS = {"sports": ["goal", "match", "team", "coach"], "politics": ["vote", "senate", "law", "party"],
          "tech": ["chip", "software", "robot", "code"]}


def news(n: int, seed: int) -> pd.DataFrame:
    """Headlines naming the words of one or two topics; `labels` joins the topics by ';'."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        topics = sorted(rng.choice(list(TOPICS), size=rng.choice([1, 1, 2]), replace=False))
        words = [w for t in topics for w in rng.choice(TOPICS[t], size=2)]
        rng.shuffle(words)
        rows.append({"text": "news: " + " ".join(words), "labels": ";".join(topics)})
    return pd.DataFrame(rows)


def fit(df, **kw):
    return TextClassifier(backbone="tiny-bert", task="multilabel", progress=False, **kw).fit(df)


def test_fit_predicts_label_sets_and_saves_its_thresholds(tmp_path):
    train, test = news(120, 0), news(40, 1)
    clf = fit(train)
    assert clf.classes_ == ["politics", "sports", "tech"] and clf.multilabel
    assert clf.history_["metric"] == "micro_f1" and "one-vs-rest" in clf.history_["head"]
    assert clf.thresholds_.shape == (3,) and "each label's F1" in clf.history_["thresholds"]["chosen_by"]
    assert clf.data_summary_["class_counts"]["train"]["tech"] == sum("tech" in s for s in clf.splits_["train"].labels)
    proba = clf.predict_proba(test)
    assert list(proba.columns) == ["prob_politics", "prob_sports", "prob_tech"]
    assert not np.allclose(proba.sum(1), 1.0)  # a sigmoid per label, not a softmax over them
    pred = clf.predict(test)
    from itertools import combinations

    every_set = {";".join(c) for k in range(4) for c in combinations(["politics", "sports", "tech"], k)}
    assert set(pred) <= every_set  # labels joined in the model's label order
    # the topic words decide: a linear head per label learns them (a softmax head, or a wrong target matrix,
    # cannot predict two labels at once)
    m = clf.evaluate(test)
    assert m["micro_f1"] > 0.9 and m["task"] == "multilabel" and set(m["per_class"]) == set(clf.classes_)
    assert any(";" in p for p in pred)
    assert clf.score(test) == pytest.approx(np.mean(pred == test["labels"].to_numpy()))
    table = clf.predict_table(test)
    assert table["pred"].tolist() == pred.tolist()
    clf.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["task"] == "text-multilabel-classification" and set(saved["thresholds"]) == set(clf.classes_)
    assert "micro-F1" in (tmp_path / "m" / "README.md").read_text()
    back = load_model(tmp_path / "m")
    np.testing.assert_allclose(back.thresholds_, clf.thresholds_)
    assert back.predict(test).tolist() == pred.tolist()
    # a threshold moved by hand is what prediction applies
    saved["thresholds"]["tech"] = 1.0
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    assert not any("tech" in p for p in load_model(tmp_path / "m").predict(test))
    saved["thresholds"]["tech"] = 2.0
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match="thresholds"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("strategy", ["finetune", "lora"])
def test_fine_tuning_trains_a_sigmoid_head_with_binary_cross_entropy(strategy, tmp_path):
    train, test = news(80, 0), news(30, 1)
    clf = TextClassifier(backbone="tiny-bert", task="multilabel", strategy=strategy, epochs=2, progress=False,
                         head_init="random").fit(train)
    h = clf.history_
    assert h["metric"] == "micro_f1" and h["select_by"] == "metric (micro_f1)" and not h["imbalance"]["weighted"]
    # every epoch validated by binary cross-entropy and the micro-F1 at tuned thresholds
    assert len(h["epochs"]) == 2 and all(0 <= e["val_score"] <= 1 and e["val_loss"] > 0 for e in h["epochs"])
    assert clf.thresholds_.shape == (3,)
    proba = clf.predict_proba(test).to_numpy()
    assert not np.allclose(proba.sum(1), 1.0)
    clf.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(test).to_numpy(), proba, atol=1e-5)
    assert back.predict(test).tolist() == clf.predict(test).tolist()


def test_zero_one_columns_train_the_same_model_as_a_separator_column():
    df, test = news(80, 2), news(30, 3)
    flags = df[["text"]].copy()
    for t in TOPICS:
        flags[t] = [int(t in s.split(";")) for s in df["labels"]]
    a, b = fit(flags, label_col="sports,politics,tech"), fit(df)
    assert a.classes_ == b.classes_ and a.splits_["train"].labels == b.splits_["train"].labels
    np.testing.assert_allclose(a.predict_proba(test), b.predict_proba(test), atol=1e-6)
    # an input without any label is valid data in this form (every label negative)
    flags.loc[0, list(TOPICS)] = 0
    c = fit(flags, label_col="sports,politics,tech")
    labels = c.splits_["train"].labels + c.splits_["val"].labels
    assert labels.count("") == 1 and len(labels) == 80
    assert sum(n.get("(none)", 0) for n in c.data_summary_["class_counts"].values()) == 1


def test_bad_multilabel_input_and_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"l2sp \| lora \| auto for now, not 'contrastive'"):
        TextClassifier(backbone="tiny-bert", task="multilabel", strategy="contrastive")
    with pytest.raises(ConfigError, match="label_smoothing"):
        TextClassifier(backbone="tiny-bert", task="multilabel", strategy="finetune", label_smoothing=0.1)
    from conftest import write_image_folder

    with pytest.raises(DataError, match="one class per image; task multilabel reads a table listing the files"):
        ImageClassifier(backbone="tiny-cnn", task="multilabel").fit(write_image_folder(tmp_path / "f", 2))
    with pytest.raises(ConfigError, match="label_sep"):
        TextClassifier(backbone="tiny-bert", task="multilabel", label_sep="")
    flags = news(20, 0)[["text"]].assign(a=[0, 1] * 10, b=["1", "yes"] * 9 + ["maybe", "0"])
    with pytest.raises(DataError, match=r"column 'b', row 20: 'maybe' is not 0/1"):
        fit(flags, label_col="a,b")
    with pytest.raises(DataError, match="no input of the training data carries a label"):
        fit(flags.assign(b=0, a=0), label_col="a,b")


def test_single_label_data_read_as_multilabel_is_said_and_unseen_labels_are_left_out():
    df = news(60, 4)
    df["labels"] = [s.split(";")[0] for s in df["labels"]]
    clf = fit(df)
    assert any("no row has more than one label" in w for w in clf.data_summary_["warnings"])
    val = news(20, 5)
    val.loc[0, "labels"] = "tech;weather"
    clf = TextClassifier(backbone="tiny-bert", task="multilabel", progress=False).fit(news(60, 4), val=val)
    assert any("never seen in training" in w and "'weather'" in w for w in clf.data_summary_["warnings"])
    assert clf.classes_ == ["politics", "sports", "tech"]


def test_cli_fit_predict_evaluate_multilabel(tmp_path):
    runner = CliRunner()
    news(100, 0).to_csv(tmp_path / "train.csv", index=False)
    news(30, 1).to_csv(tmp_path / "test.csv", index=False)
    r = runner.invoke(app, ["fit", str(tmp_path / "train.csv"), "--backbone", "tiny-bert", "--task", "multilabel",
                            "--out", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    assert "micro_f1" in summary["metrics"]["val"]
    r = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "test.csv"),
                            "--output", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(pred.columns[-3:]) == ["prob_politics", "prob_sports", "prob_tech"]
    assert pred["pred"].tolist() == load_model(tmp_path / "m").predict(tmp_path / "test.csv").tolist()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv")])
    assert r.exit_code == 0 and "micro_f1=" in r.output and "subset_accuracy=" in r.output, r.output
    report = (tmp_path / "m" / "report.html").read_text()
    assert "micro f1" in report and "subset accuracy" in report
    # fairness by a group column: micro-F1 per group, from the predicted label sets
    test = news(30, 1).assign(site=["x" if i % 3 else "y" for i in range(30)])
    test.to_csv(tmp_path / "test.csv", index=False)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv"), "--group-col", "site"])
    assert r.exit_code == 0 and "micro_f1 per group" in r.output, r.output
    fair = json.loads(next((tmp_path / "m" / "evaluation").rglob("fairness.json")).read_text())
    sep = load_model(tmp_path / "m").config_.label_sep
    for g in ("x", "y"):
        rows = test["site"] == g
        truth = [set(v.split(sep)) - {""} for v in test.loc[rows, "labels"]]
        got = [set(str(v).split(sep)) - {""} for v in pred.loc[rows, "pred"]]
        tp = sum(len(t & p) for t, p in zip(truth, got, strict=True))
        want = 2 * tp / max(1, sum(map(len, truth)) + sum(map(len, got)))
        assert fair["groups"][g]["micro_f1"] == pytest.approx(want)


def test_robustness_scores_micro_f1_and_explanations_attribute_the_surest_label():
    from fmadapt.evaluate.explain import explain_sample
    from fmadapt.evaluate.robustness import robustness_report, robustness_summary_lines

    clf = fit(news(40, 0))
    ex = clf.read_labeled(news(12, 1))
    rob = robustness_report(clf, ex, text_rates=(0.3,))
    assert rob["metric"] == "micro_f1" and rob["n"] == 12
    assert rob["clean_accuracy"] == pytest.approx(clf.evaluate(news(12, 1))["micro_f1"])
    assert set(rob["text"]) == {"typo", "casing", "punctuation", "word_drop"}
    assert all(0.0 <= v["0.3"] <= 1.0 for v in rob["text"].values())
    assert "clean micro_f1" in robustness_summary_lines(rob)[0]
    items = explain_sample(clf, ex, n_right=2, n_wrong=3)
    proba = clf.proba(ex)
    pred = clf.predict(news(12, 1))
    sep = clf.config_.label_sep
    right = [set(filter(None, str(p).split(sep))) == set(filter(None, t.split(sep)))
             for p, t in zip(pred, ex.labels, strict=True)]
    n_wrong = min(3, right.count(False))
    assert [i["correct"] for i in items] == [False] * n_wrong + [True] * min(2, right.count(True))
    for item in items:
        row = ex.ids.index(item["id"])
        assert item["pred"] == pred[row] and item["explained"] == clf.classes_[int(proba[row].argmax())]
        assert item["correct"] == right[row] and item["tokens"] and "error" not in item
