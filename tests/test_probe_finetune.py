import numpy as np
import pytest
import torch

from conftest import text_frame, write_image_folder
from fmadapt import ConfigError, ImageClassifier, NotFittedError, TextClassifier
from fmadapt.backbones import create_backbone
from fmadapt.config import FitConfig
from fmadapt.data.cache import FeatureCache
from fmadapt.data.images import scan_image_folder
from fmadapt.runtime.features import extract_features


def test_probe_learns_colors(image_folder):
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe").fit(image_folder)
    assert clf.metrics_["val"]["accuracy"] >= 0.85
    rows = clf.history_["candidates"]
    assert clf.history_["C"] in [r["C"] for r in rows] and len(rows) >= 6  # 4 decades + 2 half decades at least


def _reference_lr(clf, tr_inputs, tr_labels, x_eval):
    from sklearn.linear_model import LogisticRegression

    from fmadapt.adapt.headsearch import scale

    x = extract_features(clf.model_.backbone, tr_inputs)
    mu, sd = scale(x, clf.history_["scaling"])  # the scaling that won: per feature, or one for all
    y = [clf.classes_.index(lab) for lab in tr_labels]
    return LogisticRegression(C=1.0, max_iter=2000).fit((x - mu) / sd, y).predict_proba((x_eval - mu) / sd)


def test_probe_head_equals_logistic_regression_on_standardised_features(image_folder):
    """The folded linear head reproduces the sklearn model it was fitted from: once C is chosen, that model
    is refit on training + validation data; the reported validation metrics are the train-only head's."""
    from fmadapt.adapt.probe import _val_evaluator  # noqa: F401  (the selection path taken with one C)
    from fmadapt.data.examples import Examples

    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", probe_c=1.0).fit(image_folder)
    tr, va = clf.splits_["train"], clf.splits_["val"]
    both = Examples(tr.inputs + va.inputs, tr.labels + va.labels, tr.ids + va.ids)
    x_va = extract_features(clf.model_.backbone, va)
    ours = clf.predict_proba(va.inputs).to_numpy()
    assert np.allclose(ours, _reference_lr(clf, both, both.labels, x_va), atol=1e-4)
    assert clf.history_["trained_on"].startswith("training + validation data (36")
    # honest validation figures: from the head that never saw the validation split
    honest = _reference_lr(clf, tr, tr.labels, x_va).argmax(1)
    y_va = np.array([clf.classes_.index(lab) for lab in va.labels])
    assert clf.metrics_["val"]["accuracy"] == pytest.approx(float((honest == y_va).mean()))


def test_probe_without_refit_keeps_the_training_split_fit(image_folder):
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", probe_c=1.0, refit=False).fit(image_folder)
    tr, va = clf.splits_["train"], clf.splits_["val"]
    x_va = extract_features(clf.model_.backbone, va)
    assert np.allclose(clf.predict_proba(va.inputs).to_numpy(), _reference_lr(clf, tr, tr.labels, x_va), atol=1e-4)
    assert clf.history_["trained_on"].startswith("training split")


def test_probe_chooses_c_by_cross_validation_on_small_data(image_folder, tmp_path):
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe").fit(image_folder)
    assert clf.history_["selection"].startswith("5-fold cross-validation")
    assert all(r["folds"] == 5 for r in clf.history_["candidates"])
    assert clf.metrics_["val"]["n"] == len(clf.splits_["val"])
    # a validation set given by the user stays held out: chosen on it, never trained on
    val = write_image_folder(tmp_path / "v", per_class=4, seed=7)
    given = ImageClassifier(backbone="tiny-cnn", strategy="probe").fit(image_folder, val=val)
    assert given.history_["selection"].startswith("validation split (12")
    assert given.history_["trained_on"].startswith("training split (36")


def test_binary_probe(tmp_path):
    folder = write_image_folder(tmp_path / "bin", classes=("red", "blue"))
    clf = ImageClassifier(backbone="tiny-cnn").fit(folder)
    p = clf.predict_proba(folder / "red")
    assert list(p.columns) == ["prob_blue", "prob_red"]
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert (clf.predict(folder / "red") == "red").mean() >= 0.8


