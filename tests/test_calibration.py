import json

import numpy as np
import pytest

from conftest import text_frame
from fmadapt import TextClassifier, load_model
from fmadapt.errors import ArtifactError
from fmadapt.evaluate.calibration import (
    apply_temperature,
    brier_score,
    calibrate,
    fit_temperature,
    nll,
    reliability_bins,
)
from fmadapt.evaluate.metrics import expected_calibration_error


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n=4000, t_true=2.5, seed=0):
    """Labels drawn from softmax(z / t_true) while the model reports softmax(z): overconfident by t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 4))
    p_true = _softmax(z / t_true)
    y = np.array([rng.choice(4, p=p) for p in p_true])
    return _softmax(z), y


def test_temperature_recovers_the_true_scale_and_lowers_ece():
    proba, y = _overconfident()
    t = fit_temperature(proba, y)
    assert t == pytest.approx(2.5, rel=0.1)
    after = apply_temperature(proba, t)
    assert expected_calibration_error(after, y) < 0.5 * expected_calibration_error(proba, y)
    assert nll(after, y) < nll(proba, y)
    assert brier_score(after, y) < brier_score(proba, y)


def test_temperature_never_changes_the_predicted_class():
    proba, _ = _overconfident(n=500)
    for t in (0.3, 1.0, 4.0):
        after = apply_temperature(proba, t)
        assert np.array_equal(after.argmax(1), proba.argmax(1))
        assert np.allclose(after.sum(1), 1.0)
    assert apply_temperature(proba, 1.0) is proba


def test_brier_and_reliability_bins_by_hand():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 1, 1])
    # (0.1^2 + 0.1^2) + (0.6^2 + 0.6^2) + (0.2^2 + 0.2^2), over 3
    assert brier_score(proba, y) == pytest.approx((0.02 + 0.72 + 0.08) / 3)
    bins = reliability_bins(proba, y, n_bins=10)
    assert sum(bins["count"]) == 3
    assert bins["confidence"] == pytest.approx([0.6, 0.8, 0.9])
    assert bins["accuracy"] == [0.0, 1.0, 1.0]


def test_too_few_examples_leave_the_probabilities_alone():
    proba, y = _overconfident(n=10)
    rep = calibrate(proba, y, "validation split")
    assert rep["temperature"] == 1.0 and not rep["fitted"] and "needs >= 20" in rep["note"]
    json.dumps(rep)


def test_fit_calibrates_saves_and_predict_applies_the_temperature(tmp_path):
    df = text_frame(60, seed=1)  # 24 validation rows: enough to fit a temperature
    clf = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label", strategy="probe").fit(df)
    t = clf.temperature_
    assert clf.calibration_["fitted"] and t == clf.calibration_["temperature"] and t != 1.0
    raw = clf.proba(clf.splits_["val"], calibrated=False)
    got = clf.predict_proba(clf.splits_["val"].inputs).to_numpy()
    assert np.allclose(got, apply_temperature(raw, t), atol=1e-5)
    out = clf.save_pretrained(tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["calibration"]["temperature"] == t
    assert "after" in json.loads((out / "metrics.json").read_text())["calibration"]
    again = load_model(out)
    assert again.temperature_ == t
    # evaluate on held-out data reports the temperature's effect there: "before" undoes it exactly
    ev = again.evaluate(df)
    raw_all = again.proba(again.read_labeled(df), calibrated=False)
    y = np.array([again.classes_.index(lab) for lab in df["label"]])
    from fmadapt.evaluate.calibration import calibration_measures

    assert ev["calibration"]["before"] == pytest.approx(calibration_measures(raw_all, y), abs=1e-5)
    assert ev["calibration"]["after"]["ece"] == pytest.approx(ev["ece"], abs=1e-6)
    assert np.allclose(again.predict_proba(df["text"].tolist()).to_numpy(),
                       clf.predict_proba(df["text"].tolist()).to_numpy(), atol=1e-5)
    off = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label", calibrate=False).fit(df)
    assert off.temperature_ == 1.0


def test_a_bad_stored_temperature_is_refused(tmp_path):
    clf = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label").fit(text_frame(30))
    out = clf.save_pretrained(tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    cfg["calibration"]["temperature"] = -1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="temperature"):
        load_model(out)
