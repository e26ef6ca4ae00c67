"""Regression through fit (task regression): a numeric target, the ridge probe and MSE fine-tuning on the
standardised target, RMSE / MAE / R² / Spearman, split-conformal prediction intervals saved with the model, the
CLI, and what is refused or suggested."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmadapt import TextClassifier, load_model
from fmadapt.cli import app
from fmadapt.errors import ArtifactError, ConfigError, DataError
from fmadapt.tasks.regression import conformal_halfwidth, looks_continuous, regression_metrics

GOOD, BAD = ["great", "superb", "lovely", "perfect"], ["awful", "broken", "poor", "dreadful"]


def reviews(n: int, seed: int) -> pd.DataFrame:
    """A score in [1, 5] that grows with the number of good words (and some noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        good = int(rng.integers(0, 5))
        words = list(rng.choice(GOOD, size=good)) + list(rng.choice(BAD, size=4 - good))
        rng.shuffle(words)
        rows.append({"text": "the product was " + " ".join(words), "score": round(1 + good + rng.normal(0, 0.2), 2)})
    return pd.DataFrame(rows)


def fit(df, **kw):
    return TextClassifier(backbone="tiny-bert", task="regression", progress=False, **kw).fit(df)


def test_conformal_halfwidth_and_metrics_against_definitions():
    r = np.arange(1, 20, dtype=float)  # 19 residuals: 90 % -> the ceil(20 * 0.9) = 18th smallest
    assert conformal_halfwidth(r, 0.9) == 18.0
    assert math.isinf(conformal_halfwidth(r[:5], 0.9))  # too few for 90 %
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 4.0])
    m = regression_metrics(y, p, halfwidth=0.4)
    assert m["rmse"] == pytest.approx(np.sqrt(0.125)) and m["mae"] == pytest.approx(0.25)
    assert m["r2"] == pytest.approx(1 - 0.5 / 5.0) and m["spearman"] == pytest.approx(1.0)
    assert m["interval_coverage"] == 0.5 and m["interval_width"] == pytest.approx(0.8)
    assert looks_continuous([str(x / 7) for x in range(30)]) and not looks_continuous(["1", "2", "3", "2"])
    assert not looks_continuous(["pos", "neg"] * 20)


def test_fit_predicts_numbers_with_conformal_intervals_and_saves_them(tmp_path):
    train, test = reviews(160, 0), reviews(60, 1)
    clf = fit(train)
    assert clf.regression and clf.classes_ == ["score"] and clf.history_["metric"] == "rmse"
    assert clf.data_summary_["targets"]["train"]["n"] == len(clf.splits_["train"])
    interval = clf.interval_
    assert interval["coverage"] == 0.9 and interval["halfwidth"] > 0 and interval["n"] == len(clf.splits_["val"])
    pred = clf.predict(test)
    assert pred.dtype == np.float64 and len(pred) == len(test)
    m = clf.evaluate(test)
    # the number of good words decides the score: a linear head on the features must beat predicting the mean
    assert m["r2"] > 0.5 and m["spearman"] > 0.7 and m["rmse"] < test["score"].std()
    assert 0.0 <= m["interval_coverage"] <= 1.0 and m["interval_width"] == pytest.approx(2 * interval["halfwidth"])
    assert clf.score(test) == pytest.approx(m["r2"])
    table = clf.predict_table(test)
    np.testing.assert_allclose(table["upper"] - table["lower"], 2 * interval["halfwidth"])
    np.testing.assert_allclose(table["pred"], pred)
    with pytest.raises(ConfigError, match="no class probabilities"):
        clf.predict_proba(test)
    clf.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["task"] == "text-regression" and saved["target"]["name"] == "score"
    assert saved["interval"]["halfwidth"] == pytest.approx(interval["halfwidth"])
    assert "RMSE" in (tmp_path / "m" / "README.md").read_text()
    back = load_model(tmp_path / "m")
    np.testing.assert_allclose(back.predict(test), pred, rtol=1e-6)
    assert back.interval_["halfwidth"] == pytest.approx(interval["halfwidth"])
    saved["target"]["std"] = 0
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match="'target'"):
        load_model(tmp_path / "m")