def test_feature_cache_hit_skips_the_backbone_and_content_changes_the_key(image_folder, monkeypatch):
    bb = create_backbone("tiny-cnn-cached")
    ex = scan_image_folder(image_folder).splits["train"]
    cache = FeatureCache()
    first = extract_features(bb, ex, cache=cache, runtime="torch")
    calls = []
    monkeypatch.setattr(type(bb), "forward", lambda self, b: calls.append(1) or torch.zeros(len(b), 256))
    again = extract_features(bb, ex, cache=cache, runtime="torch")
    assert calls == [] and np.array_equal(first, again)
    from conftest import make_image

    make_image((0, 0, 0), 99).save(ex.inputs[0])  # same path, new content -> must recompute
    extract_features(bb, ex, cache=cache, runtime="torch")
    assert calls


def test_uncached_backbone_never_writes_the_cache(image_folder, tmp_path):
    import os

    ImageClassifier(backbone="tiny-cnn").fit(image_folder)
    root = FeatureCache().root
    assert not root.exists() or not any(root.rglob("*.npy")), os.listdir(root)


def test_text_features_keep_input_order_despite_length_sorting():
    bb = create_backbone("tiny-bert")
    from fmadapt.data.examples import Examples

    texts = ["a much longer sentence than the others in this list", "short", "medium length one"]
    ex = Examples(inputs=texts, labels=None, ids=["0", "1", "2"], modality="text")
    f = extract_features(bb, ex, batch_size=2)
    with torch.no_grad():
        for i, t in enumerate(texts):
            assert np.allclose(f[i], bb(bb.collator()([t])).numpy()[0], atol=1e-5)


def test_finetune_top_groups_only_changes_top(tmp_path):
    folder = write_image_folder(tmp_path / "ft", per_class=8)
    before = {k: v.clone() for k, v in create_backbone("tiny-cnn").state_dict().items()}
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", unfreeze=1, epochs=2, batch_size=8,
                          lr=1e-2, head_init="random", bn="train").fit(folder)
    bb = clf.model_.backbone
    top_ids = {id(p) for p in bb.layer_groups()[-1].parameters()}
    top_names = {k for k, p in bb.named_parameters() if id(p) in top_ids}
    assert top_names
    after = bb.state_dict()
    changed = {k for k, p in bb.named_parameters() if not torch.equal(before[k], after[k])}
    assert changed and changed <= top_names
    # frozen BatchNorm statistics stay as they were
    frozen_buffers = [k for k in after if "running_mean" in k and k.replace("running_mean", "weight") not in top_names]
    assert frozen_buffers and all(torch.equal(before[k], after[k]) for k in frozen_buffers)
    assert clf.history_["epochs_run"] >= 1 and clf.history_["epochs"]


@pytest.mark.parametrize("select_by,keep", [("accuracy", "best"), ("loss", "best"), ("macro_f1", "best"),
                                             ("loss", "start_or_last"), ("macro_f1", "start_or_last")])
def test_finetune_text_restores_best_epoch(select_by, keep):
    df = text_frame(16)
    metric = {"metric": "macro_f1", "select_by": "metric"} if select_by == "macro_f1" else {"select_by": select_by}
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=3, batch_size=8, lr=1e-3,
                         head_lr=1e-2, keep=keep, **metric).fit(df)
    h = clf.history_
    points = [{"val_loss": h["initial_val_loss"], "val_acc": h["initial_val_acc"],
               **({"val_score": h["initial_val_score"]} if "initial_val_score" in h else {})}] + h["epochs"]
    score = "val_score" if select_by == "macro_f1" else "val_acc"
    keys = [(p[score], -p["val_loss"]) if select_by != "loss" else (-p["val_loss"],) for p in points]
    if keep == "best":
        kept = keys.index(max(keys))  # the first best point
    else:  # the whole schedule ran; the last epoch unless the start is strictly better
        assert h["epochs_run"] == 3
        kept = 0 if keys[0] > keys[-1] else len(keys) - 1
    assert h["best_epoch"] == kept - 1
    assert h["select_by"] == (select_by if select_by != "macro_f1" else "metric (macro_f1)")
    assert h["lr_chosen_by"] == "given (lr)"
    assert h["epochs_chosen_by"].startswith("at most 3 (epochs, given)" if keep == "best" else "3 (epochs, given)")
    assert ("(patience, the default)" in h["epochs_chosen_by"]) == (keep == "best")
    assert f"keep, {'the default' if keep == FitConfig.keep else 'given'}" in h["epochs_chosen_by"]
    # the restored weights are the best point's (an epoch, or the probe start): re-evaluating gives its figures
    va = clf.splits_["val"]
    p = clf.predict_proba(va.inputs).to_numpy()
    y = np.array([clf.classes_.index(lab) for lab in va.labels])
    nll = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    assert nll == pytest.approx(points[kept]["val_loss"], abs=1e-3)
    assert (p.argmax(1) == y).mean() == pytest.approx(points[kept]["val_acc"], abs=1e-6)
    if select_by == "macro_f1":  # every epoch's macro-F1 was logged, over the whole validation split
        from sklearn.metrics import f1_score

        assert all("val_score" in e for e in h["epochs"])
        assert f1_score(y, p.argmax(1), average="macro") == pytest.approx(points[kept]["val_score"], abs=1e-6)


