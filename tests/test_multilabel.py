"""tasks/multilabel.py: label sets from a separator column or 0/1 columns, thresholds tuned per label,
metrics against scikit-learn's, prediction columns."""

import numpy as np
import pandas as pd
import pytest

from fmadapt.errors import DataError
from fmadapt.tasks.multilabel import (
    decide,
    indicator,
    label_names,
    label_sets_from_columns,
    multilabel_metrics,
    parse_label_sets,
    prediction_columns,
    tune_thresholds,
)


def test_label_sets_from_a_separator_column():
    sets, warnings = parse_label_sets(["earn;acq", " acq ; earn ", "", None, float("nan"), "grain;grain"])
    assert sets == [("acq", "earn"), ("acq", "earn"), (), None, None, ("grain",)]
    assert any("name a label twice" in w for w in warnings)
    assert label_names(sets) == ["acq", "earn", "grain"]
    # single-label data read as multi-label (or the wrong separator) is said
    _, warnings = parse_label_sets(["earn|acq", "grain"], sep=";", source="train.csv")
    assert any("train.csv: no row has more than one label" in w and "--label-sep" in w for w in warnings)
    assert parse_label_sets(["earn|acq"], sep="|")[0] == [("acq", "earn")]
    with pytest.raises(DataError, match="separator"):
        parse_label_sets(["a"], sep="")


def test_label_sets_from_zero_one_columns():
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "sports": [1, 0, "true", None], "politics": [0, 0, "no", 1],
                       "tech": ["1", 0, 1, 0]})
    assert label_sets_from_columns(df, ["sports", "politics", "tech"], "t.csv") == [
        ("sports", "tech"), (), ("sports", "tech"), None]
    df.loc[1, "tech"] = "maybe"
    with pytest.raises(DataError, match=r"t.csv: column 'tech', row 3: 'maybe' is not 0/1"):
        label_sets_from_columns(df, ["sports", "politics", "tech"], "t.csv")
    with pytest.raises(DataError, match="'nope' not found"):
        label_sets_from_columns(df, ["sports", "nope"], "t.csv")
    with pytest.raises(DataError, match="at least two"):
        label_sets_from_columns(df, ["sports"], "t.csv")


def test_indicator_matrix_and_unknown_labels():
    y = indicator([("a", "c"), (), ("b",)], ["a", "b", "c"])
    assert y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]] and y.dtype == np.float32
    with pytest.raises(DataError, match="'z'"):
        indicator([("z",)], ["a"])
    assert indicator([("z", "a")], ["a"], unknown="ignore").tolist() == [[1.0]]


def test_thresholds_are_tuned_per_label_on_validation():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < [0.5, 0.1, 0.0]).astype(np.float32)
    # label 0 is separable at 0.3, label 1 at 0.7; label 2 has no positive example
    proba = np.zeros_like(y)
    proba[:, 0] = np.where(y[:, 0] > 0, rng.uniform(0.31, 0.6, 400), rng.uniform(0.0, 0.29, 400))
    proba[:, 1] = np.where(y[:, 1] > 0, rng.uniform(0.71, 1.0, 400), rng.uniform(0.0, 0.69, 400))
    proba[:, 2] = rng.uniform(0, 1, 400)
    t, notes = tune_thresholds(proba, y)
    assert 0.29 < t[0] <= 0.31 + 1e-9 and 0.69 < t[1] <= 0.71 + 1e-9 and t[2] == 0.5
    assert notes == ["1 label(s) without a positive validation example keep the threshold 0.5"]
    m = multilabel_metrics(y, proba, t, ["a", "b", "c"])
    assert m["per_class"]["a"]["f1"] == 1.0 and m["per_class"]["b"]["f1"] == 1.0
    assert m["micro_f1"] < 1.0  # label c's false positives at 0.5
    assert m["labels_without_positives"] == 1 and m["per_class"]["c"]["average_precision"] is None
    at_half = multilabel_metrics(y, proba, 0.5, ["a", "b", "c"])
    assert at_half["per_class"]["a"]["f1"] < 1.0  # the tuned threshold is what made label a exact


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss

    rng = np.random.default_rng(1)
    y = (rng.random((200, 4)) < 0.3).astype(int)
    proba = np.clip(y * 0.4 + rng.random((200, 4)) * 0.6, 0, 1)
    t = np.array([0.4, 0.5, 0.6, 0.5])
    m = multilabel_metrics(y, proba, t, list("abcd"))
    pred = (proba >= t).astype(int)
    assert m["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["subset_accuracy"] == pytest.approx((pred == y).all(1).mean())
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert m["macro_average_precision"] == pytest.approx(
        np.mean([average_precision_score(y[:, j], proba[:, j]) for j in range(4)]))
    assert [m["per_class"][c]["support"] for c in "abcd"] == y.sum(0).tolist()


def test_prediction_columns():
    proba = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]])
    df = prediction_columns(proba, ["earn", "acq", "grain"], np.array([0.5, 0.5, 0.7]))
    assert df["pred"].tolist() == ["earn", ""]
    assert list(df.columns) == ["pred", "prob_earn", "prob_acq", "prob_grain"]
    assert prediction_columns(proba, ["earn", "acq", "grain"], 0.5, sep="|")["pred"].tolist() == ["earn|grain", ""]
    assert decide(proba, 0.5).dtype == np.int8
