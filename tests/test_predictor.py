"""The fitted model (Predictor) apart from the estimator that fitted it (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import text_frame
from fmadapt import NotFittedError, Predictor, TextClassifier, load_model


def test_embed_is_what_the_head_reads_and_survives_a_reload(tmp_path):
    df = text_frame(12)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, seed=0,
                         calibrate=False).fit(df)
    texts = df["text"].tolist()[:5]
    emb = clf.embed(texts)
    assert emb.shape == (5, clf.model_.backbone.cfg.embed_dim) and emb.dtype == np.float32
    with torch.inference_mode():
        p = torch.softmax(clf.model_.forward_features(torch.from_numpy(emb)), dim=1).numpy()
    np.testing.assert_allclose(p, clf.predict_proba(texts).to_numpy(), atol=1e-5)
    loaded = load_model(clf.save_pretrained(tmp_path / "m", report=False))
    assert isinstance(loaded, Predictor) and not isinstance(loaded, TextClassifier)
    np.testing.assert_allclose(loaded.embed(texts), emb, atol=1e-5)


def test_the_estimator_forwards_the_fitted_model_and_refuses_before_fit():
    clf = TextClassifier(backbone="tiny-bert")
    with pytest.raises(NotFittedError, match="embed"):
        clf.embed(["a text"])
    with pytest.raises(NotFittedError, match="set by fit"):
        clf.temperature_ = 2.0
    assert not hasattr(clf, "classes_")
    clf.fit(text_frame(12))
    fitted = clf.predictor_
    assert clf.classes_ is fitted.classes_ and clf.members_ is fitted.members_
    clf.temperature_ = 3.0  # reaches the model that predicts
    assert fitted.temperature_ == 3.0 and "temperature_" not in vars(clf)
