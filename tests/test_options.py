"""Options from one source: FitConfig's fields carry group, help and choices; `--set`, `--config` files and the
CLI's flags come from them; the rules between options live in FitConfig.check."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from conftest import text_frame
from fmadapt import ConfigError, ImageClassifier, TextClassifier
from fmadapt.cli import app
from fmadapt.config import GROUPS, FitConfig
from fmadapt.options import flatten, parse_assignments, read_config_file

FIELDS = [f for f in dataclasses.fields(FitConfig) if f.name != "extra"]


def test_every_option_has_a_group_help_and_valid_choices():
    for f in FIELDS:
        assert f.metadata["group"] in GROUPS, f.name
        assert len(f.metadata["help"]) >= 10, f.name
        choices = f.metadata.get("choices")
        if choices:
            assert f.default is None or f.default in choices, f.name
            with pytest.raises(ConfigError, match=f"{f.name} must be one of {' | '.join(choices)}"):
                FitConfig(**{f.name: "no-such-choice"})
    assert {f.metadata["group"] for f in FIELDS} == set(GROUPS)  # no empty group


def test_set_assignments_take_flat_or_dotted_names_and_convert_types():
    got = parse_assignments(["optim.lr=1e-4", "dropout=0.1", "augment=none", "selection.restore_best=false",
                             "log-to=null", "optim.epochs=3", "keep=start_or_last"])
    assert got == {"lr": 1e-4, "dropout": 0.1, "augment": None, "restore_best": False, "log_to": None,
                   "epochs": 3, "keep": "start_or_last"}
    assert FitConfig(**got).epochs == 3
    with pytest.raises(ConfigError, match="'lrr'.*did you mean lr"):
        parse_assignments(["lrr=1"])
    with pytest.raises(ConfigError, match="metric is in group 'selection', not 'optim'"):
        parse_assignments(["optim.metric=accuracy"])
    with pytest.raises(ConfigError, match=r"'many' is not a valid value for epochs \(int, default 4"):
        parse_assignments(["epochs=many"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["dropout"])


def test_config_files_flat_grouped_or_dotted(tmp_path):
    y = tmp_path / "run.yaml"
    # YAML 1.1 reads 1e-4 (no dot) as a string: it is converted like a command-line value
    y.write_text("strategy: finetune\noptim:\n  lr: 1e-4\n  epochs: 2\nselection.metric: macro_f1\n"
                 "augment:\n  tta: yes\n")
    assert read_config_file(y) == {"strategy": "finetune", "lr": 1e-4, "epochs": 2, "metric": "macro_f1",
                                   "tta": True}
    j = tmp_path / "run.json"
    j.write_text(json.dumps({"optim": {"lr": 0.001}, "seed": 3}))
    assert read_config_file(j) == {"lr": 0.001, "seed": 3}
    # every option by its group reads back to the same config
    cfg = FitConfig(lr=3e-4, keep="best", log_to="csv")
    nested: dict = {}
    for f in FIELDS:
        nested.setdefault(f.metadata["group"], {})[f.name] = getattr(cfg, f.name)
    assert FitConfig(**flatten(nested, "x")) == cfg

    for text, message in [("optim: [1, 2]", "optim is a group of options"),
                          ("lr: 1\noptim:\n  lr: 2", "lr is given twice"),
                          ("optim:\n  epochs: many", "optim.epochs"), ("- lr", "expected a mapping"),
                          ("lr: [", "malformed YAML"),
                          ("x: !!python/object/apply:os.system ['true']", "malformed YAML")]:
        y.write_text(text)
        with pytest.raises(ConfigError, match=message) as e:
            read_config_file(y)
        assert str(y) in str(e.value)
    with pytest.raises(ConfigError, match="no such configuration file"):
        read_config_file(tmp_path / "missing.yaml")


def test_rules_between_options_are_checked_before_any_data_is_read(tmp_path):
    missing = tmp_path / "no-such-data.csv"  # a rule error must come first, not a missing-file error
    for options, message in [({"strategy": "auto", "ensemble": 2}, "does not combine with ensembles"),
                              ({"ensemble": 2}, "a probe is deterministic"),
                              ({"tta": True}, "tta"),
                              ({"adversarial": "fgsm"}, "adversarial 'fgsm' is for images"),
                              ({"adversarial": "embedding", "mixup": 0.2}, "do not combine"),
                              ({"cache_activations": "on", "text_noise": 0.1}, "cache_activations 'on'")]:
        with pytest.raises(ConfigError, match=message):
            TextClassifier(backbone="tiny-bert", **options).fit(missing)
    with pytest.raises(ConfigError, match="adversarial 'embedding' is for texts"):
        ImageClassifier(backbone="tiny-cnn", adversarial="embedding")
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", refit_full=True)
    with pytest.raises(ConfigError, match="refit_full"):
        clf.fit(missing, unlabeled=text_frame(4))
    # API values of the wrong type are option errors too, not a TypeError from a comparison
    with pytest.raises(ConfigError, match="option epochs: '4' is not of type int"):
        FitConfig(epochs="4")
    import numpy as np

    cfg = FitConfig(epochs=np.int64(3), lr=np.float32(0.5))  # numpy scalars become Python numbers (saved as JSON)
    assert type(cfg.epochs) is int and type(cfg.lr) is float and json.loads(cfg.to_json())["epochs"] == 3


def test_cli_flags_are_generated_from_the_options_and_config_files_apply(tmp_path):
    import typer

    runner = CliRunner()
    command = typer.main.get_command(app).commands["fit"]  # type: ignore[attr-defined]
    flags = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
    own = {"text_col": "--text", "label_col": "--label", "header": "--no-header"}
    for f in FIELDS:
        if f.name != "log_dir":
            assert own.get(f.name, "--" + f.name.replace("_", "-")) in flags, f.name
    assert "--no-tta" in flags and "--no-restore-best" in flags  # booleans both ways
    helptext = " ".join(runner.invoke(app, ["fit", "--help"]).output.split())
    for title in GROUPS.values():
        assert title in helptext
    keep = next(f for f in FIELDS if f.name == "keep")
    said = f"(one of {' | '.join(keep.metadata['choices'])}; default: {keep.default})"
    assert "".join(said.split()) in "".join(helptext.replace("│", "").split())

    data = tmp_path / "d.csv"
    text_frame(24).to_csv(data, index=False)
    conf = tmp_path / "run.yaml"
    conf.write_text("backbone: tiny-bert\noptim:\n  batch_size: 4\n  epochs: 2\nselection:\n  metric: macro_f1\n"
                    "model.seed: 5\n")
    r = runner.invoke(app, ["fit", str(data), "--out", str(tmp_path / "m"), "--config", str(conf), "--report", "off",
                            "--batch-size", "8", "--set", "selection.metric=balanced_accuracy", "--json"])
    assert r.exit_code == 0, r.output
    fit = json.loads((tmp_path / "m" / "config.json").read_text())["fit"]
    # the file's values, a flag over the file, --set over both; what neither gave keeps its default
    assert (fit["backbone"], fit["epochs"], fit["seed"]) == ("tiny-bert", 2, 5)
    assert fit["batch_size"] == 8 and fit["metric"] == "balanced_accuracy" and fit["keep"] == FitConfig.keep
    r = runner.invoke(app, ["fit", str(data), "--out", str(tmp_path / "m2"), "--config", str(tmp_path / "x.yaml")])
    assert r.exit_code == 2 and "no such configuration file" in r.output
    r = runner.invoke(app, ["fit", str(data), "--out", str(tmp_path / "m2"), "--metric", "f1"])
    assert r.exit_code == 2 and "metric must be one of accuracy | balanced_accuracy | macro_f1" in r.output


def test_an_unknown_estimator_keyword_is_an_option_error_naming_it():
    with pytest.raises(ConfigError, match=r"TextClassifier\(\.\.\.\): unknown option 'val' \(did you mean val_"):
        TextClassifier(val="val.csv")
    with pytest.raises(ConfigError, match="unknown option 'learning_rate'"):
        ImageClassifier(learning_rate=1e-3)
    assert ImageClassifier(extra={"note": "kept"}).options["extra"] == {"note": "kept"}
