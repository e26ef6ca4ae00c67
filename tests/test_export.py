"""`fmadapt export` (issue 24): the whole model as one ONNX graph that predicts as the model does, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import predict_without_torch, text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier, load_model
from fmadapt.compress import export as ex
from fmadapt.compress import quantize
from fmadapt.errors import ConfigError, ExportError

NEW_TEXTS = ["a wonderful, moving film", "boring and far too long", "", "这部电影很好看", "ok " * 200]


def _exported(root: Path):
    sys.path.insert(0, str(root))
    try:
        sys.modules.pop("predict", None)
        from predict import ExportedModel  # the copy inside the exported directory, not fmadapt's module

        assert "fmadapt" not in str(sys.modules["predict"].__file__)
        return ExportedModel
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, seed=0, progress=False)
    clf.fit(text_frame(16))
    clf.temperature_ = 1.7  # a calibration temperature must be in the graph
    return clf.save_pretrained(root / "model", report=False)


def test_a_fine_tuned_text_model_exports_and_predicts_as_the_model(text_model, tmp_path):
    meta = ex.export_model(text_model, tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"model.onnx", "export.json", "tokenizer.json", "predict.py",
                                               "exported_inputs.py", "README.md", "server.py", "request_inputs.py",
                                               "requirements.txt", "Dockerfile"}
    readme = (out / "README.md").read_text()  # (it names every file it ships but itself)
    assert all(f"`{p.name}`" in readme for p in out.iterdir() if p.name != "README.md")
    assert "onnxruntime==" in (out / "requirements.txt").read_text() and "torch" not in (out / "requirements.txt"
                                                                                         ).read_text()
    saved = json.loads((out / "export.json").read_text())
    assert saved == json.loads(json.dumps(meta)) and saved["calibration"]["temperature"] == 1.7
    assert set(saved["inputs"]) == {"input_ids", "attention_mask"} and "preprocessing" not in saved
    assert saved["parity"]["fp32"]["graph"]["max_abs_diff"] <= ex.FP32_MAX_ABS_DIFF
    model = load_model(text_model, cache=False)
    exported = _exported(out)(out)
    got = exported.predict_proba(NEW_TEXTS)
    want = model.predict_proba(NEW_TEXTS).to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert exported.predict(NEW_TEXTS) == list(model.predict(NEW_TEXTS))
    # truncation is in tokenizer.json: a text far over max_tokens runs at the backbone's length
    assert exported.text_feeds(["ok " * 200])["input_ids"].shape[1] == model.members_[0].model.backbone.cfg.max_tokens


def test_an_image_ensemble_with_flips_exports_with_an_int8_graph(tmp_path):
    data = write_image_folder(tmp_path / "imgs", per_class=8)
    clf = ImageClassifier(ensemble_backbones="tiny-cnn,tiny-cnn-cached", strategy="probe", tta=True,
                          progress=False).fit(data)
    assert len(clf.members_) == 2
    model_dir = clf.save_pretrained(tmp_path / "model", report=False)
    meta = ex.export_model(model_dir, tmp_path / "out", int8=True)
    assert meta["graphs"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"} and meta["default_graph"] == "int8"
    assert meta["members"] == 2 and meta["parity"]["inputs"].startswith("the val images")
    assert meta["parity"]["int8"]["same_class"] >= quantize.INT8_MIN_AGREEMENT
    Exported = _exported(tmp_path / "out")
    images = sorted(str(p) for p in (data).rglob("*.png"))[:10]
    want = clf.predict_proba(images).to_numpy()
    np.testing.assert_allclose(Exported(tmp_path / "out", "fp32").predict_proba(images), want, atol=1e-4)
    assert Exported(tmp_path / "out").precision == "int8"
    # a large JPEG is decoded at a reduced scale (draft) as fmadapt decodes it, then resized by Pillow
    from PIL import Image

    yy, xx = np.mgrid[0:480, 0:640]
    photo = np.stack([xx * 255 // 640, yy * 255 // 480, ((xx // 3 + yy // 3) % 2) * 255], -1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=90)
    big = str(tmp_path / "big.jpg")
    pixels = Exported(tmp_path / "out", "fp32").image_array(big).astype(int)
    want_pixels = ex._graph_pixels(clf.members_[0].model.backbone, [big])[0].astype(int)
    # (decoded in full instead: 0.4 levels apart on average, 4 at most)
    assert np.abs(pixels - want_pixels).mean() < 0.1 and np.abs(pixels - want_pixels).max() <= 2
    got = Exported(tmp_path / "out", "fp32").predict_proba([big])
    np.testing.assert_allclose(got, clf.predict_proba([big]).to_numpy(), atol=2e-3)
    # fmadapt predict reads the export of an image model as it reads the model directory (an unreadable file listed)
    from fmadapt.light_predict import exported_table

    (data / "blue" / "broken.png").write_bytes(b"not a png")
    table, full = exported_table(tmp_path / "out", str(data)), clf.predict_table(str(data))
    assert table["id"].tolist() == full["id"].tolist() and table["error"].notna().sum() == 1
    ok = table["error"].isna()
    assert (table.loc[ok, "pred"] == full.loc[ok, "pred"]).mean() >= 0.9  # (int8 graph: the default)
    # an export without --int8 into the same directory leaves no stale int8 graph behind
    ex.export_model(model_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "model.int8.onnx").exists()
    assert Exported(tmp_path / "out").precision == "fp32"


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_multilabel_thresholds_and_regression_scale_survive_the_export(tmp_path, task):
    from test_multilabel_fit import news
    from test_regression_fit import reviews

    frame = news if task == "multilabel" else reviews
    clf = TextClassifier(backbone="tiny-bert", task=task, progress=False).fit(frame(60, 0))
    model_dir = clf.save_pretrained(tmp_path / "model", report=False)
    ex.export_model(model_dir, tmp_path / "out", data=frame(20, 1))
    exported = _exported(tmp_path / "out")(tmp_path / "out")
    texts = frame(20, 2)["text"].tolist()
    got = exported.predict(texts)
    want = list(clf.predict(texts))
    if task == "regression":
        np.testing.assert_allclose(got, want, rtol=1e-4)
        rows = exported.predictions(texts[:2])
        assert rows[0]["upper"] - rows[0]["lower"] == pytest.approx(2 * clf.interval_halfwidth())
    else:
        assert got == want


def test_what_cannot_be_one_graph_is_refused_naming_why(tmp_path):
    df = text_frame(12)
    df["age"] = np.arange(len(df)) % 7
    clf = TextClassifier(backbone="tiny-bert", features="age", progress=False).fit(df)
    with pytest.raises(ExportError, match="table columns"):
        ex.export_model(clf.save_pretrained(tmp_path / "m", report=False), tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_failed_parity_check_writes_nothing(text_model, tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "FP32_MAX_ABS_DIFF", -1.0)
    with pytest.raises(ExportError, match="disagrees with the model.*not written"):
        ex.export_model(text_model, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.setattr(ex, "FP32_MAX_ABS_DIFF", 1e-4)
    monkeypatch.setattr(quantize, "INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(ExportError, match="no int8 graph is within tolerance.*every matrix product.*feed-forward"):
        ex.export_model(text_model, tmp_path / "out", int8=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_cli_exports_with_data_to_check_on(text_model, tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    data = tmp_path / "check.csv"
    pd.DataFrame({"review": NEW_TEXTS * 3}).to_csv(data, index=False)
    r = CliRunner().invoke(app, ["export", str(text_model), "--out", str(tmp_path / "out"), "--data", str(data),
                                 "--text", "review", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["parity"]["inputs"].endswith("(3 unreadable, left out)")  # (the empty texts)
    assert summary["parity"]["inputs"].startswith("12 inputs of") and summary["graphs"] == {"fp32": "model.onnx"}
    r = CliRunner().invoke(app, ["export", str(text_model), "--out", str(tmp_path / "o2"), "--format", "tflite"])
    assert r.exit_code == 2 and "only onnx" in r.output
    with pytest.raises(ConfigError, match="several targets"):
        from test_multitarget import reviews

        mt = TextClassifier(backbone="tiny-bert", targets="verdict,score:regression", progress=False)
        mt.fit(reviews(40, 0))
        ex.export_model(mt.save_pretrained(tmp_path / "mt", report=False), tmp_path / "o3")


@pytest.mark.integration
def test_the_exported_directory_predicts_in_a_process_that_cannot_import_torch(text_model, tmp_path):
    out = tmp_path / "out"
    ex.export_model(text_model, out)
    rows = predict_without_torch(out, NEW_TEXTS[:3], cwd=tmp_path)
    model = load_model(text_model, cache=False)
    assert [row["label"] for row in rows] == list(model.predict(NEW_TEXTS[:3]))
    want = model.predict_proba(NEW_TEXTS[:3]).to_numpy()
    got = np.asarray([[row["probabilities"][c] for c in model.classes_] for row in rows])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_fmadapt_predict_reads_an_export_as_it_reads_the_model(text_model, tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    ex.export_model(text_model, tmp_path / "out")
    data = tmp_path / "new.csv"
    pd.DataFrame({"text": NEW_TEXTS}).to_csv(data, index=False)
    for src, name in ((tmp_path / "out", "x.csv"), (text_model, "m.csv")):
        r = CliRunner().invoke(app, ["predict", str(src), str(data), "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    got, want = pd.read_csv(tmp_path / "x.csv"), pd.read_csv(tmp_path / "m.csv")
    assert list(got.columns) == list(want.columns) and got["pred"].tolist() == want["pred"].tolist()
    assert got["error"].notna().sum() == want["error"].notna().sum() == 1  # (the empty text, listed)
    probs = [c for c in want.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probs].to_numpy(float), want[probs].to_numpy(float), atol=1e-4)


@pytest.mark.integration
def test_the_snippet_in_the_docs_predicts_without_torch(text_model, tmp_path):
    """docs/deploy.md's raw onnxruntime + tokenizers snippet, as written, in a process that cannot import torch."""
    import re

    out = tmp_path / "shipped" / "reviews"
    ex.export_model(text_model, out)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text(encoding="utf-8")
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", docs, flags=re.S) if "InferenceSession" in b)
    blocker = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in {'torch', 'fmadapt', 'transformers', 'lightning'}:\n"
               "            raise ImportError('blocked: ' + name)\nsys.meta_path.insert(0, Block())\n")
    r = subprocess.run([sys.executable, "-c", blocker + snippet], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    want = list(load_model(text_model, cache=False).predict(["a great film", "dull"]))
    assert r.stdout.strip() == str(want)
