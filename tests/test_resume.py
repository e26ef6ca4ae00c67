"""Checkpoints and exact resume: `fmadapt fit` killed (-9) or stopped (SIGTERM) in its second epoch and resumed
ends with the same weights (file hash) and metrics as an uninterrupted run; same seed, same result."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import timm_dir, write_image_folder
from fmadapt import ImageClassifier
from fmadapt.cli import app
from fmadapt.errors import ConfigError
from fmadapt.train.checkpoint import checkpoint_info, load_checkpoint

EPOCHS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    # 360 images, batch 4: ~70 steps an epoch, long enough to land a signal inside the second one
    data = write_image_folder(root / "img", per_class=120)
    return root, data, timm_dir(root / "net")


def _cmd(data: Path, net: Path, out: Path) -> list[str]:
    # random head (no probe): every step changes the weights, so any divergence shows in the hash
    return [sys.executable, "-m", "fmadapt", "fit", str(data), "--out", str(out), "--backbone", str(net),
            "--strategy", "finetune", "--epochs", str(EPOCHS), "--batch-size", "4", "--image-size", "32",
            "--report", "off", "--no-cache", "--set", "head_init=random", "--set", "patience=10", "--json"]


def _weights_hash(out: Path) -> str:
    return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()


def _metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())["val"]
    return {k: m[k] for k in ("accuracy", "macro_f1", "ece", "log_loss") if k in m}


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, data, net = setup
    out = root / "whole"
    r = subprocess.run(_cmd(data, net, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "checkpoints").exists()  # dropped once the model directory was written
    return _weights_hash(out), _metrics(out)


def _interrupt(cmd: list[str], ckpt: Path, sig: int, delay: float) -> subprocess.CompletedProcess:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ckpt.is_file():  # the end of the first epoch
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.02)
    time.sleep(delay)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.integration
def test_kill_9_in_epoch_2_then_resume_equals_uninterrupted(setup, uninterrupted):
    root, data, net = setup
    out = root / "killed"
    ckpt = out / "checkpoints" / "run-0.ckpt"
    r = _interrupt(_cmd(data, net, out), ckpt, signal.SIGKILL, 0.3)
    assert r.returncode == -signal.SIGKILL
    info = checkpoint_info(ckpt)
    # the kill landed in epoch 2: the newest checkpoint is still the end of epoch 1, no model was written
    assert info["kind"] == "epoch-end" and info["epoch"] == 0
    assert not (out / "model.safetensors").exists()
    # a fresh start into the same directory would lose the run's progress: refused
    again = subprocess.run(_cmd(data, net, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run([sys.executable, "-m", "fmadapt", "fit", "--resume", str(out), "--json"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["resumed"] == ["run 0: from epoch 0, batch 72"]
    assert (_weights_hash(out), _metrics(out)) == uninterrupted
    assert not (out / "checkpoints").exists()


@pytest.mark.integration
def test_sigterm_saves_mid_epoch_exits_143_and_resume_equals_uninterrupted(setup, uninterrupted):
    root, data, net = setup
    out = root / "termed"
    ckpt = out / "checkpoints" / "run-0.ckpt"
    r = _interrupt(_cmd(data, net, out), ckpt, signal.SIGTERM, 0.3)
    assert r.returncode == 143, r.stderr[-3000:]
    assert "SIGTERM" in r.stderr and "--resume" in r.stderr
    info = checkpoint_info(ckpt)
    assert info["kind"] == "sigterm" and info["epoch"] == 1 and 0 < info["batch"] < 72  # mid-epoch state
    # resuming with the full command line again (not only --resume) is accepted when it is the same
    resumed = subprocess.run([*_cmd(data, net, out), "--resume", str(out)], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (_weights_hash(out), _metrics(out)) == uninterrupted


def _fit(data: Path, **kw) -> ImageClassifier:
    opts = dict(epochs=2, batch_size=4, image_size=32, head_init="random", cache=False, progress=False)
    return ImageClassifier(backbone="tiny-cnn", strategy="finetune", **{**opts, **kw})


def _state_hash(clf: ImageClassifier) -> str:
    h = hashlib.sha256()
    for k, v in sorted(clf.model_.state_dict().items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def test_same_seed_same_weights_with_and_without_workers(tmp_path):
    data = write_image_folder(tmp_path / "img", per_class=12)
    a = _fit(data, num_workers=0).fit(data)
    b = _fit(data, num_workers=2).fit(data)
    c = _fit(data, num_workers=0, seed=1).fit(data)
    assert _state_hash(a) == _state_hash(b)
    assert a.metrics_["val"]["accuracy"] == b.metrics_["val"]["accuracy"]
    assert _state_hash(a) != _state_hash(c)  # the seed matters: the comparison above can fail


def test_resume_refuses_other_options_and_keeps_checkpoints_when_asked(tmp_path):
    data = write_image_folder(tmp_path / "img", per_class=8)
    ck = tmp_path / "ck"
    handler = signal.getsignal(signal.SIGTERM)
    _fit(data).fit(data, checkpoint_dir=ck, keep_checkpoints=True)
    assert signal.getsignal(signal.SIGTERM) is handler  # SIGTERM works as before once training is over
    done = ck / "run-0.done.ckpt"
    assert done.is_file() and not (ck / "run-0.ckpt").exists()
    assert all(torch.isfinite(t).all() for t in load_checkpoint(done)["state_dict"].values()
               if t.is_floating_point())
    with pytest.raises(ConfigError, match="option epochs"):
        _fit(data, epochs=3).fit(data, checkpoint_dir=ck, resume=True)
    # a finished run resumes without training again, to the same weights
    first = _fit(data).fit(data, checkpoint_dir=ck, resume=True, keep_checkpoints=True)
    assert first.resumed_ == ["run 0: already finished"]
    assert _state_hash(first) == _state_hash(_fit(data).fit(data))


def test_resume_without_a_run_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(app, ["fit", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no unfinished fit" in r.output


def test_resume_with_other_arguments_is_refused(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "command.json").write_text(json.dumps(
        {"params": {"data": str(tmp_path / "a"), "out": str(out), "epochs": 3}, "cwd": str(tmp_path)}))
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "a"), "--out", str(out), "--epochs", "5",
                                 "--resume", str(out)])
    assert r.exit_code == 2 and "epochs" in r.output and os.getcwd() != str(tmp_path)


@pytest.mark.parametrize("kind, options, sig", [
    ("image", {"strategy": "finetune", "unfreeze": 1, "augment": False}, signal.SIGTERM),  # cached activations
    ("image", {"strategy": "progressive"}, signal.SIGINT),  # Ctrl-C: the same, exit code 130
    ("text", {"strategy": "finetune", "unfreeze": 1}, signal.SIGTERM),  # cached, pre-bucketed text batches
    ("text", {"strategy": "lora"}, signal.SIGTERM),
    ("text", {"strategy": "finetune", "group_by_length": "on"}, signal.SIGTERM),  # length-grouped batches
    ("text", {"strategy": "finetune", "ema": 0.9}, signal.SIGTERM),  # the weight average is in the checkpoint
], ids=["image-cached", "image-progressive-ctrl-c", "text-cached", "text-lora", "text-grouped", "text-ema"])
def test_signal_mid_epoch_then_resume_equals_uninterrupted_for_each_training_path(tmp_path, monkeypatch, kind,
                                                                                    options, sig):
    from conftest import text_frame
    from fmadapt import TextClassifier
    from fmadapt.errors import TrainingInterrupted
    from fmadapt.train import module as train_module

    if kind == "image":
        data = write_image_folder(tmp_path / "img", per_class=10)
        make = lambda: ImageClassifier(backbone="tiny-cnn", epochs=3, batch_size=4, image_size=32,  # noqa: E731
                                       head_init="random", patience=10, cache=False, progress=False, **options)
    else:
        data = tmp_path / "t.csv"
        text_frame(n_per_class=12).to_csv(data, index=False)
        make = lambda: TextClassifier(backbone="tiny-bert", epochs=3, batch_size=4, head_init="random",  # noqa: E731
                                      patience=10, cache=False, progress=False, **options)
    whole = make().fit(data)
    real = train_module.ClassifierModule.training_step

    def signalled(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), sig)  # our handler only records it: the step finishes
        return real(self, batch, batch_idx)

    monkeypatch.setattr(train_module.ClassifierModule, "training_step", signalled)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        make().fit(data, checkpoint_dir=tmp_path / "ck")
    assert err.value.exit_code == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    monkeypatch.undo()
    info = checkpoint_info(tmp_path / "ck" / "run-0.ckpt")
    assert (info["kind"], info["epoch"], info["batch"]) == (sig.name.lower(), 1, 2)
    resumed = make().fit(data, checkpoint_dir=tmp_path / "ck", resume=True)
    assert resumed.resumed_ == ["run 0: from epoch 1, batch 2"]
    assert _state_hash(resumed) == _state_hash(whole)
    assert resumed.history_["epochs_run"] == whole.history_["epochs_run"] == 3


def test_a_second_ctrl_c_stops_at_once_from_the_last_checkpoint(tmp_path, monkeypatch):
    from fmadapt.train import module as train_module

    data = write_image_folder(tmp_path / "img", per_class=10)
    real = train_module.ClassifierModule.training_step

    def twice(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # impatient: the second one must not wait for the batch end
        return real(self, batch, batch_idx)

    monkeypatch.setattr(train_module.ClassifierModule, "training_step", twice)
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns KeyboardInterrupt into exit(1)
            _fit(data, epochs=3).fit(data, checkpoint_dir=tmp_path / "ck")
    finally:
        signal.signal(signal.SIGINT, before)  # Lightning ignores further Ctrl-C while it shuts down
    info = checkpoint_info(tmp_path / "ck" / "run-0.ckpt")
    assert (info["kind"], info["epoch"]) == ("epoch-end", 0)  # nothing half-saved: the epoch-1 checkpoint


@pytest.mark.integration
@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_a_multilabel_or_regression_fine_tune_resumes_to_the_same_weights(tmp_path, monkeypatch, task):
    from conftest import interrupt_then_resume
    from fmadapt import TextClassifier
    from test_multilabel_fit import news
    from test_regression_fit import reviews

    data = tmp_path / "t.csv"
    (news(24, 0) if task == "multilabel" else reviews(24, 0)).to_csv(data, index=False)
    make = lambda: TextClassifier(backbone="tiny-bert", task=task, strategy="finetune", epochs=3,  # noqa: E731
                                  batch_size=4, head_init="random", cache=False, progress=False)
    whole = make().fit(data)
    resumed = interrupt_then_resume(make, data, tmp_path / "ck", monkeypatch)
    assert _state_hash(resumed) == _state_hash(whole)
    # (and what the task keeps besides the weights, tuned on the same validation predictions)
    if task == "multilabel":
        np.testing.assert_array_equal(resumed.thresholds_, whole.thresholds_)
    else:
        assert resumed.interval_ == whole.interval_
