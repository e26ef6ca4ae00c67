import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier
from fmadapt.evaluate.robustness import (
    CORRUPTIONS,
    TEXT_PERTURBATIONS,
    attack,
    corrupt_image,
    perturb_text,
    robustness_report,
    robustness_summary_lines,
    stratified_sample,
)


def _texture(size: int = 64) -> Image.Image:
    """Mid-range values with edges and texture: no corruption saturates it at severity 1."""
    yy, xx = np.mgrid[0:size, 0:size]
    a = (110 + 50 * np.sin(xx / 3.0)[..., None] * np.array([1.0, 0.5, -0.7]) + 30 * np.cos(yy / 5.0)[..., None]
         + np.random.default_rng(0).normal(0, 8, (size, size, 3)))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="RGB")


def _pixels(res) -> np.ndarray:
    if isinstance(res, bytes):
        res = Image.open(io.BytesIO(res)).convert("RGB")
    return np.asarray(res, dtype=np.float64)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("input_size", [32, 224])
def test_corruption_changes_the_image_more_with_each_severity(name, input_size):
    im = _texture()
    clean = _pixels(im)
    dist = [np.abs(_pixels(corrupt_image(im, name, s, np.random.default_rng(1), input_size)) - clean).mean()
            for s in range(1, 6)]
    assert dist[0] > 0.1, dist
    assert all(b > a for a, b in zip(dist, dist[1:], strict=False)), dist


def test_jpeg_corruption_is_real_jpeg_and_corruptions_are_deterministic():
    im = _texture()
    res = corrupt_image(im, "jpeg", 3, np.random.default_rng(0))
    assert isinstance(res, bytes) and res[:2] == b"\xff\xd8"
    for name in CORRUPTIONS:
        a = _pixels(corrupt_image(im, name, 4, np.random.default_rng([7, 1, 0])))
        b = _pixels(corrupt_image(im, name, 4, np.random.default_rng([7, 1, 0])))
        assert np.array_equal(a, b), name
    other = _pixels(corrupt_image(im, "gaussian_noise", 4, np.random.default_rng([8, 1, 0])))
    assert not np.array_equal(other, _pixels(corrupt_image(im, "gaussian_noise", 4, np.random.default_rng([7, 1, 0]))))


WORDS = " ".join(f"word{i}x" for i in range(200))  # 200 distinct lower-case words, no punctuation


@pytest.mark.parametrize("kind", ["typo", "casing", "punctuation"])
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.3])
def test_text_perturbation_changes_the_requested_fraction_of_words(kind, rate):
    out = perturb_text(WORDS, kind, rate, seed=3, index=5)
    before, after = WORDS.split(), out.split()
    assert len(after) == len(before)
    changed = sum(a != b for a, b in zip(before, after, strict=True)) / len(before)
    assert abs(changed - rate) <= 0.01, (kind, rate, changed)
    assert out == perturb_text(WORDS, kind, rate, seed=3, index=5)  # deterministic
    assert out != perturb_text(WORDS, kind, rate, seed=4, index=5)


def test_word_drop_rate_and_nested_rates():
    assert len(perturb_text(WORDS, "word_drop", 0.2).split()) == 160
    lo, hi = perturb_text(WORDS, "casing", 0.1).split(), perturb_text(WORDS, "casing", 0.3).split()
    base = WORDS.split()
    # a higher rate perturbs a superset of the words, with the same edits
    assert all(h == lw for lw, h, b in zip(lo, hi, base, strict=True) if lw != b)


@pytest.mark.parametrize("kind", TEXT_PERTURBATIONS)
def test_text_perturbation_never_empties_a_text(kind):
    for text in ["ok", "a", "这", "!", "two words"]:
        for seed in range(20):
            out = perturb_text(text, kind, 0.99, seed=seed)
            assert out.strip(), (kind, text, seed)
    assert perturb_text("", kind, 0.5) == ""


def test_cjk_text_is_perturbed_per_character():
    text = "这部电影非常好看我很喜欢"  # 12 characters, no spaces
    dropped = perturb_text(text, "word_drop", 0.25, seed=1)
    assert len(dropped) == 9 and all(ch in text for ch in dropped)
    typo = perturb_text(text, "typo", 0.25, seed=1)
    assert typo != text and sum(ch in text for ch in typo) >= 8  # a few characters touched, not the whole text
    assert perturb_text(text, "casing", 0.5) == text  # nothing to change case of
    mixed = perturb_text("iPhone 很好用 really", "word_drop", 0.4, seed=0)
    assert len(mixed.replace(" ", "")) < len("iPhone很好用really")


