"""`fmadapt fit` / `evaluate` / `explain` / `report`: the evaluations land in the model directory and in one
report.html, which a real browser renders with every section and image."""

import json
import shutil
import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import text_frame
from fmadapt.cli import app
from test_report import SECTION_IDS, parse

runner = CliRunner()
CHROMIUM = shutil.which("chromium")


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _not_run(html: str, section: str) -> bool:
    body = html.split(f'id="{section}"', 1)[1].split("<section", 1)[0]
    return "Not run" in body


@pytest.mark.integration
def test_fit_report_images_with_fairness_then_evaluate_and_report(image_folder, tmp_path):
    paths = sorted(p for p in image_folder.rglob("*.png"))
    pd.DataFrame({"file": [p.relative_to(image_folder).as_posix() for p in paths],
                  "site": ["north" if i % 2 else "south" for i in range(len(paths))]}
                 ).to_csv(tmp_path / "meta.csv", index=False)
    m = tmp_path / "m"
    r = _invoke("fit", image_folder, "--out", m, "--backbone", "tiny-cnn", "--group-metadata", tmp_path / "meta.csv",
                "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert set(s["evaluation_seconds"]) >= {"robustness", "fairness", "explanations"}
    ev = m / "evaluation" / "validation"
    rob = json.loads((ev / "robustness.json").read_text())
    assert set(rob["corruptions"]) == {"gaussian_noise", "gaussian_blur", "jpeg", "brightness", "contrast"}
    assert rob["n"] == len(pd.read_csv(m / "manifests" / "val.csv"))
    fair = json.loads((ev / "fairness.json").read_text())
    assert set(fair["groups"]) == {"north", "south"} and fair["group_col"] is None
    assert len(json.loads((ev / "explanations.json").read_text())) >= 1
    html = (m / "report.html").read_text(encoding="utf-8")
    for section in SECTION_IDS:
        assert f'id="{section}"' in html
    for section in ("calibration", "robustness", "fairness", "explanations", "training", "environment"):
        assert not _not_run(html, section), section
    assert "http://" not in html and "https://" not in html

    # evaluate on new data: robustness without attacks, explanations; its metrics join the report
    r = _invoke("evaluate", m, image_folder, "--robustness", "--no-adversarial", "--explain", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["robustness"]["adversarial"] == {} and out["n"] == 36
    again = (m / "report.html").read_text(encoding="utf-8")
    assert "evaluation: " in again

    # the report is rebuilt from the directory alone
    (m / "report.html").unlink()
    r = _invoke("report", m, "-o", tmp_path / "copy.html")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "copy.html").read_text(encoding="utf-8").count("data:image/png;base64,") >= 5

    if CHROMIUM:
        base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
        dom = subprocess.run([*base, "--dump-dom", (tmp_path / "copy.html").as_uri()], capture_output=True,
                             text=True, timeout=90).stdout
        p = parse(dom)
        assert list(p.sections) == SECTION_IDS
        total = int(p.body["data-images-total"] or 0)
        assert total >= 5 and p.body.get("data-images-ok") == str(total)


def test_fit_text_with_group_column_and_csv_logging_then_explain(tmp_path):
    df = text_frame(40)
    df["region"] = ["a" if i % 3 else "b" for i in range(len(df))]
    df.to_csv(tmp_path / "r.csv", index=False)
    m = tmp_path / "m"
    r = _invoke("fit", tmp_path / "r.csv", "--text", "text", "--label", "label", "--backbone", "tiny-bert",
                "--out", m, "--group-col", "region", "--log-to", "csv", "--strategy", "finetune", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert "worst" in r.stdout.lower() and "report:" in r.stdout
    fair = json.loads((m / "evaluation" / "validation" / "fairness.json").read_text())
    val_ids = pd.read_csv(m / "manifests" / "val.csv")["id"].astype(int)
    want = df.loc[val_ids, "region"].value_counts().to_dict()
    assert {g: v["n"] for g, v in fair["groups"].items()} == want
    rob = json.loads((m / "evaluation" / "validation" / "robustness.json").read_text())
    assert set(rob["text"]) == {"typo", "casing", "punctuation", "word_drop"}
    logs = list((m / "logs").rglob("metrics.csv"))
    assert len(logs) == 2  # the fine-tuning run (per epoch) and the summary
    assert any("val_loss" in p.read_text() for p in logs) and any("val_accuracy" in p.read_text() for p in logs)

    r = _invoke("explain", m, tmp_path / "r.csv", "--text", "text", "--limit", "3", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["items"]) == 3 and all(i["tokens"] for i in out["items"])
    assert (m / "explanations" / "explanations.json").is_file()


@pytest.mark.parametrize("args,msg,code", [
    (["--report", "some"], "--report", 2),  # an option's value: a usage error
    (["--group-col", "nope"], "column 'nope' (--group-col) not found", 1),  # the data lacks it
    (["--log-to", "wandb"], "log_to", 2),
])
def test_report_option_errors(tmp_path, args, msg, code):
    text_frame(20).to_csv(tmp_path / "r.csv", index=False)
    r = _invoke("fit", tmp_path / "r.csv", "--backbone", "tiny-bert", "--out", tmp_path / "m", *args)
    assert r.exit_code == code and msg in r.output
    assert not (tmp_path / "m").exists()  # each is found before anything is trained or written


def test_image_fairness_needs_metadata(image_folder, tmp_path):
    r = _invoke("fit", image_folder, "--backbone", "tiny-cnn", "--out", tmp_path / "m", "--group-col", "site")
    assert r.exit_code == 2 and "--group-metadata" in r.output


def test_report_of_a_non_model_dir_exits_1(tmp_path):
    r = _invoke("report", tmp_path)
    assert r.exit_code == 1 and "config.json" in r.output
