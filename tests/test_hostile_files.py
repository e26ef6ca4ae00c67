"""Hostile files (issue "Reliability and security"): no code path unpickles a user-supplied file. A pickle payload
renamed to any model, checkpoint, cache or config file name never executes (a sentinel file proves it), and
malformed safetensors and JSON give clean errors naming the file: ArtifactError/ConfigError in the API, exit
code 1 (2 for a bad --backbone) with a one-line `error:` message and no traceback in the CLI."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import text_frame, write_image_folder
from fmadapt import ArtifactError, ImageClassifier, TextClassifier, load_model
from fmadapt.backbones import create_backbone
from fmadapt.cli import app
from fmadapt.errors import ConfigError, FmadaptError

runner = CliRunner()


# ------------------------------------------------------------------------------------------------ payloads
class Touch:
    """Unpickling this creates `path`: the stand-in for arbitrary code execution."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def payloads(sentinel: Path) -> dict[str, bytes]:
    """A bare pickle, and the same object inside torch.save's zip format (what .pt/.pth/.bin/.ckpt look like)."""
    buf = io.BytesIO()
    torch.save({"head.weight": Touch(sentinel)}, buf)
    return {"pickle": pickle.dumps(Touch(sentinel)), "torch.save": buf.getvalue()}


@pytest.fixture
def hostile(tmp_path):
    """(sentinel, payloads), the payloads proven live: unpickled naively, each creates the sentinel."""
    sentinel = tmp_path / "SENTINEL"
    p = payloads(sentinel)
    pickle.loads(p["pickle"])
    assert sentinel.exists(), "the pickle payload must really execute, or these tests prove nothing"
    sentinel.unlink()
    torch.load(io.BytesIO(p["torch.save"]), weights_only=False)
    assert sentinel.exists(), "the torch.save payload must really execute, or these tests prove nothing"
    sentinel.unlink()
    yield SimpleNamespace(sentinel=sentinel, **{k.replace(".", "_"): v for k, v in p.items()}, all=p)
    assert not sentinel.exists(), "a payload executed"


