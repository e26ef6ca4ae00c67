import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from conftest import text_frame
from fmadapt import ImageClassifier, TextClassifier, load_model
from fmadapt.adapt.labelprior import LabelPrior, OffsetLogReg, class_sentences, fit_strength
from fmadapt.adapt.probe import _fit_lr, _set_head
from fmadapt.errors import ConfigError


def _blobs(n_per: int = 30, k: int = 3, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (k, d))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (n_per, d)) for c in range(k)])
    return x, np.repeat(np.arange(k), n_per)


def test_offset_regression_without_offset_is_sklearns_multinomial_logistic_regression():
    x, y = _blobs()
    for c in (0.1, 10.0):
        ours = OffsetLogReg(c, 3).fit(x, y, np.zeros((len(y), 3)))
        ref = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(x, y)
        assert np.allclose(ours.proba(x, np.zeros((len(y), 3))), ref.predict_proba(x), atol=1e-3)


def test_offset_shifts_the_logits_and_sample_weights_count():
    x, y = _blobs()
    off = np.zeros((len(y), 3))
    off[:, 2] = 50.0  # a huge fixed push towards class 2: the bias must compensate for it
    m = OffsetLogReg(1.0, 3).fit(x, y, off)
    assert (m.proba(x, off).argmax(1) == y).mean() > 0.9
    assert m.intercept_[2] - m.intercept_[:2].mean() < -30
    # weights: class 0 weighted 100x pulls more predictions to it than unweighted
    w = np.where(y == 0, 100.0, 1.0)
    plain = OffsetLogReg(0.01, 3).fit(x, y, np.zeros_like(off)).proba(x, np.zeros_like(off))
    heavy = OffsetLogReg(0.01, 3).fit(x, y, np.zeros_like(off), w).proba(x, np.zeros_like(off))
    assert (heavy.argmax(1) == 0).sum() > (plain.argmax(1) == 0).sum()


def test_prior_strength_is_large_when_the_names_agree_with_the_labels_and_near_zero_when_not():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    agree = np.stack([np.where(y == 0, 0.3, 0.1), np.where(y == 1, 0.3, 0.1)], 1) + rng.normal(0, 0.05, (200, 2))
    assert fit_strength(agree, y) > 20
    assert fit_strength(rng.normal(0, 0.1, (200, 2)), y) < 2
    assert 0 <= fit_strength(-agree, y) < 0.01  # names that point the wrong way are switched off, never reversed


def test_probe_head_with_a_prior_folds_into_one_linear_layer():
    x, y = _blobs(d=6)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(3, 6))
    prior = LabelPrior(emb / np.linalg.norm(emb, axis=1, keepdims=True), x, "a {}")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    head = _fit_lr((x - mu) / sd, y, 0.1, 0, False, prior.logits(x))
    assert head.strength > 0
    from types import SimpleNamespace

    from fmadapt.model import Classifier

    body = torch.nn.Module()
    body.cfg = SimpleNamespace(embed_dim=6)  # (only the head is used: features are given)
    model = Classifier(body, 3)
    _set_head(model, head, mu, sd, 3, prior)
    with torch.no_grad():
        folded = torch.softmax(model.head(torch.as_tensor(x, dtype=torch.float32)), 1).numpy()
    assert np.allclose(folded, head.proba((x - mu) / sd, prior.logits(x), 3), atol=1e-4)


def test_class_sentences_fill_the_template_and_refuse_numeric_classes():
    assert class_sentences(["positive", "sci_tech"], "This sentence is {}.") == [
        "This sentence is positive.", "This sentence is sci tech."]
    with pytest.raises(ConfigError, match="numbers.*0 -> negative"):
        class_sentences(["0", "1"], "This sentence is {}.")


def test_label_template_checks_fail_before_any_feature_is_computed(monkeypatch):
    with pytest.raises(ConfigError, match="exactly once"):
        TextClassifier(backbone="tiny-bert", label_template="no placeholder")
    with pytest.raises(ConfigError, match="for texts"):
        ImageClassifier(backbone="tiny-cnn", label_template="a photo of {}")
    df = text_frame(6).assign(label=lambda d: (d["label"] == "pos").astype(int))
    import fmadapt.adapt.probe as probe_module

    def no_features(*a, **k):
        raise AssertionError("features were computed before the class names were checked")

    monkeypatch.setattr(probe_module, "extract_features", no_features)
    with pytest.raises(ConfigError, match="numbers"):
        TextClassifier(backbone="tiny-bert", text_col="text", label_col="label",
                       label_template="It was {}.").fit(df)


def test_probe_with_a_label_template_reports_the_prior_and_reloads_identically(tmp_path):
    df = text_frame(12)
    clf = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label",
                         label_template="The film was {}.").fit(df)
    lp = clf.history_["label_prior"]
    assert lp["template"] == "The film was {}." and lp["strength"] >= 0 and 0 <= lp["zero_shot_acc"] <= 1
    assert lp["on"] == f"{len(df)} labeled examples"
    again = load_model(clf.save_pretrained(tmp_path / "m"))
    assert again.config_.label_template == "The film was {}."
    texts = df["text"].tolist()[:8]
    assert np.allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(), atol=1e-5)
    # without the refit, C is chosen on the validation split: the prior goes that way too
    held = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label", refit=False,
                          label_template="The film was {}.").fit(df)
    assert held.history_["selection"].startswith("validation split") and "label_prior" in held.history_


def test_contrastive_adds_the_class_sentences_to_its_pairs():
    df = text_frame(10)
    clf = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label", strategy="contrastive",
                         pair_iterations=2, batch_size=16, label_template="The film was {}.").fit(df)
    h = clf.history_
    n_all = len(clf.splits_["train"]) + len(clf.splits_["val"])
    assert h["pairs"] == 2 * 2 * (n_all + 2 * 2)  # two copies of each of the two class sentences
    assert "label_prior" in h


@pytest.mark.slow
def test_class_names_lift_a_few_shot_probe_with_the_packaged_minilm():
    """Two labels per class; the names say what the classes are: the prior must help, not hurt."""
    sport = ["The striker scored twice in the cup final.", "The team won the league after a late goal.",
             "She set a new world record in the 100 metres.", "The coach praised his players after the match.",
             "The tennis champion lost in the first round.", "Fans cheered as the marathon runners finished.",
             "The goalkeeper saved a penalty in extra time.", "The boxer retained his heavyweight title."]
    food = ["Simmer the onions in butter until golden.", "This soup needs more salt and fresh basil.",
            "Bake the bread at 220 degrees for forty minutes.", "Whisk the eggs with sugar until pale.",
            "The chef served grilled fish with lemon sauce.", "Add garlic and chopped tomatoes to the pan.",
            "Knead the dough and let it rise overnight.", "Roast the vegetables with olive oil and thyme."]
    train = pd.DataFrame({"text": sport[:2] + food[:2], "label": ["sport"] * 2 + ["cooking"] * 2})
    test = sport[2:] + food[2:]
    truth = ["sport"] * 6 + ["cooking"] * 6
    accs = {}
    for tpl in (None, "This text is about {}."):
        clf = TextClassifier(text_col="text", label_col="label", label_template=tpl).fit(train, val=train)
        accs[tpl] = float(np.mean(np.asarray(clf.predict(test)) == np.asarray(truth)))
        if tpl:
            assert clf.history_["label_prior"]["strength"] > 1
    assert accs["This text is about {}."] == 1.0
    assert accs["This text is about {}."] >= accs[None]