def test_stratified_sample_keeps_class_proportions():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    idx = stratified_sample(labels, 20, seed=0)
    assert len(idx) == 20 and idx == sorted(set(idx))
    picked = [labels[i] for i in idx]
    assert (picked.count("a"), picked.count("b"), picked.count("c")) == (12, 6, 2)
    assert idx == stratified_sample(labels, 20, seed=0) and idx != stratified_sample(labels, 20, seed=1)
    assert stratified_sample(labels, 500, seed=0) == list(range(100))


@pytest.fixture(scope="module")
def image_clf(tmp_path_factory):
    folder = write_image_folder(tmp_path_factory.mktemp("robust") / "images")
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(folder)
    return clf, clf.read_labeled(folder)


def test_attack_stays_in_the_eps_ball_and_the_valid_range(image_clf):
    clf, _ = image_clf
    model = clf.model_
    x = torch.rand(4, 3, 32, 32) * 2 - 1  # normalised (mean = std = 0.5): valid range [-1, 1]
    y = torch.tensor([0, 1, 2, 0])
    eps = torch.full((1, 3, 1, 1), 8 / 255 / 0.5)
    lo, hi = torch.full((1, 3, 1, 1), -1.0), torch.full((1, 3, 1, 1), 1.0)
    for kind in ("fgsm", "pgd"):
        adv = attack(model, x, y, eps, lo, hi, kind, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps.max() + 1e-6
        assert adv.min() >= -1 - 1e-6 and adv.max() <= 1 + 1e-6
        assert not torch.equal(adv, x)
    a = attack(model, x, y, eps, lo, hi, "pgd", generator=torch.Generator().manual_seed(0))
    b = attack(model, x, y, eps, lo, hi, "pgd", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_image_report(image_clf):
    clf, ex = image_clf
    model = clf.model_
    flags = [p.requires_grad for p in model.parameters()]
    rep = robustness_report(clf, ex, eps_grid=(0.0, 8 / 255), max_examples=12, max_adversarial=12, seed=0)
    json.dumps(rep)
    assert {"modality", "n", "clean_accuracy", "corruptions", "text", "adversarial", "seconds", "params"} <= set(rep)
    assert rep["modality"] == "image" and rep["n"] == 12 and rep["text"] == {}
    assert set(rep["corruptions"]) == set(CORRUPTIONS)
    accs = [a for t in rep["corruptions"].values() for a in t.values()]
    assert len(accs) == 25 and all(0.0 <= a <= 1.0 for a in accs)
    adv = rep["adversarial"]
    assert adv["n"] == 12 and list(adv["fgsm"]) == ["0.0000", "0.0314"] and adv["steps"] > 0
    assert adv["fgsm"]["0.0000"] == adv["clean_accuracy"] == pytest.approx(rep["clean_accuracy"])
    assert rep["clean_accuracy"] >= 0.75  # the colours are easy: the model is worth attacking
    assert adv["fgsm"]["0.0314"] <= adv["clean_accuracy"] and adv["pgd"]["0.0314"] <= adv["clean_accuracy"]
    assert adv["pgd"]["0.0314"] < adv["clean_accuracy"]  # 8/255 breaks a random-feature probe
    # the estimator and its model are left as they were
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert clf.cache is True and clf.progress is False
    lines = robustness_summary_lines(rep)
    assert any(line.startswith("gaussian_noise") for line in lines) and any("pgd" in line for line in lines)
    again = robustness_report(clf, ex, eps_grid=(0.0, 8 / 255), max_examples=12, max_adversarial=4, seed=0,
                              severities=(5,))
    assert again["corruptions"]["contrast"]["5"] == rep["corruptions"]["contrast"]["5"]  # deterministic
    assert again["adversarial"]["n"] == 4 and list(again["corruptions"]["jpeg"]) == ["5"]


def test_text_report(tmp_path):
    path = tmp_path / "reviews.csv"
    text_frame(n_per_class=12).to_csv(path, index=False)
    clf = TextClassifier(backbone="tiny-bert", strategy="probe", progress=False).fit(path)
    ex = clf.read_labeled(path)
    rep = robustness_report(clf, ex, max_examples=10, text_rates=(0.1, 0.3))
    json.dumps(rep)
    assert rep["modality"] == "text" and rep["n"] == 10
    assert rep["corruptions"] == {} and rep["adversarial"] == {}
    assert set(rep["text"]) == set(TEXT_PERTURBATIONS)
    assert all(list(t) == ["0.1", "0.3"] and all(0 <= a <= 1 for a in t.values()) for t in rep["text"].values())
    assert any(line.startswith("word_drop") for line in robustness_summary_lines(rep))


def test_unlabeled_data_is_refused(image_clf):
    from fmadapt.errors import DataError

    clf, ex = image_clf
    with pytest.raises(DataError, match="labeled"):
        robustness_report(clf, ex.subset([]))