# ------------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Real saved model directories, fitted once per module: image (with run.json and evaluation/ for
    `fmadapt report`), text, and an ensemble of two image backbones (members/0, members/1)."""
    root = tmp_path_factory.mktemp("hostile-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMADAPT_CACHE", str(root / "cache"))
        images = write_image_folder(root / "images")
        ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(images).save_pretrained(
            root / "image", report=True)
        df = text_frame(12)
        df.to_csv(root / "reviews.csv", index=False)
        TextClassifier(backbone="tiny-bert", strategy="probe", progress=False).fit(df).save_pretrained(
            root / "text", report=False)
        ImageClassifier(backbone="tiny-cnn", strategy="probe", ensemble_backbones="tiny-cnn,tiny-cnn-cached",
                        progress=False).fit(images).save_pretrained(root / "ensemble", report=False)
    return SimpleNamespace(root=root, images=images, texts=root / "reviews.csv")


def copy_model(models, kind: str, tmp_path: Path) -> Path:
    dest = tmp_path / kind
    shutil.copytree(models.root / kind, dest)
    return dest


def data_for(models, kind: str) -> Path:
    return models.texts if kind == "text" else models.images


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_cli_error(r, names: str, code: int = 1) -> str:
    """Exit `code`, no traceback, exactly one `error:` line, naming `names`."""
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}\n{r.output}"
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert names in errors[0], errors[0]
    # the message is one line: nothing after it but (possibly) nothing at all
    assert r.output.rstrip().endswith(errors[0]), r.output
    return errors[0]


def invoke(entry: str, model_dir: Path, data: Path, tmp_path: Path):
    if entry == "predict":
        return cli("predict", model_dir, data, "-o", tmp_path / "preds.csv")
    if entry == "evaluate":
        return cli("evaluate", model_dir, data)
    if entry == "report":
        return cli("report", model_dir)
    raise ValueError(entry)


# (model, file, the entry points that read it: `api` is fmadapt.load_model, the others CLI commands)
MATRIX = [
    ("image", "config.json", ("api", "predict", "evaluate", "report")),
    ("image", "labels.json", ("api", "predict", "evaluate", "report")),
    ("image", "backbone.json", ("api", "predict", "evaluate")),
    ("image", "model.safetensors", ("api", "predict", "evaluate")),
    ("image", "int8_calibration.json", ("api", "predict", "evaluate")),
    ("image", "metrics.json", ("evaluate", "report")),
    ("image", "run.json", ("evaluate", "report")),
    ("image", "evaluation/validation/metrics.json", ("evaluate", "report")),
    ("image", "evaluation/validation/misclassified.json", ("report",)),
    ("image", "evaluation/validation/source.json", ("report",)),
    ("text", "config.json", ("api", "predict", "evaluate")),
    ("text", "labels.json", ("api", "predict")),
    ("text", "backbone.json", ("api", "predict")),
    ("text", "model.safetensors", ("api", "predict", "evaluate")),
    ("ensemble", "config.json", ("api", "predict")),
    ("ensemble", "members/0/model.safetensors", ("api", "predict")),
    ("ensemble", "members/0/config.json", ("api", "predict")),
    ("ensemble", "members/1/backbone.json", ("api", "predict")),
    ("ensemble", "members/1/labels.json", ("api", "predict")),
]
CASES = [(kind, name, entry, variant) for kind, name, entries in MATRIX for entry in entries
         for variant in ("pickle", "torch.save")]


@pytest.mark.parametrize("kind,name,entry,variant", CASES, ids=["-".join(c) for c in CASES])
def test_payload_in_model_directory_never_executes(models, hostile, tmp_path, kind, name, entry, variant):
    model_dir = copy_model(models, kind, tmp_path)
    (model_dir / name).write_bytes(hostile.all[variant])
    if entry == "api":
        with pytest.raises(ArtifactError) as err:
            load_model(model_dir)
        assert name.rsplit("/", 1)[-1] in str(err.value) and "\n" not in str(err.value)
    else:
        assert_clean_cli_error(invoke(entry, model_dir, data_for(models, kind), tmp_path), name.rsplit("/", 1)[-1])
    assert not hostile.sentinel.exists()


@pytest.mark.parametrize("name", ["metrics.json", "run.json", "README.md", "manifests/train.csv",
                                  "evaluation/validation/misclassified.json", ".fmadapt-commit.json"])
def test_payload_in_a_file_prediction_does_not_read_is_never_executed(models, hostile, tmp_path, name):
    model_dir = copy_model(models, "image", tmp_path)
    (model_dir / name).write_bytes(hostile.pickle)
    clf = load_model(model_dir)
    assert len(clf.predict(models.images)) == 36
    assert not hostile.sentinel.exists()


@pytest.mark.parametrize("journal", [b"[" * 100_000 + b"]" * 100_000, b'{"files": {}, "remove": ["manifests"]}'],
                         ids=["deeply-nested", "removes-a-folder"])
def test_planted_commit_journal_is_ignored_and_harmless(models, tmp_path, journal):
    """A model directory's commit journal (atomic saves) is read when the model loads. One that fmadapt cannot
    have written (it is written atomically: complete or absent) committed nothing: it is dropped, and it
    cannot make the load delete a folder; the model loads as it is."""
    model_dir = copy_model(models, "image", tmp_path)
    (model_dir / ".fmadapt-commit.json").write_bytes(journal)
    clf = load_model(model_dir)
    assert len(clf.predict(models.images)) == 36
    assert (model_dir / "manifests").is_dir() and not (model_dir / ".fmadapt-commit.json").exists()


def test_weights_only_would_refuse_the_torch_payload_too(hostile):
    """Belt and braces: even torch.load(weights_only=True), which fmadapt never calls on a user's file, refuses."""
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(hostile.torch_save), weights_only=True)


