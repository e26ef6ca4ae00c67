import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fmadapt.backbones import create_backbone
from fmadapt.runtime import onnx as ort_mod
from fmadapt.runtime import onnx_encoder, weights_fingerprint


@pytest.fixture(autouse=True)
def _fresh_sessions(monkeypatch):
    monkeypatch.setattr(ort_mod, "_SESSIONS", {})


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _image_batch(n, size):
    torch.manual_seed(n + size)
    return torch.randn(n, 3, size, size)


def _text_batch(bb, n):
    texts = ["short", "a much longer sentence with many more tokens than the first one has", "mid size text",
             "你好世界", "x " * 80][:n]
    return bb.collator()(texts)


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-bert"])
def test_onnx_matches_pytorch_at_other_batch_and_input_shapes(name):
    bb = create_backbone(name)
    enc = onnx_encoder(bb)
    assert enc is not None
    batches = ([_image_batch(5, 32), _image_batch(1, 48)] if name == "tiny-cnn"
               else [_text_batch(bb, 5), _text_batch(bb, 1)])
    for batch in batches:
        with torch.no_grad():
            ref = bb(batch).numpy()
        out = enc(batch)
        assert out.shape == ref.shape
        assert _cos(out, ref).min() >= 0.9999


def test_export_is_cached_on_disk(tmp_path, monkeypatch):
    bb = create_backbone("tiny-cnn")
    assert onnx_encoder(bb, cache_root=tmp_path) is not None
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    monkeypatch.setattr(ort_mod, "_SESSIONS", {})
    monkeypatch.setattr(ort_mod, "export_onnx", lambda *a: pytest.fail("exported twice"))
    assert onnx_encoder(bb, cache_root=tmp_path) is not None


def test_changed_weights_get_a_new_fingerprint():
    bb = create_backbone("tiny-cnn")
    before = weights_fingerprint(bb)
    with torch.no_grad():
        next(bb.parameters()).add_(0.1)
    assert weights_fingerprint(bb) != before


def test_export_failure_falls_back_to_pytorch_with_a_warning(monkeypatch, image_folder):
    from fmadapt.data.images import scan_image_folder
    from fmadapt.runtime.features import extract_features

    def boom(*a):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(ort_mod, "export_onnx", boom)
    bb = create_backbone("tiny-cnn")
    ex = scan_image_folder(image_folder).splits["train"]
    with pytest.warns(UserWarning, match="exporter broke"):
        f = extract_features(bb, ex)
    assert np.allclose(f, extract_features(bb, ex, runtime="torch"), atol=1e-6)


def test_parity_failure_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(ort_mod, "_parity", lambda bb, enc: 0.5)
    with pytest.warns(UserWarning, match="disagrees"):
        assert onnx_encoder(create_backbone("tiny-cnn"), cache_root=tmp_path) is None
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "minilm-l6"])
def test_packaged_backbones_onnx_parity(name, tmp_path):
    bb = create_backbone(name)
    batches = ([_image_batch(3, 224), _image_batch(2, 96)] if name == "efficientnet_lite0"
               else [_text_batch(bb, 5), bb.collator()(["今天的新闻标题", "A man is playing a guitar."])])
    for batch in batches:
        if name == "efficientnet_lite0":
            bb.set_image_size(batch.shape[-1])  # TF 'SAME' padding: one export per image size
        enc = onnx_encoder(bb, cache_root=tmp_path)
        assert enc is not None
        with torch.no_grad():
            ref = bb(batch).numpy()
        assert _cos(enc(batch), ref).min() >= 0.9999


def test_one_export_serves_every_image_size(tmp_path):
    bb = create_backbone("tiny-cnn")
    assert ort_mod.static_size(bb) is None  # symmetric padding: height/width stay dynamic
    before = weights_fingerprint(bb)
    bb.set_image_size(64)
    assert weights_fingerprint(bb) == before
    assert onnx_encoder(bb, cache_root=tmp_path) is not None
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def _tf_same_cnn():
    """Like the packaged EfficientNet-Lite0: TensorFlow 'SAME' padding (timm Conv2dSame), tiny."""
    from fmadapt.backbones.vision import timm_backbone

    torch.manual_seed(0)
    bb = timm_backbone("test_efficientnet", pretrained=False, name="tiny-tf-same", pad_type="same")
    bb.cfg.input_size, bb.cfg.crop_pct = 33, 1.0  # odd size: asymmetric pads
    return bb.eval()