def test_epoch_selection_prefers_accuracy_over_a_lower_loss():
    from fmadapt.train.selection import best_epoch_kept as _best_epoch

    # THUCNews 3,000 with new tokens: the probe start has the lowest loss, fine-tuning the best accuracy
    start = {"val_loss": 1.33, "val_acc": 0.58}
    epochs = [{"val_loss": 2.17, "val_acc": 0.615}, {"val_loss": 1.44, "val_acc": 0.75},
              {"val_loss": 1.50, "val_acc": 0.75}, {"val_loss": 1.58, "val_acc": 0.732}]
    assert _best_epoch(epochs, start, "accuracy") == 1  # ties on accuracy: the lower loss
    assert _best_epoch(epochs, start, "loss") == -1
    assert _best_epoch(epochs, None, "loss") == 1
    # start_or_last: the last epoch unless the start is strictly better; a tie goes to the last
    assert _best_epoch(epochs, start, "accuracy", "start_or_last") == 3
    assert _best_epoch(epochs, start, "loss", "start_or_last") == -1
    assert _best_epoch(epochs, {"val_loss": 1.58, "val_acc": 0.732}, "accuracy", "start_or_last") == 3
    assert _best_epoch(epochs, None, "loss", "start_or_last") == 3


def test_restore_best_start_or_last_restores_the_start_or_the_last_weights():
    """The callback itself: the last validated epoch's weights unless the start is strictly better."""
    from types import SimpleNamespace

    from fmadapt.train.selection import RestoreBest

    def trainer(epoch, acc, loss=1.0):
        return SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                               callback_metrics={"val_acc": torch.tensor(acc), "val_loss": torch.tensor(loss)})

    for start_acc, expect in [(0.9, 0.0), (0.7, 3.0), (0.6, 3.0)]:  # epoch k sets the weight to k + 1
        net = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(net.weight, 0.0)
        cb = RestoreBest("accuracy", keep="start_or_last")
        cb.seed({"val_acc": start_acc, "val_loss": 1.0}, net)
        for epoch, acc in enumerate([0.8, 0.75, 0.7]):  # the last epoch is not the best one
            torch.nn.init.constant_(net.weight, float(epoch + 1))
            cb.on_validation_end(trainer(epoch, acc), net)
            assert cb.best_epoch == -1  # nothing chosen before training ends
        torch.nn.init.constant_(net.weight, 99.0)  # (trained past the last validation: not kept)
        cb.on_fit_end(trainer(2, 0.0), net)
        assert net.weight.item() == expect and cb.best_epoch == (-1 if expect == 0.0 else 2)
    with pytest.raises(ValueError, match="keep"):
        RestoreBest(keep="first")
    with pytest.raises(ConfigError, match="keep"):
        TextClassifier(keep="first")


def test_bad_options_fail_before_data_loading():
    with pytest.raises(ConfigError, match="epochs"):
        ImageClassifier(epochs=0)
    with pytest.raises(ConfigError, match="unknown strategy"):
        ImageClassifier(backbone="tiny-cnn", strategy="magic").fit("/nonexistent")


def test_unfitted_use_is_a_clear_error(image_folder):
    with pytest.raises(NotFittedError, match="fit"):
        ImageClassifier().predict(image_folder)


def test_modality_mismatch(image_folder):
    with pytest.raises(Exception, match="text backbone"):
        ImageClassifier(backbone="tiny-bert").fit(image_folder)