# ---------------------------------------------------------------------------------- training checkpoints
# Checkpoints are read with safetensors + JSON only (train/checkpoint.py); the run's files are
# <run>/checkpoints/run-<k>.ckpt and run-<k>.done.ckpt; other names are what users may point tools at.
CHECKPOINT_NAMES = ["run-0.ckpt", "run-0.done.ckpt", "last.ckpt", "epoch=0-step=3.ckpt"]


def _load_checkpoint():
    from fmadapt.train.checkpoint import load_checkpoint

    return load_checkpoint


@pytest.mark.parametrize("variant", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_checkpoint_payload_never_executes(hostile, tmp_path, name, variant):
    load_checkpoint = _load_checkpoint()
    path = tmp_path / "run" / "checkpoints" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(hostile.all[variant])
    with pytest.raises(FmadaptError) as err:
        load_checkpoint(path)
    assert name in str(err.value)
    assert not hostile.sentinel.exists()


def _deeply_nested_checkpoint() -> bytes:
    from safetensors.torch import save

    return save({"t0": torch.zeros(1)}, metadata={"fmadapt_checkpoint": "[" * 100_000 + "]" * 100_000})


@pytest.mark.parametrize("content", [
    b"", b"\x00" * 7, struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 5) + b"nojso",
    _deeply_nested_checkpoint(),
], ids=["empty", "short", "header>file", "notjson", "deeply-nested-metadata"])
def test_malformed_checkpoint_is_a_clean_error(tmp_path, content):
    load_checkpoint = _load_checkpoint()
    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    with pytest.raises(FmadaptError, match="last.ckpt"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["run-0.ckpt", "run-0.done.ckpt"])
@pytest.mark.parametrize("variant", ["pickle", "torch.save"])
def test_resuming_from_a_planted_checkpoint_never_executes(hostile, image_folder, tmp_path, name, variant):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    (ck / name).write_bytes(hostile.all[variant])
    clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=1, batch_size=4, progress=False)
    with pytest.raises(FmadaptError) as err:
        clf.fit(image_folder, checkpoint_dir=ck, resume=True)
    assert name in str(err.value) and "delete it" in str(err.value)
    assert not hostile.sentinel.exists()


# ------------------------------------------------------------------------------------------------ feature cache
def _cache_entries(root: Path) -> list[Path]:
    return sorted((root / "features").rglob("*.npy"))


