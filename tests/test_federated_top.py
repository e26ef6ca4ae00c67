"""Federated fine-tuning and LoRA (strategies federated-finetune / federated-lora, `fmadapt federate --strategy
finetune|lora`; fmadapt/federated/suffix.py): the cut below the top blocks, what trains and travels, local training,
refusals, and whole federations in Flower's simulation engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fmadapt.errors import ConfigError
from fmadapt.federated.config import FederatedConfig


def _tiny_bert():
    from conftest import tiny_bert

    return tiny_bert()


def _batches(bb, prefix, texts, labels):
    from fmadapt.adapt.cached import _activations
    from fmadapt.data.examples import Examples

    ex = Examples(inputs=list(texts), labels=[str(v) for v in labels], ids=[str(i) for i in range(len(texts))],
                  modality="text")
    return _activations(bb, prefix, ex, [int(v) for v in labels], 8, 0)


def test_the_cut_trains_only_the_top_blocks_or_their_adapters_and_the_head():
    from fmadapt.adapt.cached import split_is_exact
    from fmadapt.data.examples import Examples
    from fmadapt.federated.suffix import build, get_arrays, set_arrays, trainable_names

    texts = ["a good film", "a bad film", "truly lovely and long enough", "dull"]
    ex = Examples(inputs=texts, labels=["p", "n", "p", "n"], ids=["0", "1", "2", "3"], modality="text")
    bb = _tiny_bert()
    prefix, trained, spec = build(bb, 1, None, 0.1, nn.Linear(32, 2))
    names = trainable_names(trained)
    assert spec is None and split_is_exact(bb, prefix, trained.suffix, ex)
    assert names[-2:] == ["head.weight", "head.bias"]
    assert names[:-2] and all(".layers.0." in n for n in names[:-2])  # the last of the 2 layers only
    trains = {id(p) for p in bb.parameters() if p.requires_grad}
    assert trains == {id(p) for p in bb.model.encoder.layer[1].parameters()}
    arrays = get_arrays(trained, names)
    set_arrays(trained, names, [a + 1 for a in arrays])
    assert all(np.allclose(a + 1, b) for a, b in zip(arrays, get_arrays(trained, names), strict=True))

    bb = _tiny_bert()
    prefix, trained, spec = build(bb, 1, {"r": 4, "alpha": 8, "dropout": 0.0, "leaves": None}, 0.0, nn.Linear(32, 2))
    names = trainable_names(trained)
    # the adapters sit in the top layer's attention only, named in full (so that a model directory reloads them there)
    assert spec["targets"] == ["encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"]
    assert bb.adapter["targets"] == spec["targets"]
    assert all("lora_" in n for n in names[:-2]) and len(names) == 4 + 2
    assert split_is_exact(bb, prefix, trained.suffix, ex)  # (adapters start at zero: the features are unchanged)


def test_local_training_moves_the_trained_tensors_and_the_proximal_term_holds_them():
    from fmadapt.federated.suffix import build, get_arrays, local_train, set_arrays, trainable_names

    torch.manual_seed(0)
    bb = _tiny_bert()
    prefix, trained, _ = build(bb, 1, None, 0.0, nn.Linear(32, 2))
    names = trainable_names(trained)
    texts = [f"the film was {w}" for w in ("great", "awful") * 16]
    acts = _batches(bb, prefix, texts, [0, 1] * 16)
    batches = [(a, y) for a, y, _ in acts]
    start = get_arrays(trained, names)
    cfg = {"lr": 1e-3, "head-lr": 1e-2, "weight-decay": 0.0, "local-epochs": 4}
    free, loss = local_train(trained, names, batches, cfg, seed=1)
    assert np.isfinite(loss)
    moved = [float(np.abs(a - b).max()) for a, b in zip(free, start, strict=True)]
    assert min(moved) > 0  # every trained tensor moved, the top block's too
    set_arrays(trained, names, start)
    held, _ = local_train(trained, names, batches, {**cfg, "proximal-mu": 1e4}, seed=1)
    dist = [sum(float(np.linalg.norm(a - b)) for a, b in zip(u, start, strict=True)) for u in (free, held)]
    assert dist[1] < 0.5 * dist[0]
    assert not trained.training  # (left in evaluation mode)


def test_client_files_hold_plain_arrays_and_read_back_as_the_same_batches(tmp_path):
    from fmadapt.federated.suffix import build, client_size, load_client, write_client

    bb = _tiny_bert()
    prefix, _, _ = build(bb, 1, None, 0.0, nn.Linear(32, 2))
    acts = _batches(bb, prefix, ["short", "a much longer text than the other one", "mid length text"], [0, 1, 0])
    assert write_client(tmp_path / "client_0.npz", acts) == 3 and client_size(tmp_path, 0) == 3
    back = load_client(tmp_path, 0)
    assert len(back) == len(acts)
    for (a, y, _), (b, z) in zip(acts, back, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(y, z)
    with np.load(tmp_path / "client_0.npz", allow_pickle=False) as f:  # (no object arrays: nothing to unpickle)
        assert all(f[k].dtype != object for k in f.files)


def test_what_federated_fine_tuning_does_not_do_yet_is_refused_before_any_data_is_read(tmp_path):
    from typer.testing import CliRunner

    from fmadapt import TextClassifier
    from fmadapt.cli import app

    for opts, what in (({"dp_epsilon": 8.0}, "differential privacy"), ({"secure": True}, "secure aggregation"),
                       ({"aggregation": "fedadam"}, "fedadam"), ({"superlink": "127.0.0.1:9"}, "SuperLink")):
        with pytest.raises(ConfigError, match=what):
            FederatedConfig.from_dict(opts).check_top("federated-lora")
    with pytest.raises(ConfigError, match="unfreeze"):
        FederatedConfig.from_dict({"unfreeze": 0})
    with pytest.raises(ConfigError, match="'federated-finetune'"):
        TextClassifier(backbone="tiny-bert", strategy="federated-finetune", task="regression").fit("nothing.csv")
    runner = CliRunner()
    r = runner.invoke(app, ["federate", "nothing.csv", "--out", str(tmp_path / "m"), "--strategy", "finetune",
                            "--dp", "epsilon=8"])
    assert r.exit_code == 2 and "differential privacy" in r.output and not (tmp_path / "m").exists()
    r = runner.invoke(app, ["federate", "nothing.csv", "--out", str(tmp_path / "m"), "--strategy", "progressive"])
    assert r.exit_code == 2 and "probe, finetune or lora" in r.output


@pytest.mark.integration  # (Flower's simulation engine runs the clients in Ray worker processes)
def test_federated_fine_tuning_trains_the_top_block_only_and_saves_an_ordinary_model(tmp_path):
    pytest.importorskip("ray")
    from conftest import text_frame
    from fmadapt import TextClassifier

    df = text_frame(40)
    clf = TextClassifier(backbone="tiny-bert", strategy="federated-finetune", extra={"federated": {
        "clients": 4, "rounds": 2, "head_rounds": 2, "unfreeze": 1, "partition": "dirichlet:1.0",
        "aggregation": "median", "attacks": ["nan:3"], "min_clients": 2}})
    clf.fit(df)
    fed = clf.history_["federation"]
    assert [r["round"] for r in fed["head"]["rounds"]] == [1, 2]  # the head's warm-up: the federated probe
    assert fed["statistics_round"]["from"].startswith("none")
    for r in fed["rounds"]:  # every sampled client got and sent exactly the trained tensors
        assert r["rejected"] == {"3": "NaN/Inf"} and r["used"] == 3
        assert r["bytes_down"] == 4 * fed["trainable_bytes"] and r["bytes_up"] == 4 * fed["trainable_bytes"]
    assert clf.metrics_["val"]["accuracy"] >= 0.75
    # the bottom layer is the backbone's own, the top one was trained
    before, after = _tiny_bert().model.encoder.layer, clf.model_.backbone.model.encoder.layer
    assert all(torch.equal(p, q) for p, q in zip(before[0].parameters(), after[0].parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(before[1].parameters(), after[1].parameters(), strict=True))
    clf.save_pretrained(tmp_path / "m")
    again = TextClassifier.from_pretrained(tmp_path / "m")
    texts = df["text"].tolist()[:8]
    assert np.allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["strategy"] == "federated-finetune"
    assert "after 2 rounds of the federated probe" in (tmp_path / "m" / "README.md").read_text()
    assert "head warm-up" in (tmp_path / "m" / "report.html").read_text()


@pytest.mark.integration
def test_federated_lora_on_images_sends_adapters_and_head_only(tmp_path, image_folder):
    pytest.importorskip("ray")
    from fmadapt import ImageClassifier

    clf = ImageClassifier(backbone="tiny-cnn", strategy="federated-lora", extra={"federated": {
        "clients": 3, "rounds": 2, "head_rounds": 0}})
    clf.fit(str(image_folder))
    fed = clf.history_["federation"]
    adapters = sum(p.numel() for n, p in clf.model_.backbone.named_parameters() if "lora_" in n)
    head = sum(p.numel() for p in clf.model_.head.parameters())
    assert adapters > 0 and fed["trainable_bytes"] == 4 * (adapters + head)
    assert fed["head"] == {"rounds": 0} and fed["adapter"]["targets"]
    assert all(r["used"] >= 2 for r in fed["rounds"])
    clf.save_pretrained(tmp_path / "m")
    again = ImageClassifier.from_pretrained(tmp_path / "m")
    files = sorted(str(p) for p in image_folder.rglob("*.png"))[:6]
    assert np.allclose(again.predict_proba(files), clf.predict_proba(files), atol=1e-5)
