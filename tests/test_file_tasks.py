"""Several labels per file and a number per file (issue 27 for sounds, and images): a table listing the files with
a label column takes `--task multilabel` or `--task regression` as a text table does; class folders stay single-label
and say so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_image
from fmadapt import AudioClassifier, ImageClassifier, load_model
from fmadapt.errors import DataError

sf = pytest.importorskip("soundfile")
pytest.importorskip("openwakeword", reason="the audio extra (openwakeword==0.4.0) is not installed")

from test_audio import RATE, tone  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """clips/*.wav: a low tone, a high tone or both (labels), and single tones of known pitch (a number)."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        low, high = [(True, False), (False, True), (True, True)][i % 3]
        w = np.zeros(RATE, np.float32)
        w += tone(300 * rng.uniform(0.9, 1.1), 1.0, seed=i) if low else 0
        w += tone(2500 * rng.uniform(0.9, 1.1), 1.0, seed=i + 99) if high else 0
        sf.write(str(root / f"mix{i}.wav"), w, RATE)
        pitch = float(np.exp(rng.uniform(np.log(200), np.log(3000))))
        sf.write(str(root / f"pitch{i}.wav"), tone(pitch, 1.0, seed=i), RATE)
        rows.append({"path": f"mix{i}.wav", "labels": ";".join(n for n, on in (("low", low), ("high", high)) if on),
                     "low": int(low), "high": int(high), "pitch_path": f"pitch{i}.wav", "log_pitch": np.log(pitch)})
    pd.DataFrame(rows).to_csv(root / "clips.csv", index=False)
    return root


def test_sounds_with_several_labels_each_from_a_table(clips, tmp_path):
    from fmadapt.compress.export import export_model

    table = clips / "clips.csv"
    clf = AudioClassifier(task="multilabel", label_col="labels").fit(table)
    assert clf.classes_ == ["high", "low"]
    truth = pd.read_csv(table)
    pred = list(clf.predict(table))
    assert np.mean([set(p.split(";")) == set(t.split(";")) for p, t in zip(pred, truth["labels"], strict=True)]) > 0.9
    out = clf.save_pretrained(tmp_path / "m", report=False)
    assert "multilabel" in json.loads((out / "config.json").read_text())["task"]
    np.testing.assert_allclose(load_model(out).predict_proba(table).to_numpy(), clf.predict_proba(table).to_numpy(),
                               atol=1e-5)
    meta = export_model(out, tmp_path / "x", data=table)  # (the graph ends in one sigmoid per label)
    assert meta["task"] == "multilabel" and meta["parity"]["fp32"]["end_to_end"]["same_labels_at_0.5"] == 1.0
    # the same labels as 0/1 columns, one per label
    cols = AudioClassifier(task="multilabel", label_col="low,high").fit(table)
    assert sorted(cols.classes_) == ["high", "low"]


def test_a_number_per_sound_from_a_table(clips):
    table = pd.read_csv(clips / "clips.csv")[["pitch_path", "log_pitch"]].rename(columns={"pitch_path": "path"})
    table["path"] = [str(clips / p) for p in table["path"]]
    reg = AudioClassifier(task="regression", label_col="log_pitch").fit(table)
    got = np.asarray(reg.predict(table), dtype=float)
    assert np.corrcoef(got, table["log_pitch"])[0, 1] > 0.8  # (the pitch is in the embedding)
    assert reg.interval_halfwidth() is not None


def test_images_with_several_labels_and_numbers_from_a_table(tmp_path):
    rows = []
    for i in range(30):
        color = ["red", "green", "blue"][i % 3]
        make_image({"red": (220, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 220)}[color], i).save(
            tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "tags": color + (";bright" if i % 2 else ""), "score": float(i % 3)})
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    ml = ImageClassifier(backbone="tiny-cnn", task="multilabel", label_col="tags", progress=False).fit(
        tmp_path / "images.csv")
    assert ml.classes_ == ["blue", "bright", "green", "red"]
    assert set(ml.predict_table(tmp_path / "images.csv").columns) >= {"pred", "prob_red", "prob_bright"}
    reg = ImageClassifier(backbone="tiny-cnn", task="regression", label_col="score", progress=False).fit(
        tmp_path / "images.csv")
    assert np.isfinite(np.asarray(reg.predict(tmp_path / "images.csv"), dtype=float)).all()
    # robustness of both: image corruptions scored by micro-F1 / RMSE, no attacks
    from fmadapt.evaluate.robustness import robustness_report

    for model, metric in ((ml, "micro_f1"), (reg, "rmse")):
        rob = robustness_report(model, model.read_labeled(tmp_path / "images.csv"), severities=(1, 5))
        assert rob["metric"] == metric and rob["adversarial"] == {} and "single-label" in rob["note"]
        assert set(rob["corruptions"]) >= {"gaussian_noise", "contrast"} and rob["n"] == 30
        assert all(np.isfinite(v).all() for c in rob["corruptions"].values() for v in c.values())


def test_class_folders_are_single_label_and_say_what_to_give_instead(tmp_path):
    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "photos", per_class=2)
    with pytest.raises(DataError, match="task regression reads a table listing the files"):
        ImageClassifier(backbone="tiny-cnn", task="regression", progress=False).fit(root)