def _object_array(sentinel: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Touch(sentinel), 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("variant", ["pickle", "torch.save", "object-array", "int-array", "nan", "wrong-rows"])
def test_planted_feature_cache_entry_is_recomputed(image_folder, tmp_path, monkeypatch, hostile, variant):
    from fmadapt.runtime import onnx as onnx_runtime

    monkeypatch.setenv("FMADAPT_CACHE", str(tmp_path / "cache"))
    clf = ImageClassifier(backbone="tiny-cnn-cached", strategy="probe", progress=False).fit(image_folder)
    expected = clf.predict_proba(image_folder).to_numpy()
    entries = _cache_entries(tmp_path / "cache")
    assert entries, "the identifiable backbone should have cached its features"
    shapes = {p: np.load(p).shape for p in entries}
    for p in entries:
        content = {"pickle": hostile.pickle, "torch.save": hostile.torch_save,
                   "object-array": _object_array(hostile.sentinel),
                   "int-array": _npy(np.zeros(shapes[p], dtype=np.int64)),
                   "nan": _npy(np.full(shapes[p], np.nan, dtype=np.float32)),
                   "wrong-rows": _npy(np.zeros((shapes[p][0] + 1, shapes[p][1]), dtype=np.float32))}[variant]
        p.write_bytes(content)
    onnx_runtime._SESSIONS.clear()
    again = ImageClassifier(backbone="tiny-cnn-cached", strategy="probe", progress=False).fit(image_folder)
    assert np.allclose(again.predict_proba(image_folder).to_numpy(), expected, atol=1e-5)
    for p in entries:  # recomputed and overwritten with the real features
        arr = np.load(p, allow_pickle=False)
        assert arr.dtype == np.float32 and arr.shape == shapes[p] and np.isfinite(arr).all()
    assert not hostile.sentinel.exists()


def test_planted_onnx_cache_file_is_never_run_and_is_exported_again(image_folder, tmp_path, monkeypatch, hostile):
    from fmadapt.runtime import onnx as onnx_runtime

    monkeypatch.setenv("FMADAPT_CACHE", str(tmp_path / "cache"))
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(image_folder)
    expected = clf.predict_proba(image_folder).to_numpy()
    exported = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    if not exported:
        pytest.skip("onnxruntime unavailable: nothing cached")
    for p in exported:
        p.write_bytes(hostile.pickle)
    onnx_runtime._SESSIONS.clear()
    with pytest.warns(UserWarning, match="cached ONNX graph unreadable.*exporting again"):
        got = clf.predict_proba(image_folder).to_numpy()
    assert np.allclose(got, expected, atol=1e-4)
    assert not hostile.sentinel.exists()
    replaced = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert replaced and all(p.read_bytes() != hostile.pickle for p in replaced)  # the planted bytes are gone


# ------------------------------------------------------------------------------------------------ --backbone DIR
@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory):
    """A valid transformers folder (tiny BERT + tokenizer) and a valid timm folder, to plant payloads in."""
    import timm

    root = tmp_path_factory.mktemp("hostile-backbones")
    tiny = create_backbone("tiny-bert")
    tiny.model.save_pretrained(root / "hf")
    tiny.tokenizer.save_pretrained(root / "hf")
    torch.manual_seed(0)
    ref = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    (root / "timm").mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(root / "timm" / "model.safetensors"))
    (root / "timm" / "config.json").write_text(json.dumps({"architecture": "test_efficientnet", "num_classes": 0}))
    return root


def _plant(backbone_dirs, kind: str, tmp_path: Path, hostile, case: str) -> Path:
    d = tmp_path / kind
    shutil.copytree(backbone_dirs / kind, d)
    if case == "model.safetensors":
        (d / "model.safetensors").write_bytes(hostile.pickle)
    elif case in ("pytorch_model.bin", "model.pth", "model.pt", "model.ckpt"):
        (d / "model.safetensors").unlink()
        (d / case).write_bytes(hostile.torch_save)
    elif case == "config.json":
        (d / "config.json").write_bytes(hostile.pickle)
    elif case == "transformers_weights":  # config.json pointing transformers at a pickle beside valid safetensors
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "transformers_weights": "adapter_model.bin"}))
        (d / "adapter_model.bin").write_bytes(hostile.torch_save)
    elif case == "sharded-index":  # a sharded index whose shard is a pickle
        (d / "model.safetensors").rename(d / "model-00001-of-00001.safetensors")
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
            k: "pytorch_model-00001.bin" for k in load_file(str(d / "model-00001-of-00001.safetensors"))}}))
        (d / "model-00001-of-00001.safetensors").unlink()
        (d / "pytorch_model-00001.bin").write_bytes(hostile.torch_save)
    elif case in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (d / case).write_bytes(hostile.pickle)
    elif case == "remote-code":
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.EvilModel"}}))
        (d / "evil.py").write_text(f"from pathlib import Path\nPath({str(hostile.sentinel)!r}).touch()\n")
    elif case == "hub-architecture":
        (d / "config.json").write_text(json.dumps({"architecture": "hf-hub:someone/evil", "num_classes": 0}))
    else:
        raise ValueError(case)
    return d


HF_CASES = ["model.safetensors", "pytorch_model.bin", "model.pth", "config.json", "transformers_weights",
            "sharded-index", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "remote-code"]
