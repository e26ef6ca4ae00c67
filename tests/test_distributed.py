"""Scale-out goes through Lightning: 2 CPU processes, gloo over loopback, the normal artifact at the end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import timm_dir, write_image_folder

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("dist", ["ddp", "ddp_fork"])
def test_finetune_on_two_cpu_processes_writes_the_normal_artifact(tmp_path, dist):
    data = write_image_folder(tmp_path / "img", per_class=10)
    backbone = timm_dir(tmp_path / "net")
    out = tmp_path / "m"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + (os.getpid() % 1000)),
           "PL_DISABLE_FORK": "0"}
    cmd = [sys.executable, "-m", "fmadapt", "fit", str(data), "--out", str(out), "--backbone", str(backbone),
           "--strategy", "finetune", "--epochs", "2", "--batch-size", "4", "--image-size", "32",
           "--accelerator", "cpu", "--devices", "2", "--dist-strategy", dist, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # one JSON object, written once (rank 0)
    assert r.stdout.count('"model_dir"') == 1
    assert summary["history"]["world_size"] == 2 and summary["history"]["epochs_run"] >= 1
    for f in ("config.json", "model.safetensors", "labels.json", "backbone.json", "metrics.json", "README.md"):
        assert (out / f).is_file()
    from fmadapt import load_model

    clf = load_model(out)
    p = clf.predict_proba(data / "red").to_numpy()
    assert p.shape == (10, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    # the weights are trained ones, not the initial checkpoint
    from safetensors.torch import load_file

    init = load_file(str(backbone / "model.safetensors"))
    trained = clf.model_.backbone.model.state_dict()
    assert any(not torch.equal(init[k], trained[k]) for k in init if k.endswith("weight"))
