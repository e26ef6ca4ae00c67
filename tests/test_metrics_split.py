import numpy as np
import pytest
from sklearn.metrics import f1_score

from fmadapt.data.examples import Examples
from fmadapt.data.split import stratified_split
from fmadapt.evaluate.metrics import classification_metrics, expected_calibration_error, format_metrics


def test_ece_by_hand():
    # two bins used: conf 0.9 (acc 1/2) and conf 0.6 (acc 1/2) -> 0.5*0.4 + 0.5*0.1
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def test_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx((p.argmax(1) == y).mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert np.array(m["confusion_matrix"]).sum() == 50
    assert sum(v["support"] for v in m["per_class"].values()) == 50
    assert "macro_f1" in format_metrics(m)


def _ex(labels):
    ids = [str(i) for i in range(len(labels))]
    return Examples(inputs=ids, labels=labels, ids=ids)


def test_split_is_seeded_and_stratified():
    ex = _ex(["a"] * 30 + ["b"] * 10)
    tr1, va1 = stratified_split(ex, 0.2, seed=1)
    tr2, va2 = stratified_split(ex, 0.2, seed=1)
    _, va3 = stratified_split(ex, 0.2, seed=2)
    assert va1.inputs == va2.inputs and va1.inputs != va3.inputs
    assert va1.labels.count("a") == 6 and va1.labels.count("b") == 2
    assert not set(tr1.inputs) & set(va1.inputs) and len(tr1) + len(va1) == 40


def test_split_keeps_every_class_on_both_sides():
    tr, va = stratified_split(_ex(["a"] * 20 + ["b", "b"] + ["c", "c"]), 0.1, seed=0)
    assert set(tr.labels) == set(va.labels) == {"a", "b", "c"}


def test_label_indices_is_the_one_label_map():
    from fmadapt import ImageClassifier, NotFittedError
    from fmadapt.data.examples import label_indices

    classes = ["ant", "bee", "wasp"]
    y = label_indices(classes, ["wasp", "ant", "bee", "ant"])
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1, 0]
    assert label_indices(classes, None).shape == (0,)
    with pytest.raises(KeyError):
        label_indices(classes, ["ant", "moth"])
    assert label_indices(classes, ["moth", "bee"], unknown=-1).tolist() == [-1, 1]
    clf = ImageClassifier()
    with pytest.raises(NotFittedError):
        clf.encode_labels(["ant"])
    from fmadapt import FitConfig
    from fmadapt.predictor import Predictor

    fitted = Predictor("image", classes, FitConfig())  # (as the fit pipeline makes it, before any training)
    assert fitted.encode_labels(["bee", "moth"], unknown=-1).tolist() == [1, -1]
    with pytest.raises(NotFittedError):
        fitted.predict(["a.png"])


def test_a_small_validation_split_is_warned_about_with_its_size():
    from fmadapt.data.split import SMALL_VALIDATION, data_summary

    def ex(n):
        return Examples(inputs=["t"] * n, labels=["a", "b"] * (n // 2), ids=[str(i) for i in range(n)])

    small = data_summary({"train": ex(80), "val": ex(20)}, split_made=True)["warnings"]
    assert len(small) == 1 and "holds 20 examples" in small[0] and "5.0 points" in small[0]
    assert data_summary({"train": ex(400), "val": ex(SMALL_VALIDATION)}, split_made=True)["warnings"] == []
    assert data_summary({"train": ex(80), "val": ex(0)}, split_made=True)["warnings"] == []  # (none to choose on)