def test_fine_tuning_minimises_squared_error_on_the_standardised_target(tmp_path):
    train, test = reviews(80, 2), reviews(30, 3)
    clf = fit(train, strategy="finetune", epochs=2, head_init="random")
    h = clf.history_
    assert h["metric"] == "rmse" and h["select_by"] == "metric (rmse)" and len(h["epochs"]) == 2
    assert all(e["val_score"] == pytest.approx(-e["val_loss"], rel=1e-4) for e in h["epochs"])
    pred = clf.predict(test)
    assert np.isfinite(pred).all() and clf.interval_ is not None
    clf.save_pretrained(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").predict(test), pred, rtol=1e-5)


def test_bad_targets_and_options_are_refused_and_numeric_classes_suggest_regression():
    df = reviews(30, 4).astype({"score": object})
    df.loc[7, "score"] = "five"
    with pytest.raises(DataError, match=r"row 9: target 'five' is not a number"):
        fit(df)
    with pytest.raises(DataError, match="nothing to learn"):
        fit(reviews(30, 4).assign(score=3.0))
    with pytest.raises(ConfigError, match="select_by 'accuracy'"):
        TextClassifier(backbone="tiny-bert", task="regression", strategy="finetune", select_by="accuracy")
    with pytest.raises(ConfigError, match="coverage"):
        TextClassifier(backbone="tiny-bert", task="regression", coverage=1.5)
    # classification of a continuous number: the error says to use a regression
    with pytest.raises(DataError, match="--task regression"):
        TextClassifier(backbone="tiny-bert", progress=False).fit(reviews(40, 5))


def test_cli_fit_predict_evaluate_regression(tmp_path):
    runner = CliRunner()
    reviews(120, 0).to_csv(tmp_path / "train.csv", index=False)
    reviews(40, 1).to_csv(tmp_path / "test.csv", index=False)
    r = runner.invoke(app, ["fit", str(tmp_path / "train.csv"), "--backbone", "tiny-bert", "--task", "regression",
                            "--label", "score", "--coverage", "0.8", "--out", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    assert {"rmse", "r2", "interval_coverage"} <= set(summary["metrics"]["val"])
    r = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "test.csv"), "--output",
                            str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(tmp_path / "p.csv")
    assert {"pred", "lower", "upper"} <= set(pred.columns) and (pred["lower"] < pred["upper"]).all()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv")])
    assert r.exit_code == 0 and "rmse=" in r.output and "interval: coverage=" in r.output, r.output
    report = (tmp_path / "m" / "report.html").read_text()
    assert "interval coverage" in report and 'alt="Predicted against true target' in report  # the residual plot
    # fairness by a group column: each group's MAE and mean error, from the same predictions
    test = reviews(40, 1).assign(region=["north" if i % 4 else "south" for i in range(40)])
    test.to_csv(tmp_path / "test.csv", index=False)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv"), "--group-col", "region",
                            "--json"])
    assert r.exit_code == 0, r.output
    fair = json.loads(r.output[r.output.index("{"):])["fairness"]
    err = pred["pred"] - test["score"]
    for g in ("north", "south"):
        rows = test["region"] == g
        assert fair["groups"][g]["n"] == rows.sum()
        assert fair["groups"][g]["mae"] == pytest.approx(err[rows].abs().mean(), abs=1e-9)
        assert fair["groups"][g]["mean_error"] == pytest.approx(err[rows].mean(), abs=1e-9)
    assert fair["worst_group"] == max(("north", "south"), key=lambda g: fair["groups"][g]["mae"])
    assert fair["mean_error_gap"] == pytest.approx(abs(err[test["region"] == "north"].mean()
                                                       - err[test["region"] == "south"].mean()), abs=1e-9)
    section = (tmp_path / "m" / "report.html").read_text().split('id="fairness"')[1].split("</section>")[0]
    assert "<th>MAE</th>" in section and "south" in section and 'alt="Quality per group"' in section


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_ensembles_average_their_members_and_keep_thresholds_or_intervals(task, tmp_path):
    from test_multilabel_fit import news

    data, test = (news(60, 0), news(20, 1)) if task == "multilabel" else (reviews(60, 0), reviews(20, 1))
    clf = TextClassifier(backbone="tiny-bert", task=task, strategy="finetune", ensemble=2, epochs=1,
                         progress=False).fit(data)
    assert len(clf.members_) == 2
    ex = clf.read_inputs(test)
    np.testing.assert_allclose(clf.proba(ex), np.mean([clf.member_proba(m, ex) for m in clf.members_], axis=0))
    assert (clf.thresholds_ is not None) == (task == "multilabel") and (clf.interval_ is not None) == (
        task == "regression")
    clf.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert len(back.members_) == 2 and back.predict(test).tolist() == clf.predict(test).tolist()
    if task == "multilabel":
        np.testing.assert_allclose(back.thresholds_, clf.thresholds_)
    else:
        assert back.interval_["halfwidth"] == pytest.approx(clf.interval_["halfwidth"])


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_auto_ranks_candidates_by_the_task_metric_and_keeps_thresholds_or_intervals(task):
    from test_multilabel_fit import news

    data = news(60, 0) if task == "multilabel" else reviews(60, 0)
    clf = TextClassifier(backbone="tiny-bert", task=task, strategy="auto", time_budget="30s", progress=False,
                         epochs=1).fit(data)
    auto = clf.history_["auto"]
    assert auto["metric"] == ("micro_f1" if task == "multilabel" else "rmse")
    ran = [r for r in auto["candidates"] if r.get("status") == "ran"]
    assert ran and not any(r["strategy"] in ("ngram", "stack") for r in auto["candidates"])  # classification only
    if task == "regression":  # (larger is better: minus the RMSE)
        assert all(r["val_score"] < 0 for r in ran) and "lowest validation rmse" in auto["why"]
        assert clf.interval_ is not None
    else:
        assert all(0 <= r["val_score"] <= 1 for r in ran) and clf.thresholds_ is not None
    chosen = next(r for r in ran if r["candidate"] == auto["winner"])
    assert chosen["val_score"] == max(r["val_score"] for r in ran)  # the best by the task's metric


