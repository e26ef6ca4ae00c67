import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import text_frame
from fmadapt.cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_fit_json_predict_evaluate_images(image_folder, tmp_path):
    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = _invoke("fit", image_folder, "--out", tmp_path / "m", "--backbone", "tiny-cnn", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["metrics"]["val"]["accuracy"] >= 0.8
    assert [s["where"].endswith("broken.png") for s in summary["data"]["skipped"]] == [True]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["fit"]["backbone"] == "tiny-cnn" and cfg["strategy"] == "probe"

    r = _invoke("predict", tmp_path / "m", image_folder / "red", "-o", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    p = pd.read_csv(tmp_path / "p.csv")
    assert {"id", "pred", "prob_red", "prob_green", "prob_blue", "error"} <= set(p.columns)
    assert len(p) == 13 and p["error"].notna().sum() == 1  # 12 images + the unreadable one, not lost
    assert (p["pred"].dropna() == "red").mean() >= 0.8

    r = _invoke("evaluate", tmp_path / "m", image_folder, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 36


def test_fit_text_table_with_columns(tmp_path):
    df = text_frame(16).rename(columns={"text": "review", "label": "stars"})
    df["noise"] = "x"
    df.to_csv(tmp_path / "r.csv", index=False)
    r = _invoke("fit", tmp_path / "r.csv", "--text", "review", "--label", "stars", "--backbone", "tiny-bert",
                "--out", tmp_path / "m", "--report", "basic")
    assert r.exit_code == 0, r.output
    assert "accuracy=" in r.stdout and "model saved" in r.stdout
    r = _invoke("predict", tmp_path / "m", tmp_path / "r.csv", "-o", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    p = pd.read_csv(tmp_path / "p.csv")
    assert p["text"].tolist() == df["review"].tolist() and set(p["pred"]) <= {"pos", "neg"}


def test_missing_column_exits_1_with_columns(tmp_path):
    text_frame(4).to_csv(tmp_path / "r.csv", index=False)
    r = _invoke("fit", tmp_path / "r.csv", "--text", "body", "--out", tmp_path / "m", "--backbone", "tiny-bert")
    assert r.exit_code == 1
    assert "'body'" in r.output and "'text', 'label'" in r.output


def test_unseen_label_at_evaluate_exits_1(tmp_path):
    text_frame(8).to_csv(tmp_path / "r.csv", index=False)
    assert _invoke("fit", tmp_path / "r.csv", "--out", tmp_path / "m", "--backbone", "tiny-bert",
                   "--report", "off").exit_code == 0
    bad = text_frame(2)
    bad.loc[0, "label"] = "meh"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = _invoke("evaluate", tmp_path / "m", tmp_path / "bad.csv")
    assert r.exit_code == 1 and "never seen in training: 'meh'" in r.output


@pytest.mark.parametrize("args", [
    ["fit", "somewhere"],  # --out missing
    ["fit", ".", "--out", "x", "--strategy", "nope"],
    ["fit", ".", "--out", "x", "--epochs", "0"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(args):
    assert _invoke(*args).exit_code == 2


def test_backbones_json():
    r = _invoke("backbones", "--json")
    names = {e["name"] for e in json.loads(r.stdout)}
    assert {"efficientnet_lite0", "minilm-l6"} <= names


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's first command: real digits, real packaged backbone, a saved model that reloads."""
    r = _invoke("demo", "--out", tmp_path / "d", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["metrics"]["val"]["accuracy"] >= 0.9 and s["metrics"]["val"]["n"] == 359
    from fmadapt import load_model

    clf = load_model(tmp_path / "d" / "model")
    assert (clf.predict(tmp_path / "d" / "data" / "7") == "7").mean() >= 0.9
    html = (tmp_path / "d" / "model" / "report.html").read_text(encoding="utf-8")
    assert "Not run" not in html.split('id="robustness"', 1)[1].split("<section", 1)[0]
    assert s["report"].endswith("report.html") and s["evaluation_seconds"]["robustness"] > 0


def test_embed_images_keeps_one_row_per_input(image_folder, tmp_path):
    import numpy as np

    (image_folder / "green" / "bad.png").write_bytes(b"nope")
    r = _invoke("embed", image_folder, "-o", tmp_path / "f.npy", "--backbone", "tiny-cnn", "--json")
    assert r.exit_code == 0, r.output
    f = np.load(tmp_path / "f.npy")
    ids = pd.read_csv(tmp_path / "f.ids.csv")
    assert f.shape == (37, 256) and len(ids) == 37
    bad = ids["error"].notna().to_numpy()
    assert bad.sum() == 1 and ids["id"][bad].iloc[0].endswith("bad.png")
    assert np.isnan(f[bad]).all() and np.isfinite(f[~bad]).all()


def test_embed_texts_in_input_order(tmp_path):
    import numpy as np

    from fmadapt.backbones import create_backbone

    df = pd.DataFrame({"sentence": ["first text", "", "the third and longest text of all", "NA"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    r = _invoke("embed", tmp_path / "t.csv", "-o", tmp_path / "t.npy", "--backbone", "tiny-bert")
    assert r.exit_code == 0, r.output
    f = np.load(tmp_path / "t.npy")
    assert f.shape[0] == 4 and np.isnan(f[1]).all() and np.isnan(f[3]).all()
    errors = pd.read_csv(tmp_path / "t.ids.csv", keep_default_na=False)["error"].tolist()
    assert errors[:3] == ["", "empty text", ""]
    assert errors[3].startswith("missing text: 'NA' is read as a missing value"), errors[3]
    bb = create_backbone("tiny-bert")
    import torch

    with torch.no_grad():
        ref = bb(bb.collator()(["first text", "the third and longest text of all"])).numpy()
    assert np.allclose(f[[0, 2]], ref, atol=1e-4)


def test_fit_optimization_options_and_set(image_folder, tmp_path):
    r = _invoke("fit", image_folder, "--out", tmp_path / "m", "--backbone", "tiny-cnn", "--strategy", "l2sp",
                "--epochs", "1", "--batch-size", "8", "--optimizer", "sgd", "--schedule", "inverse_time",
                "--layer-decay", "0.7", "--label-smoothing", "0.1", "--grad-clip", "1.0",
                "--set", "dropout=0.2", "--set", "decay_beta=0.01", "--set", "augment=false", "--json",
                "--report", "basic")
    assert r.exit_code == 0, r.output
    fit = json.loads((tmp_path / "m" / "config.json").read_text())["fit"]
    assert (fit["strategy"], fit["optimizer"], fit["schedule"], fit["layer_decay"]) == ("l2sp", "sgd",
                                                                                      "inverse_time", 0.7)
    assert (fit["dropout"], fit["decay_beta"], fit["augment"], fit["grad_clip"]) == (0.2, 0.01, False, 1.0)
    groups = json.loads(r.stdout)["history"]["param_groups"]
    assert len({g["lr"] for g in groups if g["name"] != "head"}) > 1  # layer decay made several body rates


@pytest.mark.parametrize("item", ["nosuch=1", "dropout", "epochs=many", "augment=maybe"])
def test_bad_set_items_are_option_errors(image_folder, tmp_path, item):
    r = _invoke("fit", image_folder, "--out", tmp_path / "m", "--backbone", "tiny-cnn", "--set", item)
    assert r.exit_code == 2
    assert "--set" in r.output


def test_strategies_command_lists_the_variants():
    r = _invoke("strategies", "--json")
    assert r.exit_code == 0
    names = [e["name"] for e in json.loads(r.stdout)]
    assert {"probe", "finetune", "l2sp", "progressive", "auto"} <= set(names)
    # `fit --strategy`'s help names exactly the registered strategies and auto
    from fmadapt.adapt import list_strategies
    from fmadapt.config import STRATEGY_NAMES

    assert sorted(STRATEGY_NAMES) == sorted([*list_strategies(), "auto"]) == sorted(names)
    assert " | ".join(STRATEGY_NAMES) in " ".join(_invoke("fit", "--help").output.replace("│", " ").split())


def test_fit_ensemble_from_the_cli_and_predict(image_folder, tmp_path):
    r = _invoke("fit", image_folder, "--out", tmp_path / "m", "--ensemble-backbones", "tiny-cnn,tiny-cnn-cached",
                "--report", "basic")
    assert r.exit_code == 0, r.output
    r = _invoke("predict", tmp_path / "m", image_folder / "red", "-o", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert (pd.read_csv(tmp_path / "p.csv")["pred"] == "red").mean() >= 0.8


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


@pytest.mark.integration
def test_the_command_line_starts_without_torch_and_the_package_imports_it_on_first_use():
    heavy = "('torch', 'lightning', 'timm', 'sklearn', 'fmadapt.estimators')"
    # `fmadapt --help`, a mistyped option: answered without loading torch, Lightning, timm, scikit-learn
    assert _fresh_python(f"import sys, fmadapt.cli; print([m for m in {heavy} if m in sys.modules])") == "[]"
    out = _fresh_python(
        "import logging, sys, fmadapt\n"
        f"before = [m for m in {heavy} if m in sys.modules]\n"
        "from fmadapt import TextClassifier, create_backbone, load_model\n"
        "print(before, 'TextClassifier' in dir(fmadapt), TextClassifier.__module__, callable(create_backbone),\n"
        "      [logging.getLogger(n).level for n in ('lightning.pytorch', 'lightning.fabric')])\n"
        "try:\n    fmadapt.no_such_name\nexcept AttributeError as e:\n    print(e)")
    lines = out.splitlines()
    # Lightning resets its loggers to INFO when imported: they are quiet (ERROR = 40) once the estimators load
    assert lines[0] == "[] True fmadapt.estimators True [40, 40]"
    assert lines[1] == "module 'fmadapt' has no attribute 'no_such_name'"


@pytest.mark.parametrize("strategy,said", [
    ("finetune", "without"),  # validation accuracy with and without the mirror images
    ("probe", "not compared"),  # the probe's head was refit on the validation split: no held-out comparison
])
def test_fit_summary_reports_tta(image_folder, tmp_path, strategy, said):
    r = _invoke("fit", image_folder, "--out", tmp_path / "m", "--backbone", "tiny-cnn", "--strategy", strategy,
                "--epochs", "1", "--batch-size", "8", "--set", "augment=false", "--set", "tta=true",
                "--report", "basic")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("test-time augmentation"))
    assert said in line
    assert json.loads((tmp_path / "m" / "config.json").read_text())["fit"]["tta"] is True
