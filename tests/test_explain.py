"""Attributions (Captum) for images and texts: completeness, locality, word merging, sampling, safe files."""

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier
from fmadapt.backbones import create_backbone
from fmadapt.data.examples import Examples
from fmadapt.evaluate.explain import (
    attribute_image,
    attribute_tokens,
    explain_inputs,
    explain_sample,
    image_baseline,
    save_explanations,
    word_scores,
)
from fmadapt.evaluate.explain_tasks import pick_right_wrong
from fmadapt.model import Classifier


@pytest.fixture(scope="module")
def image_clf(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("explain") / "images", per_class=6)
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", probe_c=1.0, cache=False, progress=False)
    return clf.fit(root), root


@pytest.fixture(scope="module")
def text_clf(tmp_path_factory):
    p = tmp_path_factory.mktemp("explain_text") / "reviews.csv"
    text_frame(8).to_csv(p, index=False)
    clf = TextClassifier(backbone="tiny-bert", strategy="probe", probe_c=1.0, cache=False, progress=False)
    return clf.fit(p), p


def _png(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert im.format == "PNG"
    return im


def test_ig_completeness_and_state_restored(image_clf):
    from fmadapt.data.images import load_image

    clf, root = image_clf
    model, bb = clf.model_, clf.model_.backbone
    x = bb.preprocessor(train=False)(load_image(sorted(root.rglob("*.png"))[0])).unsqueeze(0)  # (1,3,32,32)
    base = image_baseline(x, bb.cfg.mean, bb.cfg.std, "black")
    m, sd = torch.tensor(bb.cfg.mean), torch.tensor(bb.cfg.std)
    assert torch.allclose(base[0, :, 5, 7], -m / sd)  # pixel value 0 in normalised space, not tensor zeros
    with torch.no_grad():
        logits_x, logits_b = model(x)[0], model(base)[0]
    target = int(logits_x.argmax())
    diff = float(logits_x[target] - logits_b[target])
    assert abs(diff) > 0.1
    model.train()
    model.backbone.model.conv_stem.eval()  # a frozen part a strategy left in eval must stay so
    try:
        with torch.inference_mode():  # a caller's inference mode does not stop the attribution
            res = attribute_image(model, x, target, baseline=base, n_steps=32)
        assert model.training and model.dropout.training and not model.backbone.model.conv_stem.training
    finally:
        model.eval()
    # completeness: the attributions add up to f(x) - f(baseline) for the target logit
    assert res.delta is not None and res.delta < 0.02 * abs(diff)
    assert float(res.attr.sum()) == pytest.approx(diff, rel=0.02)
    assert res.attr.shape == (3, 32, 32) and res.heatmap.shape == (32, 32)
    assert res.heatmap.min() >= 0.0 and res.heatmap.max() == 1.0
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated on the weights


def test_saliency_nonzero_and_overlay_png(image_clf):
    clf, root = image_clf
    paths = sorted(str(p) for p in root.rglob("*.png"))[:2]
    ex = clf.read_inputs(paths)
    for method, limit in (("saliency", 5), ("ig", 1)):
        items = explain_inputs(clf, ex, method=method, limit=limit, n_steps=8)
        assert len(items) == min(limit, 2) and json.dumps(items)
        it = items[0]
        assert it["kind"] == "image" and it["method"] == method and it["correct"] is None
        assert it["pred"] in clf.classes_ and 0 < it["confidence"] <= 1
        assert _png(it["image_png"]).size == (32, 32)  # the model's input size, after resize/crop
        assert max(_png(it["original_png"]).size) <= 128
        hm = np.array(it["heatmap"])
        assert hm.shape == (16, 16) and hm.max() > 0  # differs from zeros
        assert (it["delta"] is None) == (method == "saliency")


class _LeftHalf(nn.Module):
    """Logits depend on the left half of the image only (a conv + ReLU, so gradients vary by pixel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))[..., : x.shape[-1] // 2 - 2]  # (B,4,H,W/2-2): away from the border
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("method", ["ig", "saliency"])
def test_heatmap_mass_where_the_model_looks(method):
    x = torch.randn(1, 3, 32, 32)
    res = attribute_image(_LeftHalf(), x, 1, method=method)
    left = res.heatmap[:, :16].sum() / res.heatmap.sum()
    assert left > 0.95
    assert np.abs(res.attr[..., 17:]).sum() == 0  # the raw attribution is exactly zero on the right


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from fmadapt.backbones.packaged import minilm_l6_path

    return AutoTokenizer.from_pretrained(str(minilm_l6_path()))


class _OneWord(nn.Module):
    """Every token's embedding is zero except one word's, so only that word can move the logits."""

    def __init__(self, vocab: int, key: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(vocab, 8), nn.Linear(8, 2)
        with torch.no_grad():
            keep = self.emb.weight[key].clone()
            self.emb.weight.zero_()
            self.emb.weight[key] = keep

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(batch["input_ids"]).sum(1)))  # (B,T,8) -> (B,2)


def test_only_the_word_that_matters_gets_the_top_score():
    tok = _minilm_tokenizer()
    text = "The film was superb and unbelievably, strangely longwinded"
    key = tok.convert_tokens_to_ids("superb")
    model = _OneWord(tok.vocab_size, key)
    enc = tok([text], return_tensors="pt")
    ids = enc["input_ids"]
    special = torch.tensor([t in tok.all_special_ids for t in ids[0].tolist()])
    target = int(model(dict(enc)).argmax())
    scores, delta = attribute_tokens(model, model.emb, dict(enc), target, special, tok.pad_token_id)
    base = torch.where(special, ids[0], tok.pad_token_id)[None]
    with torch.no_grad():
        diff = float(model(dict(enc))[0, target] - model({**enc, "input_ids": base})[0, target])
    assert scores.shape == (ids.shape[1],) and delta < 0.05 * abs(diff)
    assert float(scores.sum()) == pytest.approx(diff, rel=0.05)
    words = word_scores(text, tok, ids[0].tolist(), scores, 64)
    assert [w for w, _ in words] == ["The", "film", "was", "superb", "and", "unbelievably", ",", "strangely",
                                     "longwinded"]  # wordpieces merged, [CLS]/[SEP] gone, original casing
    top = max(words, key=lambda w: abs(w[1]))
    assert top[0] == "superb" and abs(top[1]) == 1.0
    assert all(s == 0.0 for w, s in words if w != "superb")
    # without offsets (slow-tokenizer path), "##" pieces are glued back
    slow = SimpleNamespace(is_fast=False, all_special_ids=tok.all_special_ids,
                           convert_ids_to_tokens=tok.convert_ids_to_tokens)
    assert "longwinded" in [w for w, _ in word_scores(text, slow, ids[0].tolist(), scores, 64)]


def test_text_tokens_from_fitted_and_lora_models(text_clf):
    from fmadapt.adapt.lora import add_lora

    clf, _ = text_clf
    texts = ["the film was wonderful and lovely, truly superb", "Dreadful pacing; horribly dull."]
    ex = clf.read_inputs(texts)
    bb = create_backbone("tiny-bert")
    add_lora(bb, {"r": 2, "alpha": 4, "dropout": 0.0, "targets": ["query", "value"]})
    lora = Classifier(bb, 2)
    stub = SimpleNamespace(model_=lora, classes_=["neg", "pos"], members_=[SimpleNamespace(model=lora)],
                           config_=SimpleNamespace(task="classification"),
                           proba=lambda e: np.tile([[0.3, 0.7]], (len(e), 1)), encoded_table=lambda e: None,
                           check_fitted=lambda: None)
    for c in (clf, stub):
        items = explain_inputs(c, ex, method="saliency", n_steps=8)  # texts always use Layer IG
        assert json.dumps(items) and [it["method"] for it in items] == ["ig", "ig"]
        for it, text in zip(items, texts, strict=True):
            words = [w for w, _ in it["tokens"]]
            assert "".join(words) == text.replace(" ", "")  # the words of the input, in order
            assert not {"[CLS]", "[SEP]", "[PAD]"} & set(words)
            scores = [s for _, s in it["tokens"]]
            assert all(-1 <= s <= 1 for s in scores) and max(map(abs, scores)) == 1.0
            assert it["kind"] == "text" and it["image_png"] is None and np.isfinite(it["delta"])


def test_pick_right_wrong_order_and_counts():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3], [0.99, 0.01], [0.35, 0.65]])
    y = np.array([1, 1, 1, 0, 0, 0, 1])  # wrong: 0 (0.9), 1 (0.6), 3 (0.55)
    assert pick_right_wrong(proba, y, n_right=0, n_wrong=2) == [0, 1]
    rows = pick_right_wrong(proba, y, n_right=3, n_wrong=10)
    assert rows[:3] == [0, 1, 3] and rows[3:] == [5, 4, 6]  # correct 5 .99, 2 .8, 4 .7, 6 .65: spread, ends kept
    assert len(pick_right_wrong(proba, y, n_right=2, n_wrong=0)) == 2


def test_explain_sample_wrong_first(image_clf):
    clf, root = image_clf
    ex = clf.read_labeled(root)
    pred = clf.proba(ex).argmax(1)
    labels = [clf.classes_[p] for p in pred]
    for i in range(3):  # make exactly three predictions wrong, whatever the tiny model learned
        labels[i] = clf.classes_[(pred[i] + 1) % len(clf.classes_)]
    ex = Examples(ex.inputs, labels, ex.ids, modality="image")
    items = explain_sample(clf, ex, n_right=2, n_wrong=5, method="saliency")
    assert [it["correct"] for it in items] == [False, False, False, True, True]
    conf = [it["confidence"] for it in items[:3]]
    assert conf == sorted(conf, reverse=True)
    assert all(it["label"] != it["pred"] for it in items[:3])
    assert len(explain_sample(clf, ex, n_right=1, n_wrong=1, method="saliency")) == 2


def test_save_explanations_safe_names(tmp_path, image_clf):
    clf, root = image_clf
    path = str(sorted(root.rglob("*.png"))[0])
    items = explain_inputs(clf, clf.read_inputs([path]), method="saliency")
    items[0]["id"] = "../../etc/passwd"
    items.append({**items[0], "id": ".hidden/..", "image_png": None})
    out = tmp_path / "out"
    written = save_explanations(items, out)
    assert [p.name for p in written] == ["000_etc_passwd.png", "explanations.json"]
    assert all(p.resolve().parent == out.resolve() for p in written)
    assert _png(base64.b64encode(written[0].read_bytes()).decode()).size == (32, 32)
    rows = json.loads(written[-1].read_text())
    assert rows[0]["file"] == "000_etc_passwd.png" and "image_png" not in rows[0] and "file" not in rows[1]