TIMM_CASES = ["model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "model.ckpt", "config.json",
              "hub-architecture"]
BACKBONE_CASES = [("hf", c) for c in HF_CASES] + [("timm", c) for c in TIMM_CASES]


#: planted files the libraries never read when the rest of the folder is valid: the backbone loads, unharmed
#: (BERT's fast tokenizer reads tokenizer.json, not vocab.txt; without trust_remote_code a config's auto_map
#: is ignored in favour of the built-in class of its model_type)
IGNORED = {("hf", "vocab.txt"), ("hf", "remote-code")}


@pytest.mark.parametrize("kind,case", BACKBONE_CASES, ids=[f"{k}-{c}" for k, c in BACKBONE_CASES])
def test_hostile_backbone_directory_is_refused(backbone_dirs, tmp_path, hostile, kind, case):
    d = _plant(backbone_dirs, kind, tmp_path, hostile, case)
    if (kind, case) in IGNORED:
        assert create_backbone(str(d)).cfg.embed_dim == 32
    else:
        with pytest.raises(ConfigError) as err:
            create_backbone(str(d))
        assert str(d) in str(err.value) and "\n" not in str(err.value)
        if case in ("pytorch_model.bin", "model.pth", "model.pt", "model.ckpt", "transformers_weights",
                    "sharded-index"):  # refused as pickle by fmadapt itself, before any library reads it
            assert "safetensors" in str(err.value)
    assert not hostile.sentinel.exists()


def test_library_fallbacks_to_torch_load_are_refused_too(backbone_dirs, tmp_path, hostile):
    """timm's own `local-dir:` loader (and transformers', for pytorch_model.bin) fall back to torch.load: while a
    backbone is built from a directory or the hub, torch.load refuses outright; afterwards it is restored."""
    real = torch.load
    d = _plant(backbone_dirs, "timm", tmp_path, hostile, "pytorch_model.bin")
    with pytest.raises(ConfigError, match="refusing to unpickle"):
        create_backbone(f"timm:local-dir:{d}")
    assert torch.load is real
    assert not hostile.sentinel.exists()


@pytest.mark.parametrize("kind,case", [("hf", "pytorch_model.bin"), ("timm", "model.pth"), ("hf", "config.json"),
                                       ("hf", "transformers_weights")])
def test_hostile_backbone_directory_cli(backbone_dirs, models, tmp_path, hostile, kind, case):
    d = _plant(backbone_dirs, kind, tmp_path, hostile, case)
    data = models.texts if kind == "hf" else models.images
    r = cli("fit", data, "--out", tmp_path / "m", "--backbone", d, "--report", "off")
    assert_clean_cli_error(r, str(d), code=2)
    r = cli("embed", data, "-o", tmp_path / "e.npy", "--backbone", d)
    assert_clean_cli_error(r, str(d), code=2)
    assert not hostile.sentinel.exists()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt", ".safetensors"])
def test_backbone_given_as_a_single_file_is_refused(tmp_path, hostile, suffix):
    f = tmp_path / f"weights{suffix}"
    f.write_bytes(hostile.torch_save)
    with pytest.raises(ConfigError, match="not a single file"):
        create_backbone(str(f))
    assert not hostile.sentinel.exists()


def test_pickle_beside_safetensors_is_ignored(backbone_dirs, tmp_path, hostile):
    d = tmp_path / "hf"
    shutil.copytree(backbone_dirs / "hf", d)
    (d / "pytorch_model.bin").write_bytes(hostile.torch_save)
    (d / "model.pth").write_bytes(hostile.torch_save)
    bb = create_backbone(str(d))
    assert bb.cfg.embed_dim == 32
    assert not hostile.sentinel.exists()