def test_tf_same_padding_is_exported_per_image_size_with_identical_outputs(tmp_path):
    bb = _tf_same_cnn()
    assert ort_mod.static_size(bb) == 33
    enc = onnx_encoder(bb, cache_root=tmp_path)
    assert enc is not None and enc.image_size == 33
    import onnx

    ops = {n.op_type for n in onnx.load(enc.path).graph.node}
    assert not ops & {"Shape", "Ceil"}  # the pads are constants, not a per-call subgraph
    for n in (1, 7):
        batch = _image_batch(n, 33)
        with torch.no_grad():
            ref = bb(batch).numpy()
        assert np.abs(enc(batch) - ref).max() < 1e-4
    with pytest.raises(ValueError, match="exported for 33px"):
        enc(_image_batch(2, 48))
    bb.set_image_size(48)  # another size: its own export, equally exact
    enc48 = onnx_encoder(bb, cache_root=tmp_path)
    assert enc48 is not None and enc48.image_size == 48 and enc48.path != enc.path
    batch = _image_batch(3, 48)
    with torch.no_grad():
        ref = bb(batch).numpy()
    assert np.abs(enc48(batch) - ref).max() < 1e-4


def test_int8_text_runtime_is_close_to_fp32_and_cached_separately(monkeypatch):
    from fmadapt.data.cache import FeatureCache
    from fmadapt.data.examples import Examples
    from fmadapt.runtime import int8_encoder
    from fmadapt.runtime.features import extract_features

    bb = create_backbone("tiny-bert")
    bb.cfg.sha256, bb.cfg.pretrained = "1" * 64, True  # identifiable, so features are cached
    enc = int8_encoder(bb)
    assert enc is not None and enc.path.endswith("-int8.onnx")
    texts = ["a short text", "another, rather longer text to encode here", "third"]
    ex = Examples(inputs=texts, labels=None, ids=["0", "1", "2"], modality="text")
    cache = FeatureCache()
    fp32 = extract_features(bb, ex, cache=cache, runtime="torch")
    q = extract_features(bb, ex, cache=cache, runtime="int8")
    assert _cos(q, fp32).min() >= 0.97
    assert not np.array_equal(q, fp32)  # not served from the fp32 cache entry
    assert np.array_equal(extract_features(bb, ex, cache=cache, runtime="int8"), q)


def test_int8_images_are_calibrated_on_the_data_and_cached_separately(image_folder):
    from fmadapt.data.cache import FeatureCache
    from fmadapt.data.images import scan_image_folder
    from fmadapt.runtime.features import extract_features

    bb = _tf_same_cnn()
    bb.cfg.sha256, bb.cfg.pretrained = "2" * 64, True  # identifiable, so features are cached
    ex = scan_image_folder(image_folder).splits["train"]
    cache = FeatureCache()
    fp32 = extract_features(bb, ex, cache=cache, runtime="torch")
    q = extract_features(bb, ex, cache=cache, runtime="int8")
    calibration = bb.int8_calibration
    assert calibration["graph"] == Path(onnx_encoder(bb).path).stem and calibration["ranges"]
    assert _cos(q, fp32).mean() >= 0.98
    assert not np.array_equal(q, fp32)  # an int8 graph ran, and was not served from the fp32 entry
    assert np.array_equal(extract_features(bb, ex, cache=cache, runtime="int8"), q)


def test_int8_images_need_calibration_images():
    from fmadapt import ConfigError
    from fmadapt.runtime import int8_encoder

    with pytest.raises(ConfigError, match="calibration images"):
        int8_encoder(_tf_same_cnn())


def test_int8_image_model_reloads_the_same_int8_graph_without_recalibrating(image_folder, tmp_path, monkeypatch):
    import fmadapt.runtime.features as feats
    from fmadapt import ImageClassifier

    clf = ImageClassifier(backbone="tiny-cnn", runtime="int8", seed=0).fit(image_folder)
    assert clf.model_.backbone.int8_calibration
    before = clf.predict_proba(image_folder)
    out = clf.save_pretrained(tmp_path / "m")
    assert (out / "int8_calibration.json").is_file()
    for f in Path(os.environ["FMADAPT_CACHE"]).rglob("*-int8-*.onnx"):
        f.unlink()  # the int8 graph is rebuilt from the saved ranges alone
    monkeypatch.setattr(ort_mod, "_SESSIONS", {})
    monkeypatch.setattr(feats, "_calibration_pixels", lambda *a: pytest.fail("calibrated again"))
    again = ImageClassifier.from_pretrained(out)
    np.testing.assert_allclose(again.predict_proba(image_folder).to_numpy(), before.to_numpy(), atol=1e-6)


