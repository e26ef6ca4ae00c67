"""strategy "lora": adapters train, pretrained weights do not; the artifact holds head + adapters."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import text_frame
from fmadapt import ConfigError, ImageClassifier, TextClassifier, load_model
from fmadapt.backbones import create_backbone


def test_lora_trains_only_adapters_and_head_and_reloads_identically(tmp_path):
    df = text_frame(12)
    base = {k: v.clone() for k, v in create_backbone("tiny-bert").state_dict().items()}
    clf = TextClassifier(backbone="tiny-bert", strategy="lora", epochs=2, batch_size=8, lr=1e-2, seed=0,
                         head_init="random").fit(df)
    h = clf.history_
    assert h["adapter"]["targets"] == ["query", "value"]
    assert 0 < h["adapter_params"] < h["backbone_params"] / 10
    state = clf.model_.backbone.state_dict()
    lora = {k: v for k, v in state.items() if "lora_" in k}
    assert lora and any(float(v.abs().sum()) > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at 0
    for k, v in state.items():  # every pretrained tensor is untouched (names gain a base_layer prefix)
        if "lora_" not in k:
            assert torch.equal(v, base[k.replace(".base_layer", "")]), k
    out = clf.save_pretrained(tmp_path / "m")
    again = load_model(out)
    texts = ["truly wonderful and lovely", "dull, painful and boring", "fine"]
    np.testing.assert_allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(), atol=1e-6)


def test_lora_on_an_identifiable_backbone_saves_only_head_and_adapters(image_folder, tmp_path):
    clf = ImageClassifier(backbone="tiny-cnn-cached", strategy="lora", epochs=1, batch_size=8, lr=5e-2,
                          augment=False, head_init="random").fit(image_folder)
    out = clf.save_pretrained(tmp_path / "m")
    saved = load_file(str(out / "model.safetensors"))
    assert saved and all(k.startswith("head.") or "lora_" in k for k in saved)
    # trained adapters (B starts at zero), so equal predictions below mean they were restored
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)
    again = load_model(out)
    np.testing.assert_allclose(again.predict_proba(image_folder).to_numpy(),
                               clf.predict_proba(image_folder).to_numpy(), atol=1e-5)


def test_unknown_lora_targets_are_refused():
    with pytest.raises(ConfigError, match="lora_targets"):
        TextClassifier(backbone="tiny-bert", strategy="lora", lora_targets="nosuchlayer", epochs=1).fit(text_frame(8))


def test_lora_defaults_to_a_higher_learning_rate_than_finetuning():
    clf = TextClassifier(backbone="tiny-bert", strategy="lora", epochs=1, batch_size=8).fit(text_frame(8))
    body = [g for g in clf.history_["param_groups"] if g["name"] != "head"]
    assert [g["lr"] for g in body] == [5e-4]
