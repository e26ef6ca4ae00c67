"""Crash-safe saves: killed writers, failing renames and a full disk leave the old or the new model, loadable, and
no temporary files once the directory is next opened."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_image_folder
from fmadapt import ImageClassifier, atomic, load_model
from fmadapt.errors import ArtifactError
from fmadapt.train.checkpoint import load_checkpoint, save_checkpoint

TESTS = Path(__file__).resolve().parent

# Saves model A, then B, then A ... into one directory until killed. A and B differ in classes and weights.
WRITER = r"""
import sys
sys.path.insert(0, {tests!r})
import conftest  # tiny backbones
from fmadapt import ImageClassifier
a, b, out = sys.argv[1:4]
fits = [ImageClassifier(backbone="tiny-cnn", progress=False).fit(d) for d in (a, b)]
print("ready", flush=True)
i = 0
while True:
    fits[i % 2].save_pretrained(out, report=False)
    i += 1
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic")
    a = write_image_folder(root / "a", per_class=6, classes=("red", "green"))
    b = write_image_folder(root / "b", per_class=6, classes=("red", "green", "blue"), seed=1)
    return root, a, b


def _classes(out: Path) -> list[str]:
    return load_model(out).classes_


@pytest.mark.integration
def test_kill_9_during_saves_leaves_old_or_new_model_and_no_temporary_files(two_models, tmp_path):
    root, a, b = two_models
    out = tmp_path / "model"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(TESTS)))
    p = subprocess.Popen([sys.executable, str(script), str(a), str(b), str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    rng = random.Random(0)
    seen = set()
    for _ in range(5):
        time.sleep(rng.uniform(0.05, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        if (out / "config.json").exists():
            classes = _classes(out)  # loads (and recovers the directory)
            assert classes in (["green", "red"], ["blue", "green", "red"])
            seen.add(len(classes))
            # weights and labels agree: the head has one row per class
            assert load_model(out).model_.head.weight.shape[0] == len(classes)
        assert atomic.temporary_files(out) == []
        p = subprocess.Popen([sys.executable, str(script), str(a), str(b), str(out)], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    p.kill()
    p.wait()
    assert seen  # at least one kill landed after a first complete save


def test_crash_before_the_commit_point_keeps_the_old_files(tmp_path, monkeypatch):
    atomic.commit(tmp_path, {"a.json": "old-a", "b.json": "old-b"})
    real = atomic._write_tmp
    calls = []

    def failing(path, content):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # dies while staging the second file
        return real(path, content)

    monkeypatch.setattr(atomic, "_write_tmp", failing)
    with pytest.raises(KeyboardInterrupt):
        atomic.commit(tmp_path, {"a.json": "new-a", "b.json": "new-b"})
    assert (tmp_path / "a.json").read_text() == "old-a" and (tmp_path / "b.json").read_text() == "old-b"
    assert atomic.temporary_files(tmp_path) == []


def test_crash_after_the_commit_point_is_finished_by_the_next_reader(tmp_path, monkeypatch):
    atomic.commit(tmp_path, {"a.json": "old-a", "b.json": "old-b", "c.json": "old-c"})
    real = os.replace
    moved = []

    def dying(src, dst):
        if Path(dst).name in ("a.json", "b.json", "c.json"):
            if moved:
                raise SystemExit("killed between two renames")
            moved.append(dst)
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", dying)
    with pytest.raises(SystemExit):
        atomic.commit(tmp_path, {"a.json": "new-a", "b.json": "new-b", "c.json": "new-c"}, remove=["gone.json"])
    monkeypatch.setattr(atomic.os, "replace", real)
    # mixed on disk right now; the journal says what to finish
    assert atomic.temporary_files(tmp_path)
    atomic.recover(tmp_path)
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.json", "c.json")] == ["new-a", "new-b", "new-c"]
    assert atomic.temporary_files(tmp_path) == []


def test_temporary_files_of_a_live_writer_are_left_alone(tmp_path):
    mine = tmp_path / f".x{atomic.TMP_MARK}{os.getppid()}-abcd"  # the parent process is alive
    dead = tmp_path / f".y{atomic.TMP_MARK}999999999-abcd"
    mine.write_text("in progress")
    dead.write_text("abandoned")
    atomic.recover(tmp_path)
    assert mine.exists() and not dead.exists()


class _FullDisk:
    """open() whose files fail like a full disk after `room` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path, mode="r", *a, **kw):
        f = open(path, mode, *a, **kw)  # noqa: SIM115
        if "w" not in mode:
            return f
        disk = self

        class Writer:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                if len(data) > disk.room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                disk.room -= len(data)
                return f.write(data)

            def __getattr__(self, name):
                return getattr(f, name)

        return Writer()


def test_disk_full_during_a_model_save_reports_and_keeps_the_previous_model(two_models, tmp_path, monkeypatch):
    root, a, b = two_models
    out = tmp_path / "model"
    ImageClassifier(backbone="tiny-cnn", progress=False).fit(a).save_pretrained(out, report=False)
    before = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    clf_b = ImageClassifier(backbone="tiny-cnn", progress=False).fit(b)
    monkeypatch.setattr(atomic, "open", _FullDisk(room=2000), raising=False)
    with pytest.raises(ArtifactError, match="disk is full") as err:
        clf_b.save_pretrained(out, report=False)
    assert "unchanged" in str(err.value)
    monkeypatch.undo()
    assert _classes(out) == ["green", "red"]
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == before
    assert atomic.temporary_files(out) == []


def test_disk_full_during_training_keeps_the_last_checkpoint_usable(tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "img", per_class=8)
    ck = tmp_path / "ck"
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=4, progress=False,
                          head_init="random", patience=10)
    from fmadapt.train import checkpoint as ckmod

    real = ckmod.write_file
    saves = []

    def second_save_fails(path, content):
        saves.append(path)
        if len(saves) == 2:  # the end of epoch 2
            monkeypatch.setattr(atomic, "open", _FullDisk(room=0), raising=False)
        try:
            return real(path, content)
        finally:
            monkeypatch.setattr(atomic, "open", open, raising=False)

    monkeypatch.setattr(ckmod, "write_file", second_save_fails)
    with pytest.raises(ArtifactError, match="disk is full"):
        clf.fit(data, checkpoint_dir=ck)
    monkeypatch.undo()
    state = load_checkpoint(ck / "run-0.ckpt")
    assert state["fmadapt"]["epoch"] == 0  # the first epoch's checkpoint, intact
    assert atomic.temporary_files(ck) == []
    # space freed: the run continues from it
    done = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=4, progress=False,
                           head_init="random", patience=10).fit(data, checkpoint_dir=ck, resume=True)
    assert len(done.resumed_) == 1 and done.resumed_[0].startswith("run 0: from epoch 0,")


def test_non_finite_weights_are_never_saved(two_models, tmp_path):
    root, a, _ = two_models
    out = tmp_path / "model"
    clf = ImageClassifier(backbone="tiny-cnn", progress=False).fit(a)
    clf.save_pretrained(out, report=False)
    before = (out / "model.safetensors").read_bytes()
    with torch.no_grad():
        clf.model_.head.weight[0, 0] = float("nan")
    with pytest.raises(ArtifactError, match="non-finite"):
        clf.save_pretrained(out, report=False)
    assert (out / "model.safetensors").read_bytes() == before
    with pytest.raises(ArtifactError, match="non-finite"):
        save_checkpoint({"state_dict": {"w": torch.tensor([float("inf")])}}, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


def test_checkpoint_round_trip_keeps_every_type(tmp_path):
    import numpy as np

    ck = {"state_dict": {"w": torch.randn(3, 2)}, "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}},
          "param_groups": [{"betas": (0.9, 0.999), "params": [0, 1], "lr": 1e-3}]}],
          "rng": (3, np.arange(4, dtype=np.uint32), None), "best": float("inf"), "__odd": {1: "x"}}
    save_checkpoint(ck, tmp_path / "c.ckpt")
    back = load_checkpoint(tmp_path / "c.ckpt")
    assert torch.equal(back["state_dict"]["w"], ck["state_dict"]["w"])
    assert back["optimizer_states"][0]["state"][0]["step"].item() == 3.0
    assert back["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["rng"][0] == 3 and back["rng"][1].tolist() == [0, 1, 2, 3] and back["rng"][2] is None
    assert back["best"] == float("inf") and back["__odd"] == {1: "x"}
    assert json.loads(json.dumps(list(back)))  # plain keys
