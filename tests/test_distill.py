"""`fmadapt distill` (issue 24): a student cut from the teacher's encoder, trained on its soft targets, saved as an
ordinary model directory that loads, predicts and exports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import text_frame
from fmadapt import TextClassifier, load_model
from fmadapt.compress.distill import distill, kept_layers
from fmadapt.errors import ConfigError


def test_kept_layers_are_evenly_spaced_and_end_at_the_top():
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(6, 2) == [2, 5]
    assert kept_layers(12, 4) == [2, 5, 8, 11]
    assert kept_layers(2, 1) == [1]
    for bad in (0, 6, 7):
        with pytest.raises(ConfigError, match="between 1 and 5"):
            kept_layers(6, bad)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    df = text_frame(30)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=2, batch_size=8, seed=0, progress=False)
    clf.fit(df)
    df.to_csv(root / "train.csv", index=False)
    return clf.save_pretrained(root / "teacher", report=False), root / "train.csv"


def test_a_distilled_student_keeps_fewer_layers_and_learns_the_teacher(teacher, tmp_path):
    teacher_dir, data = teacher
    unlabeled = tmp_path / "more.csv"
    text_frame(10, seed=5).drop(columns=["label"]).to_csv(unlabeled, index=False)
    s = distill(teacher_dir, str(data), tmp_path / "student", unlabeled=str(unlabeled), student_layers=1, epochs=3,
                lr=1e-3, batch_size=8)
    assert s["student"]["layers"] == 1 and s["teacher"]["layers"] == 2 and s["student"]["kept_layers"] == [1]
    assert s["unlabeled"] == 20 and s["train"] + s["validation"] == 60
    assert s["student"]["per_s"] > 0 and s["speedup"] > 0 and 0 <= s["agreement"] <= 1
    # the student is an ordinary model directory: its encoder has one layer, it predicts what it was measured with
    student = load_model(tmp_path / "student", cache=False)
    bb = student.members_[0].model.backbone
    assert len(bb.layer_groups()) == 2 and bb.model.config.num_hidden_layers == 1
    assert json.loads((tmp_path / "student" / "backbone.json").read_text())["extra"]["kept_layers"] == [1]
    assert s["student"]["accuracy"] > 0.6  # (the toy task: words that name the class)
    texts = text_frame(4, seed=9)["text"].tolist()
    assert len(student.predict(texts)) == 8
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["history"]["distillation"]["options"]["temperature"] == 2.0


def test_the_student_exports_and_its_export_agrees(teacher, tmp_path):
    from fmadapt.compress.export import export_model
    from fmadapt.compress.exported import ExportedModel

    teacher_dir, data = teacher
    distill(teacher_dir, str(data), tmp_path / "student", student_layers=1, epochs=1, batch_size=8)
    export_model(tmp_path / "student", tmp_path / "x")
    texts = text_frame(4, seed=9)["text"].tolist()
    want = load_model(tmp_path / "student", cache=False).predict_proba(texts).to_numpy()
    np.testing.assert_allclose(ExportedModel(tmp_path / "x").predict_proba(texts), want, atol=1e-4)


def test_the_cli_distills_and_refuses_what_it_cannot(teacher, tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    teacher_dir, data = teacher
    r = CliRunner().invoke(app, ["distill", str(teacher_dir), str(data), "--out", str(tmp_path / "s"),
                                 "--student-layers", "1", "--epochs", "1", "--batch-size", "8", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert {"teacher", "student", "speedup", "agreement", "accuracy_ratio"} <= set(summary)
    r = CliRunner().invoke(app, ["distill", str(teacher_dir), str(data), "--out", str(tmp_path / "s2"),
                                 "--student-layers", "2"])
    assert r.exit_code == 2 and "between 1 and 1" in r.output
    r = CliRunner().invoke(app, ["distill", str(teacher_dir), str(data), "--out", str(tmp_path / "s3"),
                                 "--alpha", "1.5"])
    assert r.exit_code == 2 and "--alpha" in r.output
    df = pd.DataFrame({"text": ["a", "b"] * 5, "score": np.arange(10.0)})
    reg = TextClassifier(backbone="tiny-bert", task="regression", progress=False).fit(df)
    r = CliRunner().invoke(app, ["distill", str(reg.save_pretrained(tmp_path / "reg", report=False)), str(data),
                                 "--out", str(tmp_path / "s4")])
    assert r.exit_code == 2 and "single-label classifier" in r.output


def test_an_image_teacher_distils_into_a_smaller_image_size_or_another_backbone(tmp_path):
    from conftest import write_image_folder
    from fmadapt import ImageClassifier

    data = write_image_folder(tmp_path / "imgs", per_class=10)
    teacher = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, image_size=64, progress=False)
    teacher_dir = teacher.fit(data).save_pretrained(tmp_path / "teacher", report=False)
    s = distill(teacher_dir, str(data), tmp_path / "small", epochs=1, batch_size=8)
    assert s["teacher"]["image_size"] == 64 and s["student"]["image_size"] == 32  # (5/7 of 64, in 32s)
    small = load_model(tmp_path / "small", cache=False)
    assert small.members_[0].model.backbone.cfg.input_size == 32
    assert len(small.predict(str(data))) == 30
    from fmadapt.compress.export import export_model

    meta = export_model(tmp_path / "small", tmp_path / "small-x")  # (checked on the images it lists as held out)
    assert meta["parity"]["inputs"].startswith("the val images") and meta["preprocessing"]["input_size"] == 32
    s = distill(teacher_dir, str(data), tmp_path / "other", student="tiny-cnn-cached", epochs=1, batch_size=8)
    assert s["student"]["backbone"] == "tiny-cnn-cached"
    assert load_model(tmp_path / "other", cache=False).members_[0].model.backbone.cfg.name == "tiny-cnn-cached"
    with pytest.raises(ConfigError, match="a text backbone"):
        distill(teacher_dir, str(data), tmp_path / "bad", student="tiny-bert", epochs=1)


def test_keep_rules_parse_and_choose():
    from fmadapt.compress.leaderboard import choose, parse_keep

    assert parse_keep("best-under:latency=10ms") == ("best-under-latency", 10.0)
    assert parse_keep("smallest-within:1pt") == ("smallest-within", 1.0)
    assert parse_keep(None) is None
    with pytest.raises(ConfigError, match="best-under:latency=10ms or smallest-within:1pt"):
        parse_keep("fastest")
    rows = [{"name": "model", "accuracy": 0.90, "mb": 90, "p50_ms": 8.0},
            {"name": "model-int8", "accuracy": 0.895, "mb": 23, "p50_ms": 3.0},
            {"name": "student", "accuracy": 0.85, "mb": 60, "p50_ms": 4.0},
            {"name": "student-int8", "accuracy": 0.84, "mb": 15, "p50_ms": 2.0},
            {"name": "refused-one", "refused": "too far"}]
    assert choose(rows, ("best-under-latency", 5.0))["name"] == "model-int8"
    assert choose(rows, ("best-under-latency", 2.5))["name"] == "student-int8"
    assert choose(rows, ("best-under-latency", 1.0)) is None
    assert choose(rows, ("smallest-within", 1.0))["name"] == "model-int8"
    assert choose(rows, ("smallest-within", 10.0))["name"] == "student-int8"


def test_compress_measures_every_candidate_on_the_same_held_out_inputs(teacher, tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    teacher_dir, data = teacher
    r = CliRunner().invoke(app, ["compress", str(teacher_dir), str(data), "--out", str(tmp_path / "c"),
                                 "--student-layers", "1", "--epochs", "1", "--keep", "smallest-within:50pt",
                                 "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    names = [row["name"] for row in res["rows"]]
    assert names == ["model", "model-fp32", "model-int8", "student", "student-fp32", "student-int8"]
    measured = [row for row in res["rows"] if "refused" not in row]
    assert all(0 <= row["accuracy"] <= 1 and row["p50_ms"] > 0 and row["per_s"] > 0 for row in measured)
    by = {row["name"]: row for row in measured}
    assert by["model-fp32"]["accuracy"] == by["model"]["accuracy"]  # (the same graph on the same inputs)
    assert by["student"]["mb"] < by["model"]["mb"]
    assert res["held_out"] == 12 and res["kept"] in names and (tmp_path / "c" / "kept").is_dir()
    board = (tmp_path / "c" / "leaderboard.md").read_text()
    assert "| student-fp32 |" in board and "kept:" in board
    assert (tmp_path / "c" / "leaderboard.csv").read_text().count("\n") == 7
    # the model's report gains the leaderboard (section "Compression"), from compression.json beside the model
    saved = json.loads((teacher_dir / "compression.json").read_text())
    assert [row["name"] for row in saved["rows"]] == names and saved["held_out"] == 12
    html = (teacher_dir / "report.html").read_text()
    section = html.split('<section id="compression"', 1)[1].split("</section>", 1)[0]
    assert "not run" not in section and "<td>student-int8</td>" in section
    assert f'<td class="n">{by["student"]["accuracy"]:.4f}</td>' in section


def test_structured_pruning_shrinks_the_matrices_and_survives_save_load_and_export(teacher, tmp_path):
    import torch

    from fmadapt.compress.export import export_model
    from fmadapt.compress.exported import ExportedModel
    from fmadapt.compress.prune import prune

    teacher_dir, data = teacher
    bb = load_model(teacher_dir, cache=False).members_[0].model.backbone
    batch = bb.collator()(["a short text", "a second, longer text to pad the batch"])
    left = prune(bb, 0.5)
    lay = bb.layer_groups()[1]
    heads = lay.attention.self.num_attention_heads
    assert left["heads"] == [heads, heads] and lay.attention.self.query.out_features == heads * \
        lay.attention.self.attention_head_size and lay.intermediate.dense.out_features == left["ffn"][0]
    with torch.no_grad():
        assert bb(batch).shape == (2, bb.cfg.embed_dim)  # (the smaller layers still run)
    with pytest.raises(ValueError, match="pruned already"):
        prune(bb, 0.5)
    s = distill(teacher_dir, str(data), tmp_path / "pruned", student_prune=0.5, epochs=1, batch_size=8)
    assert s["student"]["pruned"] == 0.5 and s["student"]["heads"] < s["teacher"]["heads"]
    pruned = load_model(tmp_path / "pruned", cache=False)
    texts = text_frame(4, seed=9)["text"].tolist()
    export_model(tmp_path / "pruned", tmp_path / "x")
    np.testing.assert_allclose(ExportedModel(tmp_path / "x").predict_proba(texts),
                               pruned.predict_proba(texts).to_numpy(), atol=1e-4)
    record = json.loads((tmp_path / "pruned" / "backbone.json").read_text())["extra"]["pruned"]
    assert len(record["heads"]) == 2 and all(len(h) == s["student"]["heads"] // 2 for h in record["heads"])


def test_image_channel_pruning_shrinks_the_convolutions_and_survives_save_load_and_export(tmp_path):
    import torch

    from conftest import write_image_folder
    from fmadapt import ImageClassifier
    from fmadapt.compress.export import export_model
    from fmadapt.compress.exported import ExportedModel

    data = write_image_folder(tmp_path / "imgs", per_class=10)
    teacher = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, image_size=64, progress=False)
    teacher_dir = teacher.fit(data).save_pretrained(tmp_path / "teacher", report=False)
    s = distill(teacher_dir, str(data), tmp_path / "pruned", student_prune=0.5, epochs=1, batch_size=8)
    assert s["student"]["pruned"] == 0.5
    assert s["student"]["macs"] < 0.7 * s["teacher"]["macs"] and s["student"]["params"] < s["teacher"]["params"]
    t_net = load_model(teacher_dir, cache=False).members_[0].model.backbone.model
    pruned = load_model(tmp_path / "pruned", cache=False)
    p_bb = pruned.members_[0].model.backbone
    widths = lambda net: [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]  # noqa: E731
    assert sum(widths(p_bb.model)) < 0.75 * sum(widths(t_net)) and widths(p_bb.model)[-1] == widths(t_net)[-1]
    record = json.loads((tmp_path / "pruned" / "backbone.json").read_text())["extra"]["channels"]
    assert record and all(set(v) <= {"out", "in", "groups", "features"} for v in record.values())
    # reloaded, it predicts what it was measured with, and its export agrees
    assert len(pruned.predict(str(data))) == 30
    meta = export_model(tmp_path / "pruned", tmp_path / "x")
    assert meta["parity"]["fp32"]["graph"]["same_class"] == 1.0
    images = sorted(str(p) for p in (tmp_path / "imgs").rglob("*.png"))[:6]
    np.testing.assert_allclose(ExportedModel(tmp_path / "x").predict_proba(images),
                               pruned.predict_proba(images).to_numpy(), atol=2e-2)


def test_a_static_student_is_made_from_the_teachers_encoder_and_saves_loads_and_exports(teacher, tmp_path):
    import torch

    from fmadapt.backbones.static import StaticTextBackbone, static_from
    from fmadapt.compress.export import export_model
    from fmadapt.compress.exported import ExportedModel

    teacher_dir, data = teacher
    bb = load_model(teacher_dir, cache=False).members_[0].model.backbone
    st = static_from(bb, 16, hidden=0)
    assert st.embedding.weight.shape == (len(bb.tokenizer), 16) and st.cfg.extra["static"] == {"dim": 16}
    batch = st.collator()(["a short text", "a second, longer text"])
    with torch.no_grad():
        one = st.embedding(batch["input_ids"][0, :int(batch["attention_mask"][0].sum())]).mean(0)
        np.testing.assert_allclose(st(batch)[0].numpy(), one.numpy(), atol=1e-6)  # (the mean over real tokens)
        deep = static_from(bb, 16, hidden=8)  # (the same mean, then Linear + GELU: 8 features)
        assert deep.cfg.embed_dim == 8 and deep.cfg.extra["static"] == {"dim": 16, "hidden": 8}
        lin = deep.hidden[0]
        np.testing.assert_allclose(deep(batch)[0].numpy(), torch.nn.functional.gelu(lin(one)).numpy(), atol=1e-6)
    s = distill(teacher_dir, str(data), tmp_path / "static", student="static:16:8", epochs=2, batch_size=8)
    assert s["options"]["lr"] == 1e-3 and s["student"]["backbone"] == "static (16-d vectors of its tokens, a hidden " \
        "layer of 8)"
    student = load_model(tmp_path / "static", cache=False)
    sbb = student.members_[0].model.backbone
    assert isinstance(sbb, StaticTextBackbone) and sbb.hidden is not None and sbb.hidden[0].out_features == 8
    from fmadapt.backbones.static import restore_structure

    before = restore_structure(bb, {"static": {"dim": 16}})  # (saved before the hidden layer existed: rebuilt without)
    assert before.hidden is None and before.cfg.embed_dim == 16
    with pytest.raises(ConfigError, match="static:DIM"):
        distill(teacher_dir, str(data), tmp_path / "bad", student="static:0:8", epochs=1)
    texts = text_frame(4, seed=9)["text"].tolist()
    export_model(tmp_path / "static", tmp_path / "x")
    np.testing.assert_allclose(ExportedModel(tmp_path / "x").predict_proba(texts),
                               student.predict_proba(texts).to_numpy(), atol=1e-4)


def test_the_hidden_state_loss_is_one_minus_the_cosine_of_paired_layers_over_real_tokens(teacher, tmp_path,
                                                                                            monkeypatch):
    import copy

    import torch

    from fmadapt.backbones.text import encoder_layers, keep_layers
    from fmadapt.compress.distill import DEFAULTS, _module

    teacher_dir, data = teacher
    t_net = load_model(teacher_dir, cache=False).members_[0].model.eval()
    texts = ["short", "a much longer text with many more words than the first one"]
    batch = t_net.backbone.collator()(texts)
    idx = torch.arange(len(texts))
    soft, hard = torch.full((2, 2), 0.5), torch.tensor([0, -1])

    def loss(weight):
        student, tch = copy.deepcopy(t_net), copy.deepcopy(t_net)
        keep_layers(student.backbone, [1])
        torch.manual_seed(0)
        with torch.no_grad():  # (a teacher layer 1 that differs from the student's copy of it)
            for prm in encoder_layers(tch.backbone.model)[1].parameters():
                prm.add_(torch.randn_like(prm))
        module = _module(student.eval(), soft, hard, {**DEFAULTS, "hidden_weight": weight}, 10, tch, [(0, 1)])
        with torch.no_grad():
            return float(module.training_step((batch, idx), 0)), student, tch

    base, student, tch = loss(0.0)
    with_hidden, _, _ = loss(2.0)
    # what it should add: student layer 0 against teacher layer 1, padding left out
    seen = {}
    encoder_layers(student.backbone.model)[0].register_forward_hook(
        lambda m, i, o: seen.__setitem__("s", o[0] if isinstance(o, tuple) else o))
    encoder_layers(tch.backbone.model)[1].register_forward_hook(
        lambda m, i, o: seen.__setitem__("t", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        student.backbone(batch)
        tch.backbone(batch)
    m = batch["attention_mask"].float()
    assert m.sum() < m.numel()  # (the short text is padded)
    want = float(((1 - torch.nn.functional.cosine_similarity(seen["s"], seen["t"], dim=-1)) * m).sum() / m.sum())
    assert want > 1e-3
    assert with_hidden - base == pytest.approx(2.0 * want, rel=1e-3)
    # and distill records it, and takes its hooks off both networks once trained
    from fmadapt.compress import distill as distill_module

    made = []
    monkeypatch.setattr(distill_module, "_module", lambda *a, **k: made.append(_module(*a, **k)) or made[-1])
    s = distill(teacher_dir, str(data), tmp_path / "h", student_layers=1, epochs=1, batch_size=8, hidden_weight=1.0)
    assert s["options"]["hidden_weight"] == 1.0 and len(made[0].hooks) == 2
    assert not any(m._forward_hooks for m in made[0].model.modules())


def test_an_ensemble_teacher_gives_its_averaged_probabilities_as_soft_targets(tmp_path, monkeypatch):
    from fmadapt.compress import distill as distill_module

    df = text_frame(30)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, seed=0, ensemble=2,
                         progress=False)
    clf.fit(df)
    import torch

    with torch.no_grad():  # (on this toy task both members keep their identical probe start: make them differ)
        for prm in clf.members_[1].model.head.parameters():
            prm.add_(torch.randn_like(prm, generator=torch.Generator().manual_seed(0)))
    df.to_csv(tmp_path / "train.csv", index=False)
    teacher_dir = clf.save_pretrained(tmp_path / "teacher", report=False)
    teacher = load_model(teacher_dir, cache=False)
    assert len(teacher.members_) == 2
    seen = {}
    real = distill_module._module

    def spy(student, soft, hard, o, steps, *a, **k):
        seen["soft"] = soft.numpy()
        return real(student, soft, hard, o, steps, *a, **k)

    monkeypatch.setattr(distill_module, "_module", spy)
    s = distill(teacher_dir, str(tmp_path / "train.csv"), tmp_path / "student", student_layers=1, epochs=1,
                batch_size=8, temperature=1.0)
    from fmadapt.data.split import stratified_split

    train, _ = stratified_split(teacher.read_labeled(str(tmp_path / "train.csv")), 0.2, 0)
    # at T = 1 the soft targets are the ensemble's uncalibrated average, not its first member's
    avg = teacher.proba(train, calibrated=False)
    first = teacher.members_[0]
    np.testing.assert_allclose(seen["soft"], avg, atol=1e-5)
    one = load_model(teacher_dir, cache=False)
    one.set_members([first])
    assert np.abs(one.proba(train, calibrated=False) - avg).max() > 1e-4
    assert s["teacher"]["layers"] == 2 and load_model(tmp_path / "student", cache=False).members_[0]
