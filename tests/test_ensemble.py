"""--ensemble K / ensemble_backbones: members trained, probabilities averaged, one directory reloads as one."""

import json

import numpy as np
import pytest

from conftest import text_frame
from fmadapt import ConfigError, ImageClassifier, TextClassifier, load_model


def test_seed_ensemble_averages_member_probabilities_and_reloads_as_one(tmp_path):
    df = text_frame(12)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", ensemble=2, epochs=1, batch_size=8,
                         lr=1e-3, head_init="random").fit(df)
    assert len(clf.members_) == 2 and [m.config.seed for m in clf.members_] == [0, 1]
    texts = ["truly wonderful", "dull and boring", "ok"]
    ex = clf.read_inputs(texts)
    each = [clf.member_proba(m, ex) for m in clf.members_]
    assert not np.allclose(each[0], each[1])  # different seeds, different models
    np.testing.assert_allclose(clf.predict_proba(texts).to_numpy(), (each[0] + each[1]) / 2, atol=1e-6)
    out = clf.save_pretrained(tmp_path / "ens")
    cfg = json.loads((out / "config.json").read_text())
    assert [m["dir"] for m in cfg["ensemble"]] == ["members/0", "members/1"]
    assert (out / "members" / "1" / "model.safetensors").is_file() and not (out / "model.safetensors").exists()
    again = load_model(out)
    np.testing.assert_allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(), atol=1e-6)
    assert again.evaluate(df)["n"] == len(df)


def test_backbone_ensemble_of_probes(image_folder):
    clf = ImageClassifier(ensemble_backbones="tiny-cnn,tiny-cnn-cached").fit(image_folder)
    assert [m.config.backbone for m in clf.members_] == ["tiny-cnn", "tiny-cnn-cached"]
    assert clf.metrics_["val"]["accuracy"] >= 0.8
    assert [e["backbone"] for e in clf.history_["ensemble"]] == ["tiny-cnn", "tiny-cnn-cached"]


def test_seed_ensemble_of_a_probe_is_refused(image_folder):
    with pytest.raises(ConfigError, match="deterministic"):
        ImageClassifier(backbone="tiny-cnn", ensemble=3).fit(image_folder)


def test_member_directory_outside_the_model_is_refused(tmp_path, image_folder):
    from fmadapt import ArtifactError

    clf = ImageClassifier(ensemble_backbones="tiny-cnn,tiny-cnn-cached").fit(image_folder)
    out = clf.save_pretrained(tmp_path / "ens")
    cfg = json.loads((out / "config.json").read_text())
    cfg["ensemble"][1]["dir"] = "../../elsewhere"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="outside"):
        load_model(out)
