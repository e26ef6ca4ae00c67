"""Tiny randomly initialised backbones and small synthetic datasets, so unit tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fmadapt.backbones import register_backbone
from fmadapt.backbones.base import BackboneCfg
from fmadapt.backbones.text import HFTextBackbone
from fmadapt.backbones.vision import timm_backbone

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: the lanes besides the fast one (pyproject.toml's markers): `pytest -m unit` runs the tests with none of them
LANES = ("slow", "integration", "distributed")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(m) for m in LANES):
            item.add_marker(pytest.mark.unit)


@register_backbone("tiny-cnn", "image", "test only: timm test_efficientnet, random init, 32 px")
def tiny_cnn(pretrained: bool = True):
    torch.manual_seed(0)
    bb = timm_backbone("test_efficientnet", pretrained=False, name="tiny-cnn")
    bb.cfg.input_size, bb.cfg.crop_pct = 32, 1.0
    return bb


@register_backbone("tiny-cnn-cached", "image", "test only: like tiny-cnn but identifiable, so features cache")
def tiny_cnn_cached(pretrained: bool = True):
    bb = tiny_cnn()
    bb.cfg.name, bb.cfg.sha256, bb.cfg.pretrained = "tiny-cnn-cached", "0" * 64, True
    return bb


@register_backbone("tiny-bert", "text", "test only: 2-layer BERT, hidden 32, MiniLM's tokenizer")
def tiny_bert(pretrained: bool = True):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fmadapt.backbones.packaged import minilm_l6_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_l6_path()))
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    cfg = BackboneCfg(name="tiny-bert", modality="text", embed_dim=32, pretrained=False, max_tokens=64)
    return HFTextBackbone(model.eval(), tok, cfg)


@register_backbone("tiny-bert-cached", "text", "test only: like tiny-bert but identifiable, so features cache")
def tiny_bert_cached(pretrained: bool = True):
    bb = tiny_bert()
    bb.cfg.name, bb.cfg.sha256, bb.cfg.pretrained = "tiny-bert-cached", "1" * 64 if pretrained else "", pretrained
    return bb


def timm_dir(path: Path) -> Path:
    """A timm hub-style backbone directory (config.json + model.safetensors) of test_efficientnet, random init:
    what `--backbone DIR` loads in subprocesses, where the registered tiny backbones do not exist."""
    import json

    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    path.mkdir()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"architecture": "test_efficientnet", "num_classes": 0}))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FMADAPT_CACHE", str(tmp_path_factory.mktemp("cache")))


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_image(color, seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(color)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255)
    return Image.fromarray(a.astype(np.uint8), mode="RGB")


def write_image_folder(root: Path, per_class: int = 12, classes=("red", "green", "blue"), seed: int = 0) -> Path:
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(COLORS[c], seed * 1000 + ci * 100 + i).save(d / f"{c}_{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


POS = ["great", "wonderful", "excellent", "lovely", "superb", "brilliant", "delightful", "amazing"]
NEG = ["awful", "terrible", "boring", "dreadful", "horrible", "dull", "painful", "bad"]


def text_frame(n_per_class: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for lab, words in (("pos", POS), ("neg", NEG)):
        for _ in range(n_per_class):
            w = rng.choice(words, size=3)
            rows.append({"text": f"the film was {w[0]} and {w[1]}, truly {w[2]}", "label": lab})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture
def text_csv(tmp_path) -> Path:
    p = tmp_path / "reviews.csv"
    text_frame().to_csv(p, index=False)
    return p


def interrupt_then_resume(make, data, ckdir, monkeypatch):
    """Fit `make()` on `data` with checkpoints in `ckdir`, SIGTERM arriving in epoch 1 at batch 1 (the fit stops with
    TrainingInterrupted), then resume it; the resumed estimator (checked to have resumed from that batch)."""
    import os
    import signal

    from fmadapt.errors import TrainingInterrupted
    from fmadapt.train import module as train_module

    real = train_module.ClassifierModule.training_step

    def signalled(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(train_module.ClassifierModule, "training_step", signalled)
    with pytest.raises(TrainingInterrupted):
        make().fit(data, checkpoint_dir=ckdir)
    monkeypatch.undo()
    resumed = make().fit(data, checkpoint_dir=ckdir, resume=True)
    assert resumed.resumed_ == ["run 0: from epoch 1, batch 2"]
    return resumed


#: what an exported directory must predict without: a process that imports predict.py refuses these packages
NOT_IN_AN_EXPORT = ("torch", "fmadapt", "transformers", "lightning", "timm", "sklearn")


def predict_without_torch(export_dir: Path, inputs: list[str], cwd: Path | None = None) -> list[dict]:
    """`python predict.py EXPORT INPUT...` in a fresh process that cannot import NOT_IN_AN_EXPORT: its JSON rows."""
    import json
    import subprocess
    import sys

    blocker = (
        "import sys, json\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(NOT_IN_AN_EXPORT)!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(export_dir)!r})\n"
        "from predict import main\n"
        f"main([{str(export_dir)!r}, *json.loads(sys.argv[1])])\n")
    r = subprocess.run([sys.executable, "-c", blocker, json.dumps(inputs)], capture_output=True, text=True, cwd=cwd,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]
