"""tta: image predictions average the image's and its mirror image's probabilities; saved with the model."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import text_frame
from fmadapt import ConfigError, ImageClassifier, TextClassifier, load_model


def _mirror(folder, out):
    for p in sorted(folder.rglob("*.png")):
        q = out / p.relative_to(folder)
        q.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.mirror(Image.open(p)).save(q)
    return out


@pytest.mark.parametrize("strategy,extra", [
    # features cached: mirror images must not be served plain ones. (refit=False: a head refit on the validation
    # split leaves no held-out figure to compare with and without tta)
    ("probe", {"backbone": "tiny-cnn-cached", "refit": False}),
    ("finetune", {"backbone": "tiny-cnn", "epochs": 1, "batch_size": 8, "augment": False}),
])
def test_tta_averages_image_and_mirror_image(image_folder, tmp_path, strategy, extra):
    clf = ImageClassifier(strategy=strategy, tta=True, calibrate=False, **extra).fit(image_folder)
    both = clf.predict_proba(str(image_folder)).to_numpy()
    mirrored = _mirror(image_folder, tmp_path / "mirrored")
    members = clf.members_  # (each member predicts with its own options: the same model without tta)
    clf.members_ = [m.with_config(tta=False) for m in members]
    try:
        plain = clf.predict_proba(str(image_folder)).to_numpy()
        mirror = clf.predict_proba(str(mirrored)).to_numpy()
    finally:
        clf.members_ = members
    assert not np.allclose(plain, mirror, atol=1e-4)  # the noisy images are not symmetric
    np.testing.assert_allclose(both, (plain + mirror) / 2, atol=2e-4)
    h = clf.history_["tta"]
    assert h["val_accuracy"] == clf.metrics_["val"]["accuracy"] and 0 <= h["val_accuracy_without"] <= 1
    again = load_model(clf.save_pretrained(tmp_path / "model", report=False))
    assert again.config_.tta is True
    np.testing.assert_allclose(again.predict_proba(str(image_folder)).to_numpy(), both, atol=2e-4)


def test_tta_is_refused_for_texts():
    with pytest.raises(ConfigError, match="mirror"):
        TextClassifier(backbone="tiny-bert", tta=True).fit(text_frame(8))
