"""A NaN/Inf loss or gradient stops the run at that step, with a message, before any weight turns non-finite."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import write_image_folder
from fmadapt import ImageClassifier
from fmadapt.cli import app
from fmadapt.errors import TrainingDiverged
from fmadapt.train import module as train_module
from fmadapt.train.checkpoint import load_checkpoint

BAD_STEP = 6  # 0-based global step whose loss (or gradient) goes bad: in the second epoch (4 steps an epoch)


@pytest.fixture
def data(tmp_path):
    return write_image_folder(tmp_path / "img", per_class=8)


class _NanLoss(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, logits, y):
        return self.inner(logits, y) * float("nan")


def _poison(monkeypatch, what: str) -> dict:
    """Make step BAD_STEP give a NaN loss, or a finite loss with an Inf gradient; the real training step and
    its real checks run. Records the module and its weights before that step."""
    seen: dict = {"module": None}
    real_step = train_module.ClassifierModule.training_step

    def training_step(self, batch, batch_idx):
        seen["module"] = self
        if self.global_step != BAD_STEP:
            return real_step(self, batch, batch_idx)
        seen["before"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if what == "inf-grad":
            self.model.head.weight.register_hook(lambda g: g * float("inf"))
            return real_step(self, batch, batch_idx)
        loss_fn = self.loss_fn
        self.loss_fn = _NanLoss(loss_fn)
        try:
            return real_step(self, batch, batch_idx)
        finally:
            self.loss_fn = loss_fn

    monkeypatch.setattr(train_module.ClassifierModule, "training_step", training_step)
    return seen


def _clf():
    return ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=4, progress=False,
                           head_init="random", patience=10)


@pytest.mark.parametrize("what, message", [("nan-loss", "loss became nan"), ("inf-grad", "gradients became")])
def test_non_finite_step_stops_the_run_before_the_update(data, tmp_path, monkeypatch, what, message):
    seen = _poison(monkeypatch, what)
    with pytest.raises(TrainingDiverged, match=f"{message}.*step {BAD_STEP + 1}") as err:
        _clf().fit(data, checkpoint_dir=tmp_path / "ck")
    assert "--lr" in str(err.value)
    # stopped within the bad step: it made no update (the weights are those from before it, all finite)
    module = seen["module"]
    assert module.global_step == BAD_STEP
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in seen["before"].items())
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    # the last checkpoint (end of epoch 1) is finite and no finished-run file was written
    ck = load_checkpoint(tmp_path / "ck" / "run-0.ckpt")
    assert ck["fmadapt"]["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in ck["state_dict"].values() if t.is_floating_point())
    assert not (tmp_path / "ck" / "run-0.done.ckpt").exists()


def test_real_divergence_is_caught_by_the_real_checks(data):
    # no mocking: an absurd learning rate makes the loss or the gradients non-finite within a few steps
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=4, progress=False,
                          head_init="random", lr=1e30, head_lr=1e30, optimizer="sgd", patience=10)
    with pytest.raises(TrainingDiverged, match="non-finite|became (nan|inf)"):
        clf.fit(data)


def test_cli_reports_divergence_and_writes_no_model(data, tmp_path):
    out = tmp_path / "m"
    r = CliRunner().invoke(app, ["fit", str(data), "--out", str(out), "--backbone", "tiny-cnn", "--strategy",
                                 "finetune", "--epochs", "2", "--batch-size", "4", "--lr", "1e30", "--optimizer",
                                 "sgd", "--set", "head_lr=1e30", "--set", "head_init=random", "--report", "off"])
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and ("non-finite" in r.output or "became" in r.output)
    assert "Traceback" not in r.output
    assert not (out / "model.safetensors").exists()