def test_model_whose_backbone_json_names_a_hostile_directory(backbone_dirs, models, tmp_path, hostile):
    """backbone.json is the user's too: pointing it at a directory of pickles gives a clean refusal."""
    d = _plant(backbone_dirs, "hf", tmp_path, hostile, "pytorch_model.bin")
    model_dir = copy_model(models, "text", tmp_path)
    cfg = json.loads((model_dir / "backbone.json").read_text())
    (model_dir / "backbone.json").write_text(json.dumps({**cfg, "name": str(d), "pretrained": True}))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "backbone_weights": "reference"}))
    with pytest.raises(ArtifactError, match="backbone.json"):
        load_model(model_dir)
    assert_clean_cli_error(cli("predict", model_dir, models.texts, "-o", tmp_path / "p.csv"), "backbone.json")
    assert not hostile.sentinel.exists()


# ------------------------------------------------------------------------------------------ malformed safetensors
def _st(header, data: bytes = b"\x00" * 24) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _save(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


SAFETENSORS_CASES = {
    "truncated": lambda good, t: good[:len(good) // 2],
    "zero-bytes": lambda good, t: b"",
    "seven-bytes": lambda good, t: good[:7],
    "header-longer-than-file": lambda good, t: struct.pack("<Q", len(good) * 4) + good[8:],
    "header-length-huge": lambda good, t: struct.pack("<Q", 1 << 62) + good[8:],
    "header-not-json": lambda good, t: struct.pack("<Q", 8) + b"not json" + b"\x00" * 8,
    "header-not-utf8": lambda good, t: struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",
    "header-a-list": lambda good, t: _st([1, 2, 3]),
    "unknown-dtype": lambda good, t: _st({"head.weight": {"dtype": "Q7", "shape": [2, 3], "data_offsets": [0, 24]}}),
    "negative-shape": lambda good, t: _st({"head.weight": {"dtype": "F32", "shape": [-2, 3],
                                                           "data_offsets": [0, 24]}}),
    "shape-offsets-disagree": lambda good, t: _st({"head.weight": {"dtype": "F32", "shape": [4, 4],
                                                                   "data_offsets": [0, 24]}}),
    "offsets-past-end": lambda good, t: _st({"head.weight": {"dtype": "F32", "shape": [2, 3],
                                                             "data_offsets": [0, 2400]}}),
    "offsets-reversed": lambda good, t: _st({"head.weight": {"dtype": "F32", "shape": [2, 3],
                                                             "data_offsets": [24, 0]}}),
    "wrong-shape-for-model": lambda good, t: _save({**t, "head.weight": torch.zeros(7, 5)}),
    "wrong-dtype-for-model": lambda good, t: _save({**t, "head.weight": t["head.weight"].to(torch.int32)}),
    "nan-weights": lambda good, t: _save({**t, "head.weight": torch.full_like(t["head.weight"], float("nan"))}),
    "missing-head": lambda good, t: _save({k: v for k, v in t.items() if k != "head.bias"}),
    "unexpected-tensor": lambda good, t: _save({**t, "evil.weight": torch.zeros(2)}),
    "empty-file-of-tensors": lambda good, t: _save({}),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_malformed_safetensors_is_a_clean_error(models, tmp_path, case):
    model_dir = copy_model(models, "image", tmp_path)
    good = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(SAFETENSORS_CASES[case](good, _tensors(model_dir)))
    with pytest.raises(ArtifactError, match="model.safetensors") as err:
        load_model(model_dir)
    assert "\n" not in str(err.value)


def test_malformed_safetensors_cli(models, tmp_path):
    model_dir = copy_model(models, "image", tmp_path)
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 3)
    assert_clean_cli_error(cli("predict", model_dir, models.images, "-o", tmp_path / "p.csv"), "model.safetensors")


# ------------------------------------------------------------------------------------------------ malformed JSON
def _edit(d: Path, name: str, fn) -> None:
    (d / name).write_text(json.dumps(fn(json.loads((d / name).read_text()))))


JSON_CASES = [  # (file, what to write: bytes, or a function of the parsed original)
    ("config.json", b'{"num_classes": 3, "fit": {'),
    ("config.json", "\u00e9t\u00e9".encode("latin-1")),
    ("config.json", b"\xef\xbb\xbf\xff\xfe{}"),
    ("config.json", b"[1, 2, 3]"),
    ("config.json", b"null"),
    ("config.json", b"NaN"),
    ("config.json", b"[" * 100_000 + b"]" * 100_000),
    ("config.json", b"1" * 5000),
    ("config.json", lambda c: {**c, "num_classes": "3"}),
    ("config.json", lambda c: {**c, "num_classes": 10 ** 40}),
    ("config.json", lambda c: {**c, "num_classes": float("nan")}),
    ("config.json", lambda c: {**c, "format_version": 99}),
    ("config.json", lambda c: {**c, "backbone_weights": "elsewhere"}),
    ("config.json", lambda c: {**c, "fit": [1, 2]}),
    ("config.json", lambda c: {**c, "fit": {**c["fit"], "epochs": "ten"}}),
    ("config.json", lambda c: {**c, "fit": {**c["fit"], "lr": float("nan")}}),
    ("config.json", lambda c: {**c, "fit": {**c["fit"], "batch_size": 1e308}}),
    ("config.json", lambda c: {**c, "fit": {**c["fit"], "strategy": "os.system"}}),
    ("config.json", lambda c: {**c, "fit": {**c["fit"], "not_an_option": 1}}),
    ("config.json", lambda c: {**c, "calibration": "hot"}),
    ("config.json", lambda c: {**c, "calibration": {"temperature": float("nan")}}),
    ("config.json", lambda c: {**c, "calibration": {"temperature": 1e999}}),
    ("config.json", lambda c: {**c, "adapter": {"type": "lora", "r": "8", "alpha": 1, "dropout": 0,
                                                "targets": ["x"]}}),
    ("config.json", lambda c: {**c, "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0,
                                                "targets": ["no_such_layer"]}}),
    ("labels.json", b'["red", "green"'),
    ("labels.json", b'{"0": "red", "1": "green", "2": "blue"}'),
    ("labels.json", b"[1, 2]"),
    ("labels.json", b"[1, 2, 3]"),
    ("labels.json", b'["red", "red", "blue"]'),
    ("labels.json", b'["red", ["green"], "blue"]'),
    ("labels.json", b"\x80\x81\x82"),
    ("backbone.json", b"[]"),
    ("backbone.json", lambda c: {k: v for k, v in c.items() if k != "name"}),
    ("backbone.json", lambda c: {k: v for k, v in c.items() if k != "embed_dim"}),
    ("backbone.json", lambda c: {**c, "unknown_field": 1}),
    ("backbone.json", lambda c: {**c, "embed_dim": "wide"}),
    ("backbone.json", lambda c: {**c, "embed_dim": 10 ** 30}),
    ("backbone.json", lambda c: {**c, "embed_dim": 7}),
    ("backbone.json", lambda c: {**c, "input_size": float("nan")}),
    ("backbone.json", lambda c: {**c, "input_size": 10 ** 9}),
    ("backbone.json", lambda c: {**c, "mean": "grey"}),
    ("backbone.json", lambda c: {**c, "std": [0, 0, 0]}),
    ("backbone.json", lambda c: {**c, "crop_pct": float("inf")}),
    ("backbone.json", lambda c: {**c, "modality": "audio"}),
    ("backbone.json", lambda c: {**c, "modality": "text"}),
    ("backbone.json", lambda c: {**c, "name": ["tiny-cnn"]}),
    ("backbone.json", lambda c: {**c, "name": "no-such-backbone"}),
    ("backbone.json", lambda c: {**c, "name": "tiny\x00cnn"}),
    ("backbone.json", lambda c: {**c, "name": "/"}),
    ("backbone.json", lambda c: {**c, "extra": [1]}),
    ("backbone.json", lambda c: {**c, "extra": {"added_tokens": "abc"}}),
    ("int8_calibration.json", b"[]"),
    ("int8_calibration.json", b'{"graph": 1, "ranges": {}}'),
    ("int8_calibration.json", b"{"),
]


@pytest.mark.parametrize("name,content", JSON_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(JSON_CASES)])
def test_malformed_json_is_a_clean_error(models, tmp_path, name, content):
    model_dir = copy_model(models, "image", tmp_path)
    if callable(content):
        _edit(model_dir, name, content)
    else:
        (model_dir / name).write_bytes(content)
    with pytest.raises(FmadaptError, match=name.replace(".", r"\.")) as err:
        load_model(model_dir)
    assert "\n" not in str(err.value)
    r = cli("predict", model_dir, models.images, "-o", tmp_path / "p.csv")
    assert_clean_cli_error(r, name)


