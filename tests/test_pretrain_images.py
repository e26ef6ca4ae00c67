"""Continued self-supervised pretraining of image backbones (fmadapt/pretrain/image.py: SimCLR) on a tiny
randomly-initialised timm model: the loss, what trains when, the backbone folder it writes, and the commands."""

from __future__ import annotations

import json

import pytest
import torch

from fmadapt.errors import ConfigError, DataError
from fmadapt.pretrain import pretrain


def test_nt_xent_is_the_cross_entropy_of_each_view_against_its_twin():
    from fmadapt.pretrain.image import nt_xent

    torch.manual_seed(0)
    z = torch.randn(8, 5)  # views 1 of 4 images, then their views 2
    zn = torch.nn.functional.normalize(z, dim=1)
    expected = []
    for i in range(8):
        twin = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        logits = torch.stack([zn[i] @ zn[j] / 0.2 for j in others])
        expected.append(-torch.log_softmax(logits, 0)[others.index(twin)])
    assert torch.allclose(nt_xent(z, 0.2), torch.stack(expected).mean(), atol=1e-6)
    same = torch.cat([torch.eye(4), torch.eye(4)]) * 3  # (twins identical, other images orthogonal)
    assert nt_xent(same, 0.1) < 0.01 < nt_xent(torch.cat([torch.eye(4), torch.eye(4).flip(0)]), 0.1)


def test_simclr_trains_the_head_alone_first_and_never_moves_batchnorm_statistics(image_folder):
    from fmadapt.backbones.registry import create_backbone
    from fmadapt.pretrain.config import PretrainConfig
    from fmadapt.pretrain.image import train_image

    paths = sorted(str(p) for p in image_folder.rglob("*.png"))  # 36 images: 4 steps of 9 an epoch
    source = {k: v.clone() for k, v in create_backbone("tiny-cnn").state_dict().items()}
    bb = create_backbone("tiny-cnn")
    backward_through_backbone = []
    bb.model.conv_stem.weight.register_hook(lambda g: backward_through_backbone.append(1))
    head_only = PretrainConfig(method="simclr", batch_size=9, head_warmup=0.5, lr=1e-2, epochs=1)
    run = train_image(bb, paths, head_only.resolved("image"))
    assert run["steps"] == 4 and run["head_only_steps"] == 2 and len(backward_through_backbone) == 2
    changed = {k for k, v in bb.state_dict().items() if not torch.equal(v, source[k])}
    assert "model.conv_stem.weight" in changed and not any("running_" in k or "num_batches" in k for k in changed)
    assert not bb.training


def test_simclr_writes_a_timm_folder_that_loads_as_trained_and_fits(tmp_path, image_folder):
    from safetensors.torch import load_file

    from fmadapt import ImageClassifier
    from fmadapt.backbones.registry import create_backbone
    from fmadapt.pretrain.guard import _features

    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for i, f in enumerate(sorted(image_folder.rglob("*.png"))):
        (unlabeled / f"{i}.png").write_bytes(f.read_bytes())
    (unlabeled / "broken.png").write_bytes(b"not a png")
    rec = pretrain(str(unlabeled), tmp_path / "bb", "tiny-cnn", {"epochs": 3, "batch_size": 8, "lr": 1e-3,
                                                                 "image_size": 48}, labeled=image_folder,
                   progress=False)
    run, data = rec["run"], rec["data"]
    assert rec["method"] == "simclr" and rec["modality"] == "image" and rec["options"]["batch_size"] == 8
    assert data["read"] == 37 and data["skipped"] == 1 and data["skipped_files"][0]["where"].endswith("broken.png")
    assert data["images"] == 36 and data["held_out"] == 3 and data["trained_on"] == 33
    assert run["steps"] == run["planned_steps"] == 3 * 4 and run["seen"] == 3 * 32  # (a last batch of one dropped)
    assert run["head_only_steps"] == 1 and run["image_size"] == 48
    assert 0 <= rec["guard"]["before"]["probe_accuracy"] <= 1 and "quick probe" in rec["guard"]["verdict"]
    files = sorted(p.name for p in (tmp_path / "bb").iterdir())
    assert files == ["config.json", "model.safetensors", "pretrain.json"]
    cfg = json.loads((tmp_path / "bb" / "config.json").read_text())
    assert cfg["architecture"] == "test_efficientnet" and cfg["pretrained_cfg"]["input_size"] == [3, 48, 48]
    loaded = create_backbone(str(tmp_path / "bb"))
    # every tensor saved is the one loaded (timm loads a headless folder non-strictly: nothing may be left out)
    saved = load_file(str(tmp_path / "bb" / "model.safetensors"))
    state = loaded.model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    source = create_backbone("tiny-cnn").model.state_dict()
    assert torch.equal(saved["bn1.running_mean"], source["bn1.running_mean"])  # (frozen statistics)
    assert not all(torch.equal(saved[k], source[k]) for k in saved if k.endswith("weight"))  # (it trained)
    assert loaded.cfg.input_size == 48 and len(loaded.cfg.sha256) == 64 and loaded.cfg.crop_pct == 1.0
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))[:6]]
    assert _features(loaded, paths).shape == (6, loaded.cfg.embed_dim)
    clf = ImageClassifier(backbone=str(tmp_path / "bb"), progress=False).fit(str(image_folder))
    assert clf.config_.backbone == str(tmp_path / "bb") and len(clf.predict(paths)) == 6