def test_cached_activations_train_the_same_model_as_the_uncached_path(tmp_path):
    folder = write_image_folder(tmp_path / "c", per_class=10)
    kw = dict(backbone="tiny-cnn", strategy="finetune", unfreeze=2, epochs=2, batch_size=8, lr=1e-2,
              augment=False, num_workers=0)
    cached = ImageClassifier(cache_activations="on", **kw).fit(folder)
    plain = ImageClassifier(cache_activations="off", **kw).fit(folder)
    assert cached.history_["cached_activations"] and not plain.history_["cached_activations"]
    assert len(cached.history_["epoch_seconds"]) == cached.history_["epochs_run"]
    a = cached.predict_proba(folder).to_numpy()
    b = plain.predict_proba(folder).to_numpy()
    assert np.allclose(a, b, atol=1e-4)
    sa, sb = cached.model_.state_dict(), plain.model_.state_dict()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-4) for k in sa)


def test_cached_activations_auto_keeps_image_augmentation(tmp_path):
    folder = write_image_folder(tmp_path / "a", per_class=6)
    options = {"backbone": "tiny-cnn", "strategy": "finetune", "unfreeze": 1, "epochs": 1, "batch_size": 4}
    clf = ImageClassifier(augment=True, **options).fit(folder)
    assert not clf.history_["cached_activations"] and clf.history_["augmentation"] == "crop+flip"
    # the default (no augmentation, issue 21) lets a partial fine-tune train on cached activations
    clf = ImageClassifier(**options).fit(folder)
    assert clf.config_.augment is None
    assert clf.history_["cached_activations"] and clf.history_["augmentation"] == "none"
    # a policy beyond the basic one asks for augmentation
    clf = ImageClassifier(augment_policy="flip", **options).fit(folder)
    assert not clf.history_["cached_activations"] and clf.history_["augmentation"] == "flip"


def test_text_partial_finetune_uses_cached_activations(tmp_path):
    df = text_frame(16)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", unfreeze=1, epochs=2, batch_size=8,
                         lr=1e-3, head_lr=1e-2, head_init="random").fit(df)
    h = clf.history_
    assert h["cached_activations"] and h["epochs_run"] == 2
    # the trained top layer changed, the embeddings did not
    fresh = create_backbone("tiny-bert").state_dict()
    now = clf.model_.backbone.state_dict()
    emb, top = "model.embeddings.word_embeddings.weight", "model.encoder.layer.1.output.dense.weight"
    assert torch.equal(fresh[emb], now[emb]) and not torch.equal(fresh[top], now[top])
    out = clf.save_pretrained(tmp_path / "m")
    from fmadapt import load_model

    texts = df["text"].tolist()
    assert np.array_equal(load_model(out).predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy())


def test_finetuned_packaged_backbone_is_never_served_by_the_pretrained_export_or_cache(image_folder):
    """Regression: a fine-tuned backbone whose config still named the pretrained checksum was run with the
    ONNX export (and could hit the feature cache) of the original weights."""
    probe = ImageClassifier(backbone="tiny-cnn-cached").fit(image_folder)  # exports + caches pretrained
    ft = ImageClassifier(backbone="tiny-cnn-cached", strategy="finetune", epochs=1, batch_size=8, lr=5e-2,
                         augment=False, head_init="random").fit(image_folder)
    assert ft.model_.backbone.cfg.sha256 == "" and ft.model_.backbone.cfg.extra["initial_sha256"]
    auto = ft.predict_proba(image_folder).to_numpy()
    ft.config_.runtime = "torch"
    torch_p = ft.predict_proba(image_folder).to_numpy()
    # (ONNX Runtime and eager PyTorch differ by ~1e-4 in fp32 on a probability near 0.86)
    assert np.allclose(auto, torch_p, atol=5e-4)
    assert not np.allclose(auto, probe.predict_proba(image_folder).to_numpy(), atol=1e-2)


