"""Optimization options and the finetune variants (l2sp, progressive), class imbalance."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image
from fmadapt import ConfigError, ImageClassifier
from fmadapt.adapt.finetune import build_trainer, layer_lr_scale
from fmadapt.adapt.imbalance import imbalance
from fmadapt.backbones import create_backbone
from fmadapt.config import FitConfig
from fmadapt.member import Member
from fmadapt.model import Classifier
from fmadapt.train.module import ClassifierModule
from fmadapt.train.schedules import constant, inverse_time, make_schedule, one_cycle, warmup_cosine


def test_inverse_time_decay_is_a0_over_1_plus_beta_t():
    f = inverse_time(110, 10, beta=0.05)
    assert f(0) < f(9) < 1.0  # linear warmup
    for t in (0, 1, 7, 50, 99):
        assert f(10 + t) == pytest.approx(1.0 / (1.0 + 0.05 * t))
    assert inverse_time(100, 0)(100) == pytest.approx(0.1)  # default beta: a0/10 at the end


def test_one_cycle_constant_and_cosine_shapes():
    oc = one_cycle(100, 0)
    assert oc(0) == pytest.approx(1 / 25)
    assert max(oc(s) for s in range(100)) == pytest.approx(1.0)
    assert oc(99) == pytest.approx(1 / (25 * 1e4))
    assert [constant(100, 10)(s) for s in (10, 50, 99)] == [1.0, 1.0, 1.0]
    cos = warmup_cosine(100, 10)
    after = [cos(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False)) and after[-1] < 0.01
    assert make_schedule("inverse_time", 50, 0, 0.5)(4) == pytest.approx(1 / 3)


def _module(layer_decay=1.0, **kw):
    bb = create_backbone("tiny-cnn")
    model = Classifier(bb, 3)
    bb.freeze(trainable_top=-1)
    args = dict(lr=1e-3, head_lr=1e-2, weight_decay=0.01, warmup_frac=0.0, total_steps=10,
                lr_scale=layer_lr_scale(bb, layer_decay))
    args.update(kw)
    return bb, model, ClassifierModule(model, **args)


def test_layer_decay_gives_each_group_its_own_rate_top_group_fastest():
    bb, model, module = _module(layer_decay=0.5)
    groups = bb.layer_groups()
    body = [g for g in module.param_groups() if g["name"] != "head"]
    assert len(body) == len(groups)
    assert sorted(g["lr"] for g in body) == pytest.approx(sorted(1e-3 * 0.5 ** k for k in range(len(groups))))
    # every trainable parameter exactly once
    ids = [id(p) for g in module.param_groups() for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    # bottom-group parameters get the smallest rate
    bottom = {id(p) for p in groups[0].parameters()}
    low = min(body, key=lambda g: g["lr"])
    assert {id(p) for p in low["params"]} == bottom
    assert layer_lr_scale(bb, 1.0) == {}


def test_sgd_with_momentum_and_schedule_are_used():
    _, _, module = _module(optimizer="sgd", momentum=0.8, schedule="inverse_time", decay_beta=1.0)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"]
    lrs = [g["lr"] for g in opt.param_groups]
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 2 for lr in lrs])  # a0/(1+1*1)


def test_label_smoothing_class_weights_and_clipping_reach_loss_and_trainer():
    w = torch.tensor([1.0, 2.0, 3.0])
    _, _, module = _module(label_smoothing=0.2, class_weights=w)
    assert module.loss_fn.label_smoothing == 0.2 and torch.equal(module.loss_fn.weight, w)
    trainer = build_trainer(FitConfig(grad_clip=0.5, epochs=1), [], progress=False)
    assert trainer.gradient_clip_val == 0.5


def test_l2sp_penalty_is_zero_at_the_start_and_grows_with_distance():
    _, model, module = _module(l2sp=2.0)
    assert float(module.l2sp_penalty()) == 0.0
    p = next(q for q in model.backbone.parameters() if q.requires_grad)
    with torch.no_grad():
        p.add_(0.1)
    assert float(module.l2sp_penalty()) == pytest.approx(0.5 * 2.0 * 0.01 * p.numel(), rel=1e-4)
    body_groups = [g for g in module.param_groups() if g["name"] != "head"]
    assert all(g["weight_decay"] == 0.0 for g in body_groups)  # L2-SP replaces decay toward zero


def _drift(clf, ref):
    cur = clf.model_.backbone.state_dict()
    return sum(float((cur[k].float() - v.float()).pow(2).sum()) for k, v in ref.items() if v.is_floating_point())


def test_l2sp_strategy_keeps_the_backbone_closer_to_pretrained(image_folder):
    ref = {k: v.clone() for k, v in create_backbone("tiny-cnn").state_dict().items()}
    kw = dict(backbone="tiny-cnn", epochs=2, batch_size=8, lr=5e-2, head_init="random", augment=False, seed=0)
    plain = ImageClassifier(strategy="finetune", **kw).fit(image_folder)
    pulled = ImageClassifier(strategy="l2sp", l2sp=50.0, **kw).fit(image_folder)
    assert _drift(pulled, ref) < 0.5 * _drift(plain, ref)
    assert pulled.trains_backbone_


def test_progressive_unfreezes_one_more_group_per_epoch_top_first(image_folder):
    bb0 = create_backbone("tiny-cnn")
    groups0 = bb0.layer_groups()
    ref = [{k: v.clone() for k, v in g.state_dict().items()} for g in groups0]
    clf = ImageClassifier(backbone="tiny-cnn", strategy="progressive", unfreeze=3, epochs=2, batch_size=8,
                          lr=5e-2, patience=5, augment=False, head_init="random").fit(image_folder)
    assert clf.history_["unfrozen_groups_per_epoch"] == [1, 2]
    groups = clf.model_.backbone.layer_groups()

    def changed(i):
        return any(not torch.equal(v, ref[i][k]) for k, v in groups[i].state_dict().items()
                   if v.is_floating_point())

    assert changed(len(groups) - 1) and changed(len(groups) - 2)  # trained in epoch 1 / 2
    assert not changed(len(groups) - 3)  # allowed (unfreeze=3) but its epoch never came
    assert not any(changed(i) for i in range(len(groups) - 3))


def test_imbalance_weights_are_balanced_and_only_past_the_ratio():
    cfg = FitConfig()
    info = imbalance([0] * 40 + [1] * 10 + [2] * 10, 4, cfg)
    assert info["ratio"] == 4.0 and info["weighted"]
    w = np.array(info["weights"])
    assert w[3] == 0.0  # absent class
    assert np.allclose(w[:3] * np.array([40, 10, 10]), 60 / 3)  # each present class weighs the same in total
    assert not imbalance([0] * 20 + [1] * 10, 2, cfg)["weighted"]
    assert imbalance([0] * 20 + [1] * 10, 2, FitConfig(class_weight="balanced"))["weighted"]
    assert not imbalance([0] * 40 + [1] * 2, 2, FitConfig(class_weight="none"))["weighted"]


def test_imbalanced_folder_is_weighted_and_reported(tmp_path):
    from conftest import COLORS

    for ci, (c, n) in enumerate((("red", 30), ("green", 5), ("blue", 5))):
        d = tmp_path / "imb" / c
        d.mkdir(parents=True)
        for i in range(n):
            make_image(COLORS[c], ci * 100 + i).save(d / f"{i}.png")
    probe = ImageClassifier(backbone="tiny-cnn", metric="balanced_accuracy").fit(tmp_path / "imb")
    imb = probe.history_["imbalance"]
    assert imb["ratio"] == 6.0 and "competed" in imb["chosen_by"] and probe.history_["metric"] == "balanced_accuracy"
    rows = probe.history_["candidates"]
    assert {r["class_weight"] for r in rows} == {"none", "balanced"}
    assert all("val_balanced_accuracy" in r for r in rows)
    assert probe.metrics_["val"]["balanced_accuracy"] >= 0.0
    # fine-tuning's loss keeps the weighting its starting probe chose (forced here both ways)
    for cw, weighted in (("balanced", True), ("none", False)):
        ft = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, batch_size=8,
                             class_weight=cw).fit(tmp_path / "imb")
        assert ft.history_["imbalance"]["weighted"] is weighted


@pytest.mark.parametrize("bad", [dict(optimizer="adam"), dict(schedule="step"), dict(layer_decay=0.0),
                                 dict(label_smoothing=1.0), dict(grad_clip=0.0), dict(class_weight="yes"),
                                 dict(l2sp=-1.0), dict(momentum=1.0)])
def test_bad_optimization_options_are_refused(bad):
    with pytest.raises(ConfigError):
        FitConfig(**bad)


def test_text_noise_is_seeded_light_and_never_empties_a_text():
    import random

    from fmadapt.data.textnoise import TextNoise

    text = "the quick brown fox jumps over the lazy dog near the river bank"
    assert TextNoise(0.0)(text) == text
    noisy = [TextNoise(0.3)(text, random.Random(i)) for i in range(50)]
    assert noisy == [TextNoise(0.3)(text, random.Random(i)) for i in range(50)]  # seeded
    assert sum(n != text for n in noisy) >= 40
    words = set(text.split())
    kept = np.mean([len(set(n.split()) & words) / len(words) for n in noisy])
    assert 0.5 < kept < 1.0  # light: most words survive intact
    assert all(TextNoise(0.9)("word", random.Random(i)) for i in range(20))
    zh = TextNoise(0.5)("今天股市大涨银行利率下调", random.Random(0))
    assert zh and " " not in zh and set(zh) <= set("今天股市大涨银行利率下调")  # characters, no spaces added


def test_image_policies_and_soft_cross_entropy():
    from fmadapt.backbones.vision import build_image_transform
    from fmadapt.train.module import soft_cross_entropy

    cfg = create_backbone("tiny-cnn").cfg
    img = make_image((200, 30, 30), 0, size=48)
    for policy in ("basic", "trivial", "randaugment"):
        assert build_image_transform(cfg, True, policy)(img).shape == (3, 32, 32)
    with pytest.raises(ValueError):
        build_image_transform(cfg, True, "autoaugment-v9")
    # "flip": the evaluation geometry, mirrored or not; no crop
    lopsided = np.zeros((48, 48, 3), np.uint8)
    lopsided[:, :10] = 255
    lopsided = Image.fromarray(lopsided)
    ev, flip = build_image_transform(cfg, False)(lopsided), build_image_transform(cfg, True, "flip")
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        out = flip(lopsided)
        same, mirrored = torch.equal(out, ev), torch.equal(out, ev.flip(-1))
        assert same or mirrored
        seen.add(same)
    assert seen == {True, False}
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    assert soft_cross_entropy(logits, onehot) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    w = torch.tensor([1.0, 2.0, 0.5])
    assert soft_cross_entropy(logits, onehot, w) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y, weight=w)), rel=1e-5)


def test_finetune_with_mixup_cutmix_and_trivial_augment(image_folder):
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", unfreeze=2, epochs=1, batch_size=8,
                          augment_policy="trivial", mixup=0.2, cutmix=1.0).fit(image_folder)
    aug = clf.history_["augmentation"]
    assert "trivial" in aug and "mixup 0.2/cutmix 1" in aug
    assert not clf.history_["cached_activations"]  # fresh inputs every epoch
    assert np.isfinite(clf.history_["epochs"][-1]["train_loss"])


def test_text_noise_disables_cached_activations_and_on_is_refused():
    from conftest import text_frame
    from fmadapt import TextClassifier

    df = text_frame(12)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", unfreeze=1, epochs=1, batch_size=8,
                         text_noise=0.2).fit(df)
    assert not clf.history_["cached_activations"] and clf.history_["augmentation"] == "text noise 0.2"
    with pytest.raises(ConfigError, match="inputs every epoch"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", unfreeze=1, epochs=1, batch_size=8,
                       text_noise=0.2, cache_activations="on").fit(df)


def test_auto_compares_candidates_within_the_budget_and_refits_the_winner(image_folder, tmp_path):
    import time

    t = time.perf_counter()
    clf = ImageClassifier(backbone="tiny-cnn", strategy="auto", time_budget="60s", batch_size=8).fit(image_folder)
    assert time.perf_counter() - t < 60 * 1.3
    auto = clf.history_["auto"]
    ran = [r for r in auto["candidates"] if r["status"] == "ran"]
    assert ran[0]["candidate"] == "probe" and len(ran) >= 2
    assert auto["winner"] in {r["candidate"] for r in ran}
    best = max(r["val_acc"] for r in ran)
    assert [r for r in ran if r["candidate"] == auto["winner"]][0]["val_acc"] == best
    assert "training + validation" in auto["final"] or "kept the selected model" in auto["final"]
    assert clf.metrics_["val"]["accuracy"] == pytest.approx(best, abs=1e-4)  # the winner's, before refit
    out = clf.save_pretrained(tmp_path / "m")
    from fmadapt import load_model

    again = load_model(out)
    np.testing.assert_allclose(again.predict_proba(image_folder).to_numpy(),
                               clf.predict_proba(image_folder).to_numpy(), atol=1e-5)


def test_auto_with_a_tiny_budget_runs_the_probe_and_skips_the_rest(image_folder):
    clf = ImageClassifier(backbone="tiny-cnn", strategy="auto", time_budget="3s").fit(image_folder)
    rows = clf.history_["auto"]["candidates"]
    assert rows[0]["status"] == "ran"
    assert any(r["status"] == "skipped: time budget" for r in rows[1:])


@pytest.mark.parametrize("modality", ["image", "text"])
def test_auto_tries_all_layers_before_lora(modality):
    from fmadapt.auto import candidates
    from fmadapt.config import FitConfig

    labels = [label for label, _ in candidates(modality, FitConfig())]
    classical = ["n-gram tf-idf", "stack: probe + n-gram"] if modality == "text" else []
    assert labels[:3 + len(classical)] == ["probe", *classical, "finetune top 2 groups", "finetune all layers"]
    assert [label for label, _ in candidates(modality, FitConfig(auto_ngram=False))][:2] == \
        ["probe", "finetune top 2 groups"]
    # LoRA saves little time on a CPU and scored lower: it must not take the budget full fine-tuning needs
    assert labels.index("finetune all layers") < labels.index("lora")


def test_auto_refuses_ensembles_and_bad_budgets():
    with pytest.raises(ConfigError):
        FitConfig(time_budget="soon")
    with pytest.raises(ConfigError, match="ensemble"):
        from conftest import text_frame
        from fmadapt import TextClassifier

        TextClassifier(backbone="tiny-bert", strategy="auto", ensemble=2).fit(text_frame(8))


def test_fgsm_and_pgd_stay_in_the_eps_ball_and_raise_the_loss():
    from fmadapt.train.adversarial import image_adversary

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    loss = torch.nn.CrossEntropyLoss()
    eps = torch.tensor([0.1, 0.2, 0.3])
    for kind in ("fgsm", "pgd"):
        xa = image_adversary(model, x, y, loss, eps, kind, steps=5)
        d = (xa - x).abs().amax(dim=(0, 2, 3))
        assert torch.all(d <= eps + 1e-6) and torch.all(d > 0)
        assert float(loss(model(xa), y)) > float(loss(model(x), y))


def test_embedding_fgm_moves_each_text_by_eps_times_its_norm():
    from fmadapt.train.adversarial import embedding_adversarial_loss

    bb = create_backbone("tiny-bert")
    model = Classifier(bb, 2)
    batch = bb.collator()(["a good film", "a rather bad and boring film"])
    y = torch.tensor([1, 0])
    emb = bb.model.get_input_embeddings()
    seen = []  # what the layer after the word embeddings receives: the perturbation shows there
    h = bb.model.embeddings.LayerNorm.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    clean, adv = embedding_adversarial_loss(model, emb, batch, y, torch.nn.CrossEntropyLoss(), eps=0.05)
    h.remove()
    assert float(adv) > float(clean)
    real = batch["attention_mask"].bool()
    step = seen[1] - seen[0]
    words = emb(batch["input_ids"]) * real.unsqueeze(-1)
    # one step per text, normalised over the whole text (not per token), of 5 % of the text's embedding norm
    assert torch.allclose(step.flatten(1).norm(dim=1), 0.05 * words.flatten(1).norm(dim=1), rtol=1e-4)
    per_token = step.norm(dim=-1)[real]
    assert per_token.max() > 1.2 * per_token.min()  # tokens move by their gradient's share, not all alike
    assert torch.all(step.norm(dim=-1)[~real] == 0)  # padding has no gradient, so it does not move


def test_adversarial_training_runs_uncached_and_checks_the_modality(image_folder):
    from conftest import text_frame
    from fmadapt import TextClassifier

    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", unfreeze=2, epochs=1, batch_size=8,
                          augment=False, adversarial="pgd", adv_steps=2).fit(image_folder)
    assert clf.history_["adversarial"] == "pgd" and not clf.history_["cached_activations"]
    t = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8,
                       adversarial="embedding").fit(text_frame(8))
    assert t.history_["adversarial"] == "embedding"
    with pytest.raises(ConfigError, match="adversarial 'embedding' is for texts"):  # refused when configured
        ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, adversarial="embedding")


def test_logme_prefers_informative_features():
    from fmadapt.evaluate.transferability import logme

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    informative = np.hstack([np.eye(3)[y] * 2 + rng.normal(0, 1, (300, 3)), rng.normal(0, 1, (300, 29))])
    noise = rng.normal(0, 1, (300, 32))
    assert logme(informative, y) > logme(noise, y) + 0.1


def test_auto_ranks_candidate_backbones_by_logme(image_folder):
    clf = ImageClassifier(strategy="auto", time_budget="20s", candidate_backbones="tiny-cnn,tiny-cnn-cached",
                          backbone="tiny-cnn").fit(image_folder)
    ranking = clf.history_["auto"]["backbone_ranking"]
    assert [r["backbone"] for r in ranking] and ranking[0]["logme"] >= ranking[-1]["logme"]
    assert clf.model_.backbone.cfg.name == ranking[0]["backbone"]


def test_fgsm_loss_reuses_the_clean_pass_and_matches_the_explicit_adversary():
    from fmadapt.train.adversarial import image_adversarial_loss, image_adversary

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    loss = torch.nn.CrossEntropyLoss()
    eps = torch.tensor([0.1, 0.2, 0.3])
    calls = []
    h = model.register_forward_hook(lambda m, i, o: calls.append(1))
    clean, adv = image_adversarial_loss(model, x, y, loss, eps, "fgsm")
    h.remove()
    assert len(calls) == 2  # clean (also giving the gradient) + adversarial
    assert float(clean) == pytest.approx(float(loss(model(x), y)))
    assert float(adv) == pytest.approx(float(loss(model(image_adversary(model, x, y, loss, eps, "fgsm")), y)))
    clean.backward()  # the clean graph survives the gradient step: the training loss backpropagates


@pytest.fixture
def tiny_cnn_with_lr():
    """tiny-cnn carrying a measured fine-tuning rate of its own, as the packaged MiniLM-L6 does."""
    from fmadapt.backbones import register_backbone
    from fmadapt.backbones.registry import _REGISTRY

    @register_backbone("tiny-cnn-lr", "image", "test only: tiny-cnn with finetune_lr 7e-4")
    def _make(pretrained: bool = True):
        from conftest import tiny_cnn

        bb = tiny_cnn()
        bb.cfg.name, bb.cfg.finetune_lr = "tiny-cnn-lr", 7e-4
        return bb

    yield "tiny-cnn-lr"
    _REGISTRY.pop("tiny-cnn-lr", None)


@pytest.mark.parametrize("strategy,options,expected", [
    ("finetune", {}, 7e-4),  # the backbone's own rate
    ("finetune", {"lr": 3e-4}, 3e-4),  # an explicit lr wins
    ("progressive", {}, 7e-4),
    ("lora", {}, 1e-3),  # adapters keep LoRA's own default: the backbone's rate is for its weights
])
def test_backbone_finetune_lr_is_the_default_body_rate(image_folder, tiny_cnn_with_lr, strategy, options, expected):
    clf = ImageClassifier(backbone=tiny_cnn_with_lr, strategy=strategy, epochs=1, batch_size=8, augment=False,
                          **options).fit(image_folder)
    assert clf.history_["lr"] == pytest.approx(expected)


def test_packaged_minilm_has_its_measured_finetune_lr_and_others_none():
    from fmadapt.backbones.base import BackboneCfg
    from fmadapt.backbones.text import MEASURED_FINETUNE_LR

    measured = MEASURED_FINETUNE_LR["sentence-transformers/all-MiniLM-L6-v2"]
    assert create_backbone("minilm-l6").cfg.finetune_lr == measured
    assert create_backbone("tiny-cnn").cfg.finetune_lr is None
    with pytest.raises(ValueError, match="finetune_lr"):
        BackboneCfg.from_dict({"name": "x", "modality": "text", "embed_dim": 4, "finetune_lr": -1.0})


def test_image_augmentation_resolves_per_strategy_and_history_says_how_epochs_were_set():
    from fmadapt.config import FitConfig

    # unset: off for fine-tuning (the measured default), on for contrastive pairs; a non-basic policy asks for it
    assert (FitConfig().augments_images(False), FitConfig().augments_images(True)) == (False, True)
    assert FitConfig(augment_policy="trivial").augments_images(False)
    # given: what the user said, whatever the strategy's default
    assert not FitConfig(augment=False).augments_images(True)
    assert FitConfig(augment=True).augments_images(False)
    assert FitConfig().how_set("epochs") == f"{FitConfig.epochs} (epochs, the default)"
    assert FitConfig(epochs=7).how_set("epochs") == "7 (epochs, given)"


def test_auto_lets_a_long_candidate_run_into_the_retraining_share(monkeypatch):
    """A fine-tuning candidate that needs longer than the comparison's 60 % runs on to the end of the budget
    (it could not be retrained in the rest anyway) and is then kept as trained; later candidates, which would
    start after the 60 % mark, are skipped. Simulated clock: each fit advances it by its own cost."""
    from fmadapt import auto
    from fmadapt.data.examples import Examples

    clock = [0.0]
    monkeypatch.setattr(auto.time, "perf_counter", lambda: clock[0])
    cost = {"probe": 5.0, 2: 20.0, -1: 400.0}  # seconds each candidate needs to finish
    seen = []

    def fit_one(cfg, tr, va):
        key = "probe" if cfg.strategy == "probe" else cfg.unfreeze if cfg.strategy == "finetune" else cfg.strategy
        need = cost.get(key, 50.0)
        ran = need if cfg.strategy == "probe" else min(need, cfg.max_time)
        seen.append((key, cfg.epochs, cfg.max_time, ran))
        clock[0] += ran
        score = {"probe": 0.80, 2: 0.82, -1: 0.90}.get(key, 0.5) * (ran / need)
        return Member(score, cfg, {"epochs_run": 4, "best_epoch": 3}, key != "probe")

    def val_metrics(member):
        return {"accuracy": member.model, "macro_f1": member.model, "balanced_accuracy": member.model}

    ex = Examples(inputs=["a"] * 4, labels=["x", "y"] * 2, ids=[str(i) for i in range(4)])
    search = auto.AutoSearch(FitConfig(strategy="auto", time_budget="600s", auto_ngram=False), "text", fit_one,
                             val_metrics)
    final, metrics, history = search.run(ex, ex)
    rows = {r["candidate"]: r for r in history["auto"]["candidates"]}
    all_layers = [s for s in seen if s[0] == -1][0]
    # it started at 25 s: max_time is RUN_SHARE * 600 - 25 = 485 s, not the 360 - 25 s left of the 60 % share
    assert all_layers[2] == pytest.approx(auto.RUN_SHARE * 600 - 25) and all_layers[3] == 400.0
    assert all_layers[1] == min(FitConfig().epochs, auto.CANDIDATE_EPOCHS)
    assert history["auto"]["winner"] == "finetune all layers" and final.model == pytest.approx(0.90)
    assert "kept the selected model" in history["auto"]["final"]
    assert rows["lora"]["status"] == "skipped: time budget"
    assert len(rows["finetune all layers"]["seeds"]) == 1  # no time for another seed


@pytest.mark.parametrize("slow_refit", [False, True])
def test_auto_refits_a_fine_tuning_winner_when_its_epochs_fit_the_budget(monkeypatch, slow_refit):
    """The refit's time is estimated from the winner's own timings (setup + the epochs it needed, scaled by the
    data), not from its whole run: all layers ran 4 epochs of 60 s (260 s) but its best was the 2nd, so a refit
    needs ~156 s and runs in the 265 s left (the old rule, 1.25 x 260 / 0.9 = 361 s, kept the selected model).
    A refit that the budget stops before its epochs are done is dropped for the selected model."""
    from fmadapt import auto
    from fmadapt.data.examples import Examples

    clock = [0.0]
    monkeypatch.setattr(auto.time, "perf_counter", lambda: clock[0])
    refits = []

    def fit_one(cfg, tr, va):
        key = "probe" if cfg.strategy == "probe" else cfg.unfreeze if cfg.strategy == "finetune" else cfg.strategy
        if key != -1:
            clock[0] += {"probe": 5.0, 2: 20.0}.get(key, 50.0)
            return Member({"probe": 0.80, 2: 0.82}.get(key, 0.5), cfg, {"epochs_run": 4, "best_epoch": 3},
                          key != "probe")
        setup, per = 20.0, 60.0 * (3 if slow_refit and not cfg.restore_best else 1)
        done = min(cfg.epochs, int(max(0.0, cfg.max_time - setup) // per))
        clock[0] += min(cfg.max_time, setup + cfg.epochs * per)
        if not cfg.restore_best:
            refits.append((cfg.epochs, len(tr)))
        return Member(0.91 if not cfg.restore_best else 0.90, cfg,
                      {"epochs_run": done, "best_epoch": 1, "fit_seconds": setup + done * per,
                       "epoch_seconds": [per] * done}, True)

    def val_metrics(member):
        return {"accuracy": member.model, "macro_f1": member.model, "balanced_accuracy": member.model}

    tr = Examples(inputs=["a"] * 9, labels=["x", "y", "x"] * 3, ids=[str(i) for i in range(9)])
    va = Examples(inputs=["b"], labels=["x"], ids=["9"])
    search = auto.AutoSearch(FitConfig(strategy="auto", time_budget="600s", auto_ngram=False), "text", fit_one,
                             val_metrics)
    final, metrics, history = search.run(tr, va)
    assert history["auto"]["winner"] == "finetune all layers"
    assert refits == [(2, 10)]  # the 2 epochs it needed, on training + validation data
    if slow_refit:
        assert final.model == 0.90 and "stopped by the budget after 1 of them" in history["auto"]["final"]
    else:
        assert final.model == 0.91 and "retrained on training + validation data" in history["auto"]["final"]
    assert auto.refit_seconds({"fit_seconds": 260.0, "epoch_seconds": [60.0] * 4}, 2, 2.0) == pytest.approx(280.0)
    assert auto.refit_seconds({"fit_seconds": 100.0, "epoch_seconds": [40.0]}, 3, 1.0) == pytest.approx(180.0)
    assert auto.refit_seconds({"epochs_run": 4}, 2, 1.0) is None


def test_max_time_counts_the_fit_setup_too(image_folder, monkeypatch):
    """`max_time` (auto's budget per candidate) runs from the start of the fine-tuning fit: the probe head and
    the starting point's validation pass before Lightning starts are taken off what the Trainer gets."""
    import time

    from fmadapt.adapt import finetune

    given = []
    real = finetune.build_trainer
    monkeypatch.setattr(finetune, "build_trainer",
                        lambda cfg, *a, **k: given.append(cfg.max_time) or real(cfg, *a, **k))
    slow = finetune.evaluation_metrics  # the starting point's validation pass, made 2 s slower

    def slower(*a, **k):
        time.sleep(2.0)
        return slow(*a, **k)

    monkeypatch.setattr(finetune, "evaluation_metrics", slower)
    ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, batch_size=8, max_time=60.0).fit(image_folder)
    assert len(given) == 1 and 1.0 <= given[0] <= 58.0