def test_image_pretraining_refuses_what_does_not_apply(tmp_path, image_folder):
    with pytest.raises(ConfigError, match="extend_vocab adds tokens to a text backbone"):
        pretrain(str(image_folder), tmp_path / "a", "tiny-cnn", {"extend_vocab": True}, progress=False)
    with pytest.raises(ConfigError, match="image_size must be in"):
        pretrain(str(image_folder), tmp_path / "a", "tiny-cnn", {"image_size": 8}, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="empty: 0 readable image.s.: pretraining needs unlabeled images .1 unread"):
        pretrain(str(tmp_path / "empty"), tmp_path / "a", "tiny-cnn", progress=False)
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        pretrain(str(tmp_path / "nowhere"), tmp_path / "a", "tiny-cnn", progress=False)
    assert not (tmp_path / "a").exists()


def test_pretrain_and_fit_pretrain_commands_on_images(tmp_path, image_folder):
    from typer.testing import CliRunner

    from fmadapt import load_model
    from fmadapt.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["pretrain", str(image_folder), "--out", str(tmp_path / "bb"), "--backbone", "tiny-cnn",
                            "--set", "batch_size=12", "--set", "image_size=40"])
    assert r.exit_code == 0, r.output
    assert "simclr on 33 images: 3 steps" in r.output and "check (3 held-out unlabeled images): " in r.output
    assert json.loads((tmp_path / "bb" / "pretrain.json").read_text())["guard"]["on"] == "3 held-out unlabeled images"
    base = ["fit", str(image_folder), "--backbone", "tiny-cnn", "--unlabeled", str(image_folder), "--report", "off",
            "--image-size", "40", "--pretrain", "--out", str(tmp_path / "m")]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "pretrained tiny-cnn on 36 unlabeled images" in r.output
    backbone = tmp_path / "m" / "pretrained-backbone"
    record = json.loads((backbone / "pretrain.json").read_text())
    assert record["options"]["image_size"] == 40 and record["method"] == "simclr"
    model = load_model(tmp_path / "m")
    assert model.config_.backbone == str(backbone.resolve())
    assert len(model.predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:2]])) == 2
    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "pretrained backbone reused" in again.output
    # the model directory moves whole: its backbone is found inside it, where it was saved with it
    moved = tmp_path / "elsewhere" / "m"
    moved.parent.mkdir()
    (tmp_path / "m").rename(moved)
    assert not backbone.exists()
    model = load_model(moved)
    assert model.model_.backbone.cfg.name == str((moved / "pretrained-backbone").resolve())
    assert len(model.predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:2]])) == 2
    text = runner.invoke(app, ["fit", str(image_folder), "--unlabeled", str(image_folder), "--pretrain",
                               "--extend-vocab", "--out", str(tmp_path / "x"), "--report", "off"])
    assert text.exit_code == 2 and "extend_vocab" in text.output


def test_unlabeled_and_labeled_images_may_be_tables_of_paths(tmp_path, image_folder):
    import pandas as pd

    files = sorted(image_folder.rglob("*.png"))
    pd.DataFrame({"path": [str(f) for f in files] + [str(tmp_path / "gone.png")]}).to_csv(tmp_path / "u.csv",
                                                                                          index=False)
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files]}).to_csv(
        tmp_path / "l.csv", index=False)
    rec = pretrain(str(tmp_path / "u.csv"), tmp_path / "bb", "tiny-cnn", {"epochs": 1, "batch_size": 8},
                   labeled=str(tmp_path / "l.csv"), progress=False)
    assert rec["data"]["images"] == 36 and rec["data"]["skipped"] == 1
    assert rec["guard"]["on"].endswith("l.csv") and "probe_accuracy" in rec["guard"]["after"]
