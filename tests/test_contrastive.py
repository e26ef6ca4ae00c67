import numpy as np
import torch

from conftest import text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier, load_model
from fmadapt.adapt.contrastive import make_pairs


def test_pairs_give_every_example_a_same_and_an_other_class_partner():
    y = np.array([0, 0, 0, 1, 1, 2])
    pairs = make_pairs(y, iterations=3, seed=0)
    assert len(pairs) == 3 * 2 * len(y)
    for i in range(len(y)):
        mine = [(j, t) for a, j, t in pairs if a == i]
        pos = [j for j, t in mine if t == 1.0]
        neg = [j for j, t in mine if t == 0.0]
        assert len(pos) == len(neg) == 3
        assert all(y[j] == y[i] and (j != i or (y == y[i]).sum() == 1) for j in pos)
        assert all(y[j] != y[i] for j in neg)
    assert make_pairs(y, 3, seed=0) == pairs and make_pairs(y, 3, seed=1) != pairs
    # a class of one: its positive partner is itself (cosine 1, nothing else to pull towards)
    assert all(j == 5 for a, j, t in pairs if a == 5 and t == 1.0)


def test_contrastive_text_trains_the_body_on_pairs_then_a_probe_head(tmp_path):
    df = text_frame(20)
    clf = TextClassifier(backbone="tiny-bert", text_col="text", label_col="label", strategy="contrastive",
                         pair_iterations=4, lr=1e-3, batch_size=16).fit(df)
    h = clf.history_
    n_all = len(clf.splits_["train"]) + len(clf.splits_["val"])
    # the final body learnt from every labeled example (after a first run on the training split alone)
    assert h["pairs"] == 4 * 2 * n_all and h["steps"] == -(-h["pairs"] // 16)
    assert h["body_trained_on"].startswith("training + validation data")
    assert h["pair_loss_last"] < h["pair_loss_first"]  # the cosine loss is learnt
    assert h["C"] in {r["C"] for r in h["candidates"]}  # the head is the best of its search
    from fmadapt.backbones import create_backbone

    before = create_backbone("tiny-bert").model.encoder.layer[0].attention.self.query.weight
    after = clf.model_.backbone.model.encoder.layer[0].attention.self.query.weight
    assert not torch.allclose(before, after)
    assert clf.metrics_["val"]["accuracy"] >= 0.8
    out = clf.save_pretrained(tmp_path / "m")
    again = load_model(out)
    texts = df["text"].tolist()[:10]
    assert np.allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(), atol=1e-5)


def test_contrastive_images_without_refit_trains_on_the_training_split(tmp_path):
    folder = write_image_folder(tmp_path / "im", per_class=6)
    clf = ImageClassifier(backbone="tiny-cnn", strategy="contrastive", pair_iterations=2, batch_size=8,
                          augment=False, refit=False).fit(folder)
    assert clf.history_["pairs"] == 2 * 2 * len(clf.splits_["train"])
    assert clf.history_["body_trained_on"].startswith("training split")
    assert clf.trains_backbone_