def test_finetuning_that_only_hurts_keeps_the_probe_start(tmp_path):
    folder = write_image_folder(tmp_path / "h", per_class=8)
    # the fine-tuning start is the probe fitted on the training split (validation data stays held out)
    probe = ImageClassifier(backbone="tiny-cnn", refit=False).fit(folder)
    # weight decay of ~100 % per step wipes the weights out every step: no epoch can beat the probe start
    wrecked = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=2, batch_size=8, lr=0.9,
                              head_lr=0.9, weight_decay=1.1, augment=False).fit(folder)
    assert wrecked.history_["best_epoch"] == -1
    assert np.allclose(wrecked.predict_proba(folder).to_numpy(), probe.predict_proba(folder).to_numpy(), atol=1e-4)


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_batchnorm_statistics_frozen_by_default(tmp_path, bn):
    folder = write_image_folder(tmp_path / "b", per_class=8)
    before = create_backbone("tiny-cnn").state_dict()
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, batch_size=8, bn=bn,
                          head_init="random").fit(folder)
    after = clf.model_.backbone.state_dict()
    stats = [k for k in after if k.endswith("running_mean")]
    unchanged = all(torch.equal(before[k], after[k]) for k in stats)
    assert unchanged == (bn == "frozen")


def test_bf16_mixed_precision_fine_tunes_and_keeps_fp32_weights():
    df = text_frame(16)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=2, batch_size=8, lr=1e-3,
                         head_lr=1e-2, precision="bf16-mixed", restore_best=False).fit(df)
    weights = list(clf.model_.state_dict().values())
    assert all(t.dtype == torch.float32 for t in weights if t.is_floating_point())
    ref = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=2, batch_size=8, lr=1e-3,
                         head_lr=1e-2, restore_best=False).fit(df)
    # autocast really ran in bf16: the same seeded run in fp32 ends at other weights
    assert any(not torch.equal(a, b) for a, b in zip(weights, ref.model_.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="precision"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", precision="8-bit").fit(df)


def test_image_fine_tuning_runs_channels_last_and_saves_contiguous(tmp_path, monkeypatch):
    from fmadapt.train import module as module_mod

    root = write_image_folder(tmp_path / "imgs", per_class=6)
    seen = []
    step = module_mod.ClassifierModule.training_step

    def spy(self, batch, i):
        seen.append((batch[0].is_contiguous(memory_format=torch.channels_last),
                     next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
                     .weight.is_contiguous(memory_format=torch.channels_last)))
        return step(self, batch, i)

    monkeypatch.setattr(module_mod.ClassifierModule, "training_step", spy)
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, batch_size=4, augment=False,
                          cache_activations="off").fit(str(root))
    assert seen and all(a and b for a, b in seen)  # NHWC batches and weights while training
    convs = [m.weight for m in clf.model_.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous() for w in convs)  # back to the default layout after training
    out = clf.save_pretrained(tmp_path / "m")
    assert (out / "model.safetensors").exists()


def test_refit_full_retrains_on_all_labels_for_the_chosen_epochs():
    df = text_frame(16)
    opts = dict(backbone="tiny-bert", strategy="finetune", epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2,
                head_init="random", seed=0)
    first = TextClassifier(**opts).fit(df)
    full = TextClassifier(**opts, refit_full=True).fit(df)
    r = full.history_["refit_full"]
    assert r["selection_best_epoch"] == first.history_["best_epoch"] >= 0
    assert full.history_["epochs_run"] == r["selection_best_epoch"] + 1  # retrained for the chosen epochs
    assert full.data_summary_["sizes"]["train"] == first.data_summary_["sizes"]["train"]  # the split is reported
    # validation figures are the first run's (it never saw the validation split), not the refit model's
    assert full.metrics_["val"]["accuracy"] == pytest.approx(first.metrics_["val"]["accuracy"])
    assert full.refit_on_val_
    assert not torch.equal(first.model_.head.weight, full.model_.head.weight)


def test_refit_full_keeps_the_probe_c_chosen_on_the_clean_split(monkeypatch):
    from fmadapt.adapt import probe as probe_mod

    seen = []
    fit = probe_mod.Probe.fit

    def spy(self, model, train, val, cfg, ctx):
        out = fit(self, model, train, val, cfg, ctx)
        seen.append((cfg.probe_c, out["C"]))
        return out

    monkeypatch.setattr(probe_mod.Probe, "fit", spy)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2,
                         seed=0, refit_full=True, keep="best").fit(text_frame(16))  # (an epoch beats the start)
    if clf.history_["refit_full"]["selection_best_epoch"] < 0:
        pytest.skip("no epoch beat the probe start with this seed: nothing was retrained")
    (first_pin, first_c), (refit_pin, refit_c) = seen
    assert first_pin is None and refit_pin == first_c == refit_c