def test_explanations_of_a_regression_model_show_its_largest_and_smallest_errors_and_robustness_its_rmse():
    from fmadapt.evaluate.explain import explain_sample
    from fmadapt.evaluate.robustness import robustness_report

    clf = fit(reviews(80, 0), strategy="finetune", epochs=1)
    test = reviews(20, 1)
    ex = clf.read_labeled(test)
    rob = robustness_report(clf, ex, text_rates=(0.3,))
    assert rob["metric"] == "rmse" and not rob["higher_is_better"] and rob["n"] == 20
    assert rob["clean_accuracy"] == pytest.approx(clf.evaluate(test)["rmse"])
    # dropping 30 % of the words moves the predicted numbers: its RMSE differs from the clean one
    assert rob["text"]["word_drop"]["0.3"] != rob["clean_accuracy"]
    assert robustness_report(clf, ex, text_rates=(0.3,), max_examples=15)["n"] == 15  # (a seeded sample)
    items = explain_sample(clf, ex, n_right=2, n_wrong=3)
    pred = clf.predict(test)
    err = np.abs(pred - test["score"].to_numpy())
    order = list(np.argsort(-err, kind="stable"))
    assert [ex.ids.index(i["id"]) for i in items] == [*order[:3], *order[::-1][:2]]
    half = clf.interval_["halfwidth"]
    for item in items:
        row = ex.ids.index(item["id"])
        assert item["pred"] == pytest.approx(pred[row], abs=1e-5) and item["confidence"] is None
        assert item["correct"] == bool(err[row] <= half) and item["tokens"] and "error" not in item
