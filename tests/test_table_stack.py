"""Table columns stacked late (`table_head` "stack" / "auto"): boosted trees over the text head's outputs and the
encoded table columns, carried as tensors (no pickle) that must agree with scikit-learn, kept when they beat the
linear head on validation, saved, loaded and predicted like any model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from fmadapt import TextClassifier, load_model
from fmadapt.errors import ConfigError, DataError
from fmadapt.runtime.trees import TreeStack


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.mark.parametrize("kind", ["binary", "three", "regression"])
def test_trees_as_tensors_agree_with_scikit_learn(kind):
    rng = np.random.default_rng(0)
    k = {"regression": 1, "binary": 2, "three": 3}[kind]  # the text head's outputs come first, then 3 table columns

    def inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
        text = rng.normal(size=(n, k))
        return text, np.concatenate([text if kind == "regression" else log_softmax(text),
                                     rng.normal(size=(n, 3))], axis=1)

    _, x = inputs(300)
    if kind == "regression":
        gbm = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, x[:, 0] * (x[:, k] > 0))
    else:
        y = (x[:, 0] > x[:, 1]).astype(int) + (x[:, k] > 0.5 if kind == "three" else 0)
        gbm = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    stack = TreeStack.from_sklearn(gbm)
    text, new = inputs(50)
    np.testing.assert_allclose(stack.raw(torch.from_numpy(new)).numpy(),
                               np.asarray(gbm._raw_predict(new)).reshape(50, -1), atol=1e-9)
    # the model's logits from the text head's outputs and the table: what scikit-learn predicts
    table = torch.from_numpy(new[:, k:])
    np.testing.assert_allclose(stack.inputs(torch.from_numpy(text), table).numpy(), new, atol=1e-9)
    logits = stack.logits(torch.from_numpy(text), table).double()
    if kind == "regression":
        np.testing.assert_allclose(logits[:, 0].numpy(), gbm.predict(new), atol=1e-5)
    else:
        np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), gbm.predict_proba(new), atol=1e-5)


def interactions(n: int, seed: int) -> pd.DataFrame:
    """The label is an interaction of two table columns (department XOR older than 44), which no linear term
    in the head can express; the text says nothing."""
    rng = np.random.default_rng(seed)
    dept = rng.choice(["dresses", "tops"], n)
    age = rng.integers(18, 70, n).astype(float)
    label = np.where((dept == "tops") ^ (age > 44), "yes", "no")
    return pd.DataFrame({"text": [f"review {i} of the item" for i in rng.integers(0, 10**6, n)], "age": age,
                         "dept": dept, "label": label, "score": np.where(age > 44, 4.0, 2.0) + (dept == "tops")})


def test_the_stack_wins_where_the_table_interacts_and_saves_as_tensors(tmp_path):
    train, test = interactions(400, 0), interactions(100, 1)
    linear = TextClassifier(backbone="tiny-bert", features="age,dept", table_head="linear", progress=False).fit(
        train.drop(columns=["score"]))
    auto = TextClassifier(backbone="tiny-bert", features="age,dept", progress=False).fit(
        train.drop(columns=["score"]))
    choice = auto.history_["table_head"]
    assert choice["kept"] == "stack" and choice["val_accuracy"] > choice["linear head over text and table"]
    assert "table_head" not in linear.history_ and linear.members_[0].model.stack is None
    model = auto.members_[0].model
    assert model.stack is not None and model.table_head is None
    assert auto.evaluate(test)["accuracy"] > 0.9 > linear.evaluate(test)["accuracy"]
    out = auto.save_pretrained(tmp_path / "m")
    assert any(k.startswith("stack.") for k in load_file(out / "model.safetensors"))
    assert "table_features" in json.loads((out / "config.json").read_text())
    back = load_model(out)
    np.testing.assert_allclose(back.predict_proba(test).to_numpy(), auto.predict_proba(test).to_numpy(), atol=1e-6)
    with pytest.raises(DataError, match="reads table columns"):
        back.predict(["a text alone"])


def test_a_regression_stack_when_asked_and_its_intervals():
    train, test = interactions(300, 2), interactions(80, 3)
    clf = TextClassifier(backbone="tiny-bert", task="regression", label_col="score", features="age,dept",
                         table_head="stack", progress=False).fit(train.drop(columns=["label"]))
    h = clf.history_["table_head"]
    assert h["kept"] == "stack" and h["chosen_by"] == "given (table_head stack)" and "val_rmse_std" in h
    assert clf.members_[0].model.stack is not None
    assert clf.evaluate(test)["r2"] > 0.9
    table = clf.predict_table(test)
    assert (table["lower"] <= table["pred"]).all() and (table["pred"] <= table["upper"]).all()


def test_table_head_options_are_checked():
    with pytest.raises(ConfigError, match="give them"):
        TextClassifier(backbone="tiny-bert", table_head="stack")
    with pytest.raises(ConfigError, match="a probe's head"):
        TextClassifier(backbone="tiny-bert", features="auto", table_head="stack", strategy="finetune")
    with pytest.raises(ConfigError, match="multi-label"):
        TextClassifier(backbone="tiny-bert", features="auto", table_head="stack", task="multilabel")


@pytest.mark.integration
def test_loading_a_stacked_model_imports_no_training_code(tmp_path):
    from test_load_imports import predict_in_a_fresh_process

    train, test = interactions(200, 4), interactions(20, 5)
    clf = TextClassifier(backbone="tiny-bert", features="age,dept", table_head="stack", progress=False).fit(
        train.drop(columns=["score"]))
    out = clf.save_pretrained(tmp_path / "m", report=False)
    test.drop(columns=["label", "score"]).to_csv(tmp_path / "new.csv", index=False)
    pred, loaded = predict_in_a_fresh_process(out, str(tmp_path / "new.csv"))
    assert pred == [str(p) for p in clf.predict(test)] and loaded == [], loaded


def test_stacked_trees_that_point_outside_themselves_are_refused(tmp_path):
    from safetensors.torch import save_file

    from fmadapt.errors import ArtifactError

    train = interactions(120, 8)
    clf = TextClassifier(backbone="tiny-bert", features="age,dept", table_head="stack", progress=False).fit(
        train.drop(columns=["score"]))
    out = clf.save_pretrained(tmp_path / "m", report=False)
    good = load_file(out / "model.safetensors")
    for key, value in (("stack.left", 10**6), ("stack.feature", 10**6), ("stack.output", 7)):
        bad = dict(good)
        t = bad[key].clone()
        if key == "stack.output":
            t[0] = value
        else:
            t[~bad["stack.leaf"]] = value
        bad[key] = t
        save_file(bad, out / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(ArtifactError, match="stacked trees (read column|point at)"):
            load_model(out)


def test_a_class_the_trees_never_saw_is_never_predicted():
    """Trees fitted on classes 0 and 2 of a 3-class model: their scores go to those classes, class 1 gets -1e4."""
    rng = np.random.default_rng(1)
    text = rng.normal(size=(200, 3))
    x = np.concatenate([log_softmax(text), rng.normal(size=(200, 2))], axis=1)
    y = np.where(x[:, 3] > 0, 2, 0)
    gbm = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    stack = TreeStack.from_sklearn(gbm)
    assert stack.classes.tolist() == [0, 2]
    logits = stack.logits(torch.from_numpy(text), torch.from_numpy(x[:, 3:])).double()
    assert logits.shape == (200, 3) and bool((logits[:, 1] == -1e4).all())
    np.testing.assert_allclose(torch.softmax(logits, 1)[:, [0, 2]].numpy(), gbm.predict_proba(x), atol=1e-5)


def test_trees_that_cannot_be_fitted_leave_the_linear_head_with_a_warning(monkeypatch):
    import fmadapt.adapt.tablestack as tablestack

    def broken(*a, **k):
        raise ValueError("only one class in a fold")

    monkeypatch.setattr(tablestack, "stack_candidate", broken)
    with pytest.warns(UserWarning, match="no stacked trees.*only one class"):
        clf = TextClassifier(backbone="tiny-bert", features="age,dept", progress=False).fit(
            interactions(120, 9).drop(columns=["score"]))
    assert clf.history_["table_head"]["kept"] == "linear" and clf.members_[0].model.table_head is not None


def test_explanations_of_a_stacked_model_attribute_the_text_heads_score():
    from fmadapt.evaluate.explain import explain_inputs

    clf = TextClassifier(backbone="tiny-bert", features="age,dept", table_head="stack", progress=False).fit(
        interactions(120, 10).drop(columns=["score"]))
    ex = clf.read_inputs(interactions(5, 11).drop(columns=["label", "score"]))
    items = explain_inputs(clf, ex, limit=2, n_steps=4)
    assert all("error" not in it and it["tokens"] for it in items)
    assert all("text head's score" in it["note"] for it in items)