@pytest.mark.parametrize("case", ["not-a-list", "escapes", "nul-byte", "member-labels-differ", "member-is-a-file"])
def test_malformed_ensemble_listing_is_a_clean_error(models, tmp_path, case):
    model_dir = copy_model(models, "ensemble", tmp_path)
    if case == "not-a-list":
        _edit(model_dir, "config.json", lambda c: {**c, "ensemble": {"dir": "members/0"}})
    elif case == "escapes":
        _edit(model_dir, "config.json", lambda c: {**c, "ensemble": [{"dir": "../../etc"}]})
    elif case == "nul-byte":
        _edit(model_dir, "config.json", lambda c: {**c, "ensemble": [{"dir": "members/0\x00"}]})
    elif case == "member-labels-differ":
        _edit(model_dir, "members/1/labels.json", lambda c: list(reversed(c)))
    else:
        shutil.rmtree(model_dir / "members" / "1")
        (model_dir / "members" / "1").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError):
        load_model(model_dir)
    r = cli("predict", model_dir, models.images, "-o", tmp_path / "p.csv")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("name,content,renders", [
    ("metrics.json", b"[1, 2]", False), ("metrics.json", b"{", False), ("run.json", b'"x"', False),
    ("run.json", b"\xff", False),
    # a list whose items are not mistakes: the page renders without them
    ("evaluation/validation/misclassified.json", b'[1, "a", null, [1]]', True),
    ("evaluation/validation/misclassified.json", b'{"path": "/etc/passwd"}', False),
    ("evaluation/validation/source.json", b"[]", False),
    ("evaluation/validation/metrics.json", b"NaN", False),
])
def test_report_on_malformed_files_is_a_clean_error_or_renders(models, tmp_path, name, content, renders):
    """Each malformed file gives one outcome: a clean error naming the file (exit 1), or, where the file's
    items are only skipped, a page."""
    model_dir = copy_model(models, "image", tmp_path)
    (model_dir / name).write_bytes(content)
    (model_dir / "report.html").unlink(missing_ok=True)
    r = cli("report", model_dir)
    assert r.exception is None or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}\n{r.output}"
    assert "Traceback" not in r.output
    if renders:
        assert r.exit_code == 0 and (model_dir / "report.html").is_file(), r.output
    else:
        assert r.exit_code == 1 and not (model_dir / "report.html").exists()
        assert_clean_cli_error(r, name.rsplit("/", 1)[-1])


def test_misclassified_paths_to_non_files_are_not_opened(models, tmp_path):
    """misclassified.json names files the report thumbnails: a FIFO or a device there must not hang it."""
    import os

    model_dir = copy_model(models, "image", tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (model_dir / "evaluation/validation/misclassified.json").write_text(json.dumps(
        [{"id": "x", "label": "red", "pred": "blue", "confidence": 0.9, "path": str(fifo)},
         {"id": "y", "label": "red", "pred": "blue", "confidence": 0.9, "path": "/dev/zero"}]))
    r = cli("report", model_dir)
    assert r.exit_code == 0, r.output