def test_damaged_cached_int8_image_graph_is_quantized_again(image_folder, tmp_path):
    from fmadapt import ImageClassifier

    clf = ImageClassifier(backbone="tiny-cnn", runtime="int8", seed=0).fit(image_folder)
    before = clf.predict_proba(image_folder)
    out = clf.save_pretrained(tmp_path / "m")
    (graph,) = Path(os.environ["FMADAPT_CACHE"]).rglob("*-int8-*.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated, e.g. by a full disk or a partial copy
    ort_mod._SESSIONS.clear()
    with pytest.warns(UserWarning, match="cached ONNX graph unreadable.*quantizing again"):
        again = ImageClassifier.from_pretrained(out).predict_proba(image_folder)
    np.testing.assert_allclose(again.to_numpy(), before.to_numpy(), atol=1e-6)  # int8 again, not fp32
    ort_mod.OnnxEncoder(graph, "image")  # rebuilt in place: loads


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-bert"])
def test_damaged_cached_fp32_graph_is_exported_again(name, tmp_path):
    bb = create_backbone(name)
    path = Path(onnx_encoder(bb, cache_root=tmp_path).path)
    path.write_bytes(path.read_bytes()[:500])
    ort_mod._SESSIONS.clear()
    with pytest.warns(UserWarning, match="cached ONNX graph unreadable.*exporting again"):
        enc = onnx_encoder(bb, cache_root=tmp_path)
    assert enc is not None and enc.path == str(path)  # ONNX Runtime again now, not PyTorch for this run


def test_damaged_cached_int8_text_graph_is_quantized_again():
    from fmadapt.runtime import int8_encoder

    bb = create_backbone("tiny-bert")
    path = Path(int8_encoder(bb).path)
    path.write_bytes(b"not an onnx graph")
    ort_mod._SESSIONS.clear()
    with pytest.warns(UserWarning, match="cached ONNX graph unreadable.*quantizing again"):
        enc = int8_encoder(bb)
    assert enc is not None and enc.path == str(path)  # quantized again, not fp32 for good
    ort_mod._SESSIONS.clear()
    assert int8_encoder(bb).path == str(path)


def test_stale_int8_calibration_is_redone_with_a_warning(image_folder):
    from fmadapt.data.images import scan_image_folder
    from fmadapt.runtime.features import extract_features

    bb = create_backbone("tiny-cnn")
    ex = scan_image_folder(image_folder).splits["train"]
    extract_features(bb, ex, runtime="int8")
    first = bb.int8_calibration
    with torch.no_grad():
        next(bb.parameters()).add_(0.05)  # e.g. fine-tuned after calibration
    with pytest.warns(UserWarning, match="calibrating again"):
        extract_features(bb, ex, runtime="int8")
    assert bb.int8_calibration["graph"] != first["graph"]


def test_fingerprint_memo_sees_in_place_updates_and_reloads():
    bb = create_backbone("tiny-bert")
    a = weights_fingerprint(bb)
    assert weights_fingerprint(bb) == a  # memoised
    with torch.no_grad():
        bb.model.encoder.layer[0].output.dense.weight.mul_(1.01)  # what an optimizer step does
    b = weights_fingerprint(bb)
    assert b != a
    bb.load_state_dict(create_backbone("tiny-bert").state_dict())
    assert weights_fingerprint(bb) == a


@pytest.mark.parametrize("side", ["right", "left"])
def test_text_features_tokenize_once_and_pad_as_the_collator_does(side, monkeypatch):
    from fmadapt.data.examples import Examples
    from fmadapt.runtime import features as F

    bb = create_backbone("tiny-bert")
    monkeypatch.setattr(bb.tokenizer, "padding_side", side)
    texts = ["the film was great", "", "Ünïcödé façade — 東京 🎬!", " ".join(["a long review"] * 60), "short", "x"]
    ids = F._token_ids(bb, texts)
    assert ids is not None and [len(i) for i in ids] == F.token_counts(bb, texts)
    for part in (texts, texts[:2], texts[4:]):  # (padded to each batch's longest; the long text is truncated)
        got = next(iter(F._IdBatches(F._token_ids(bb, part), 64, bb.tokenizer)))
        ref = bb.collator()(part)
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    calls = []
    real = type(bb.tokenizer).__call__
    monkeypatch.setattr(type(bb.tokenizer), "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    ex = Examples(inputs=texts, labels=None, ids=[str(i) for i in range(len(texts))], source="x", modality="text")
    feats = F.extract_features(bb, ex, batch_size=4, runtime="torch")
    assert len(calls) == 1  # (once for the counts and the batches: before, once more per batch)
    if side == "right":  # (left padding moves a BERT's positions: its features depend on the batch either way)
        bb.eval()
        with torch.no_grad():
            np.testing.assert_allclose(feats, bb(bb.collator()(texts)).numpy(), atol=1e-5)  # (the inputs' order)
