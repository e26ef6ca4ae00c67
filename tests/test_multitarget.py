"""Several targets from one table (`targets=`, the CLI's repeated --label): one frozen backbone whose features are
computed once per input, a head per target of any task, one split, one model directory whose targets also load
alone, prefixed prediction columns, and the errors."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fmadapt import TextClassifier, load_model
from fmadapt.cli import app
from fmadapt.errors import ArtifactError, ConfigError, DataError
from fmadapt.predictor import Predictor
from fmadapt.tasks.targets import target_dirs, target_specs


def reviews(n: int, seed: int) -> pd.DataFrame:
    """A verdict from the words, a score from the words and the age, tags from the topic words."""
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    topic = rng.choice(["fit", "colour", "fabric"], n)
    age = rng.integers(18, 70, n).astype(float)
    words = np.where(good, "lovely great", "awful poor")
    return pd.DataFrame({
        "text": [f"{w} {t} item {i}" for w, t, i in zip(words, topic, rng.integers(0, 10**6, n), strict=True)],
        "verdict": np.where(good, "yes", "no"),
        "score": np.where(good, 4.0, 2.0) + (age - 44) / 52 + rng.normal(0, 0.1, n),
        "tags": topic, "age": age})


def test_target_specs_and_directories():
    assert target_specs("rating:regression, recommended") == [("rating", "regression"),
                                                              ("recommended", "classification")]
    assert target_specs("a,b", "regression") == [("a", "regression"), ("b", "regression")]
    assert target_specs("x:y:multilabel,b") == [("x:y", "multilabel"), ("b", "classification")]
    for bad, why in (("a", "names one target"), ("a,a", "named twice"), ("a:nope,b", "unknown task"),
                     ("a,,b", "empty label column")):
        with pytest.raises(ValueError, match=why):
            target_specs(bad)
    assert target_dirs(["rating", "my rating", "my/rating", "é"]) == ["rating", "my_rating", "my_rating_2", "target3"]


def test_one_backbone_one_split_a_head_per_target(monkeypatch):
    import fmadapt.fitting as fitting
    import fmadapt.runtime.features as features

    built, extracted = [], []
    create, loader = fitting.create_backbone, features.make_loader
    monkeypatch.setattr(fitting, "create_backbone", lambda name: built.append(name) or create(name))
    monkeypatch.setattr(features, "make_loader", lambda *a, **k: extracted.append(len(a[1])) or loader(*a, **k))
    batches = features._IdBatches  # (texts: the token ids padded into batches, no loader)
    monkeypatch.setattr(features, "_IdBatches", lambda ids, *a: extracted.append(len(ids)) or batches(ids, *a))
    train = reviews(160, 0)

    def fit(targets: str) -> TextClassifier:
        built.clear(), extracted.clear()
        return TextClassifier(backbone="tiny-bert-cached", targets=targets, cache=False, progress=False).fit(
            train.drop(columns=["age"]))

    two = fit("verdict,score:regression")
    two_extracted = list(extracted)
    three = fit("verdict,score:regression,tags:multilabel")
    assert built == ["tiny-bert-cached"]  # the backbone built once for the three targets
    assert extracted == two_extracted  # a third head computes no feature of its own
    assert [p.config_.task for p in three.targets_.values()] == ["classification", "regression", "multilabel"]
    val_ids = {name: p.splits_["val"].ids for name, p in three.targets_.items()}
    assert val_ids["verdict"] == val_ids["score"] == val_ids["tags"]  # one split (random, seeded)
    assert val_ids["verdict"] == two.targets_["verdict"].splits_["val"].ids
    a, b, c = (p.members_[0].model.backbone for p in three.targets_.values())
    assert a is b is c
    test = reviews(40, 1)
    extracted.clear()
    table = three.predict_table(test)
    assert extracted == [len(test)]  # prediction: one pass through the backbone for every head
    assert list(table.columns[:4]) == ["id", "text", "verdict_pred", "verdict_prob_no"]
    assert {"score_pred", "score_lower", "score_upper", "tags_pred", "tags_prob_fit"} <= set(table.columns)
    assert (table["score_lower"] < table["score_pred"]).all()
    verdict = three.target("verdict")
    np.testing.assert_array_equal(table["verdict_pred"], verdict.predict(test))  # each head as alone
    pred = three.predict(test)
    assert list(pred.columns) == ["verdict", "score", "tags"] and len(pred) == len(test)
    assert set(three.predict_proba(test)) == {"verdict", "tags"}  # regression has no probabilities
    metrics = three.evaluate(test)["targets"]
    assert metrics["verdict"]["accuracy"] > 0.5 and "rmse" in metrics["score"] and "micro_f1" in metrics["tags"]
    assert three.score(test) == pytest.approx(np.mean([verdict.score(test), three.target("score").score(test),
                                                        three.target("tags").score(test)]))
    with pytest.raises(ConfigError, match="no target 'nope'"):
        three.target("nope")


def test_save_load_and_each_target_alone(tmp_path):
    train, test = reviews(120, 0), reviews(30, 1)
    clf = TextClassifier(backbone="tiny-bert-cached", targets="verdict,score:regression", features="auto",
                         progress=False).fit(train)
    for p in clf.targets_.values():  # another target is never an input of a head
        assert p.data_summary_["table_features"]["columns"] == ["tags", "age"]
    out = clf.save_pretrained(tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "text-multi-target"
    assert [(t["name"], t["task"], t["dir"]) for t in config["targets"]] == [
        ("verdict", "classification", "targets/verdict"), ("score", "regression", "targets/score")]
    assert set(json.loads((out / "metrics.json").read_text())["targets"]) == {"verdict", "score"}
    assert 'href="targets/score/report.html"' in (out / "report.html").read_text()
    import yaml

    meta = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])  # the hub layout's front matter
    assert meta["tags"] == ["fmadapt", "probe", "classification", "regression", "multi-target"]
    names = [m["name"] for r in meta["model-index"][0]["results"] for m in r["metrics"]]
    assert "verdict val accuracy" in names and "score val rmse" in names
    assert (out / "targets" / "score" / "report.html").is_file()
    back = load_model(out)
    pd.testing.assert_frame_equal(back.predict_table(test), clf.predict_table(test))
    backbones = [p.members_[0].model.backbone for p in back.targets_.values()]
    assert backbones[0] is backbones[1]  # one frozen backbone in memory
    alone = load_model(out / "targets" / "score")  # a complete model directory of one target
    assert isinstance(alone, Predictor) and alone.regression
    np.testing.assert_allclose(alone.predict(test), clf.predict(test)["score"].to_numpy())
    again = TextClassifier.from_pretrained(out)
    assert again.target_names == ["verdict", "score"]
    with pytest.raises(ArtifactError, match="several targets"):
        Predictor.from_pretrained(out)


def test_rows_without_one_targets_label_still_train_the_others():
    train = reviews(120, 0)
    train.loc[::4, "score"] = np.nan
    clf = TextClassifier(backbone="tiny-bert", targets="verdict,score:regression", progress=False).fit(train)
    verdict, score = clf.target("verdict"), clf.target("score")
    assert sum(verdict.data_summary_["sizes"].values()) == 120
    assert sum(score.data_summary_["sizes"].values()) == 90
    assert any("missing label in column 'score'" in s["reason"] for s in score.data_summary_["skipped"])
    assert set(score.splits_["val"].ids) <= set(verdict.splits_["val"].ids)


@pytest.mark.parametrize("options, message", [
    ({"strategy": "contrastive"}, "not 'contrastive'"),
    ({"label_col": "verdict"}, "not both"),
    ({"target_weights": "score=2"}, "the probe fits each target's head on its own"),
    ({"strategy": "finetune", "target_weights": "rating=2"}, "'rating', not a target"),
    ({"strategy": "finetune", "target_weights": "score=-1"}, "NAME=POSITIVE_NUMBER"),
])
def test_what_several_targets_refuse(options, message):
    with pytest.raises(ConfigError, match=message):
        TextClassifier(backbone="tiny-bert", targets="verdict,score:regression", **options)
    with pytest.raises(ConfigError, match="name the targets"):
        TextClassifier(backbone="tiny-bert", target_weights="score=2")


def test_one_backbone_fine_tuned_for_every_target(tmp_path, monkeypatch):
    import fmadapt.runtime.features as features

    train, test = reviews(160, 0), reviews(40, 1)
    clf = TextClassifier(backbone="tiny-bert-cached", strategy="finetune", epochs=1, restore_best=False,
                         targets="verdict,score:regression,tags:multilabel", target_weights="score=2",
                         progress=False).fit(train.drop(columns=["age"]))
    members = [p.members_[0] for p in clf.targets_.values()]
    assert all(m.trains_backbone and m.config.strategy == "finetune" for m in members)
    assert members[0].model.backbone is members[1].model.backbone is members[2].model.backbone
    joint = clf.target("score").history_
    assert [(t["name"], t["outputs"], t["loss_weight"]) for t in joint["joint_targets"]] == [
        ("verdict", 2, 1.0), ("score", 1, 2.0), ("tags", 3, 1.0)]
    assert joint["metric"] == "joint" and len(joint["epochs"]) == 1
    assert clf.target("score").interval_ is not None and clf.target("tags").thresholds_ is not None
    loaders = []
    loader = features.make_loader
    monkeypatch.setattr(features, "make_loader", lambda *a, **k: loaders.append(len(a[1])) or loader(*a, **k))
    batches = features._IdBatches  # (texts: the token ids padded into batches, no loader)
    monkeypatch.setattr(features, "_IdBatches", lambda ids, *a: loaders.append(len(ids)) or batches(ids, *a))
    table = clf.predict_table(test)
    assert loaders == [len(test)]  # the fine-tuned backbone runs once for the three heads
    out = clf.save_pretrained(tmp_path / "m", report=False)
    assert json.loads((out / "targets" / "tags" / "config.json").read_text())["backbone_weights"] == "included"
    assert "fine-tuned for all targets at once" in (out / "README.md").read_text()
    back = load_model(out)
    shared = [p.members_[0].model.backbone for p in back.targets_.values()]
    assert shared[0] is shared[1] is shared[2]  # equal weights: one module in memory again
    pd.testing.assert_frame_equal(back.predict_table(test), table, atol=1e-5)
    alone = load_model(out / "targets" / "score")
    np.testing.assert_allclose(alone.predict(test), table["score_pred"], atol=1e-5)


def test_joint_fine_tuning_reads_the_table_beside_the_text(tmp_path):
    train, test = reviews(160, 2), reviews(40, 3)
    train.loc[::5, "score"] = np.nan  # (the joint rows' table columns then come from both targets' splits)
    clf = TextClassifier(backbone="tiny-bert-cached", strategy="finetune", epochs=1, restore_best=False,
                         targets="verdict,score:regression", features="age", progress=False).fit(
        train.drop(columns=["tags"]))
    verdict, score = clf.target("verdict"), clf.target("score")
    assert verdict.members_[0].trains_backbone and score.members_[0].trains_backbone
    assert verdict.table_encoder_ is score.table_encoder_  # the encoding the joint table head was trained on
    assert score.members_[0].model.table_head.weight.abs().sum() > 0
    assert score.evaluate(test)["r2"] > 0.5  # the age (only in the table) moves the score
    out = clf.save_pretrained(tmp_path / "m", report=False)
    pd.testing.assert_frame_equal(load_model(out).predict_table(test), clf.predict_table(test), atol=1e-5)
    with pytest.raises(DataError, match=r"table columns beside the text \(age\)"):
        clf.predict(["lovely great fit item"])


def test_the_probes_stay_when_fine_tuning_does_not_beat_them(monkeypatch):
    import fmadapt.multitarget_fit as multitarget

    seen = {}

    def no_better(probes, specs, cfg, progress, checkpoints=None):
        seen["start"] = {n: (p.config_.strategy, p.config_.refit) for n, p in probes.items()}
        return None, None, {"best_epoch": -1, "epochs": []}

    monkeypatch.setattr(multitarget, "fit_joint", no_better)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", targets="verdict,score:regression",
                         progress=False).fit(reviews(80, 0))
    assert seen["start"] == {"verdict": ("probe", False), "score": ("probe", False)}  # the start: honest probes
    for p in clf.targets_.values():
        assert not p.members_[0].trains_backbone and "the probes are kept" in p.history_["joint"]["note"]


def test_bad_target_specs_and_columns():
    with pytest.raises(ConfigError, match="unknown task 'numeric'"):
        TextClassifier(backbone="tiny-bert", targets="verdict,score:numeric")
    with pytest.raises(DataError, match="'nope'"):
        TextClassifier(backbone="tiny-bert", targets="verdict,nope", progress=False).fit(reviews(60, 0))
    with pytest.raises(DataError, match="row"):  # a regression target that is not a number names its row
        TextClassifier(backbone="tiny-bert", targets="verdict:regression,score:regression",
                       progress=False).fit(reviews(60, 0))


def test_cli_fit_predict_evaluate_with_several_labels(tmp_path):
    data, test = tmp_path / "train.csv", tmp_path / "test.csv"
    reviews(120, 0).to_csv(data, index=False)
    reviews(30, 1).to_csv(test, index=False)
    out = tmp_path / "model"
    run = CliRunner().invoke(app, ["fit", str(data), "--backbone", "tiny-bert", "--text", "text",
                                   "--label", "verdict", "--label", "score:regression", "--out", str(out),
                                   "--report", "basic", "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.output.strip().splitlines()[-1])
    assert summary["task"] == "text-multi-target" and set(summary["targets"]) == {"verdict", "score"}
    assert summary["targets"]["score"]["metrics"]["val"]["rmse"] > 0
    assert (out / "targets" / "verdict" / "model.safetensors").is_file()
    pred = tmp_path / "pred.csv"
    run = CliRunner().invoke(app, ["predict", str(out), str(test), "--output", str(pred)])
    assert run.exit_code == 0, run.output
    table = pd.read_csv(pred)
    assert {"verdict_pred", "score_pred", "score_lower", "score_upper"} <= set(table.columns)
    run = CliRunner().invoke(app, ["evaluate", str(out), str(test), "--json"])
    assert run.exit_code == 0, run.output
    metrics = json.loads(run.output.strip().splitlines()[-1])["targets"]
    assert metrics["verdict"]["n"] == 30 and "r2" in metrics["score"]
    assert (out / "targets" / "score" / "report.html").is_file()
    run = CliRunner().invoke(app, ["evaluate", str(out), str(test), "--label", "verdict"])
    assert run.exit_code == 2 and "their own columns" in run.output
    (out / "report.html").unlink()
    run = CliRunner().invoke(app, ["report", str(out)])  # the index again, and each target's own report
    assert run.exit_code == 0, run.output
    index = (out / "report.html").read_text()
    assert 'href="targets/verdict/report.html"' in index and "RMSE" in index and "frozen" in index


@pytest.mark.integration
def test_a_joint_fine_tune_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import hashlib

    from conftest import interrupt_then_resume

    data = reviews(48, 0).drop(columns=["age"])

    def make() -> TextClassifier:
        return TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=3, batch_size=8,
                              restore_best=False, targets="verdict,score:regression", cache=False, progress=False)

    def digest(clf: TextClassifier) -> str:
        h = hashlib.sha256()
        for p in clf.targets_.values():
            for t in p.members_[0].model.state_dict().values():
                h.update(t.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    whole = make().fit(data)
    resumed = interrupt_then_resume(make, data, tmp_path / "ck", monkeypatch)
    assert digest(resumed) == digest(whole)
    assert resumed.target("score").interval_ == whole.target("score").interval_


def test_joint_rows_take_each_examples_table_row_from_the_target_that_has_it():
    from fmadapt.multitarget_fit import _rows_of

    a = pd.DataFrame({"age": [10.0, 30.0]})  # target 0's split: ids "1", "3"
    b = pd.DataFrame({"age": [20.0, 30.0, 40.0]})  # target 1's split: ids "2", "3", "4"
    where = {"1": (0, 0), "3": (0, 1), "2": (1, 0), "4": (1, 2)}
    rows = _rows_of(where, [a, b], ["4", "1", "2", "3"])
    assert rows["age"].tolist() == [40.0, 10.0, 20.0, 30.0] and list(rows.index) == [0, 1, 2, 3]


def test_auto_chooses_between_the_probes_and_a_joint_fine_tune(tmp_path):
    train, test = reviews(120, 4), reviews(30, 5)
    clf = TextClassifier(backbone="tiny-bert-cached", strategy="auto", time_budget="120s", epochs=1,
                         targets="verdict,score:regression", target_weights="score=2", progress=False).fit(train)
    auto = clf.target("score").history_["auto"]
    assert [r["candidate"] for r in auto["candidates"]] == ["probe", "finetune all layers, every target at once"]
    assert "score=2" in auto["why"] and all(r["status"] == "ran" for r in auto["candidates"])
    scores = {r["candidate"]: r["val_score"] for r in auto["candidates"]}
    best = max(scores.values())
    assert scores[auto["winner"]] == best and (auto["winner"] == "probe" or scores["probe"] < best)
    tuned = auto["winner"] != "probe"
    assert all(p.members_[0].trains_backbone is tuned or p.history_.get("joint", {}).get("best_epoch") == -1
               for p in clf.targets_.values())
    out = clf.save_pretrained(tmp_path / "m", report=False)
    pd.testing.assert_frame_equal(load_model(out).predict_table(test), clf.predict_table(test), atol=1e-5)


def test_auto_with_several_targets_skips_fine_tuning_past_the_budget():
    clf = TextClassifier(backbone="tiny-bert", strategy="auto", time_budget="1s", targets="verdict,score:regression",
                         progress=False).fit(reviews(60, 6))
    auto = clf.target("verdict").history_["auto"]
    assert auto["winner"] == "probe" and auto["candidates"][1]["status"] == "skipped: time budget"
    assert not any(p.members_[0].trains_backbone for p in clf.targets_.values())


def test_an_ensemble_over_backbones_gives_every_target_a_head_on_each(tmp_path):
    train, test = reviews(120, 7), reviews(30, 8)
    clf = TextClassifier(backbone="tiny-bert", ensemble_backbones="tiny-bert,tiny-bert-cached",
                         targets="verdict,score:regression,tags:multilabel", progress=False).fit(train)
    for p in clf.targets_.values():
        assert [m.model.backbone.cfg.name for m in p.members_] == ["tiny-bert", "tiny-bert-cached"]
    cached = [p.members_[1].model.backbone for p in clf.targets_.values()]
    assert cached[0] is cached[1] is cached[2]  # each backbone built once for every target
    assert [m["backbone"] for m in clf.target("tags").history_["ensemble"]] == ["tiny-bert", "tiny-bert-cached"]
    out = clf.save_pretrained(tmp_path / "m", report=False)
    back = load_model(out)
    assert all(len(p.members_) == 2 for p in back.targets_.values())
    pd.testing.assert_frame_equal(back.predict_table(test), clf.predict_table(test), atol=1e-5)


def test_a_jointly_fine_tuned_ensemble_runs_once_per_member(tmp_path):
    train, test = reviews(100, 9), reviews(30, 10)
    clf = TextClassifier(backbone="tiny-bert-cached", strategy="finetune", ensemble=2, epochs=1, restore_best=False,
                         targets="verdict,score:regression", progress=False).fit(train)
    verdict, score = clf.target("verdict"), clf.target("score")
    assert [m.config.seed for m in verdict.members_] == [0, 1]
    assert all(m.trains_backbone for p in (verdict, score) for m in p.members_)
    for i in range(2):  # one fine-tuned backbone per member, shared by the targets
        assert verdict.members_[i].model.backbone is score.members_[i].model.backbone
    a, b = (m.model.backbone.state_dict() for m in verdict.members_)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two seeds, two runs
    out = clf.save_pretrained(tmp_path / "m", report=False)
    pd.testing.assert_frame_equal(load_model(out).predict_table(test), clf.predict_table(test), atol=1e-5)


def test_refit_full_retrains_the_joint_run_on_all_rows_for_its_epochs(tmp_path):
    train, test = reviews(100, 11), reviews(30, 12)
    clf = TextClassifier(backbone="tiny-bert-cached", strategy="finetune", epochs=2, restore_best=False,
                         refit_full=True, targets="verdict,score:regression", progress=False).fit(train)
    score = clf.target("score")
    h = score.history_
    assert h["refit_full"]["selection_best_epoch"] == 1 and "2 epoch(s)" in h["refit_full"]["note"]
    assert h["joint_examples"]["train"] == 100  # training + validation rows
    n_val = len(score.splits_["val"])
    assert n_val > 0 and score.metrics_["val"]["n"] == n_val
    assert all(p.refit_on_val_ for p in clf.targets_.values())  # figures and calibration from the run before
    out = clf.save_pretrained(tmp_path / "m", report=False)
    pd.testing.assert_frame_equal(load_model(out).predict_table(test), clf.predict_table(test), atol=1e-5)


def test_cli_auto_with_several_labels_prints_and_reports_its_candidates(tmp_path):
    data = tmp_path / "train.csv"
    reviews(80, 13).to_csv(data, index=False)
    out = tmp_path / "model"
    run = CliRunner().invoke(app, ["fit", str(data), "--backbone", "tiny-bert-cached", "--text", "text",
                                   "--label", "verdict", "--label", "score:regression", "--strategy", "auto",
                                   "--time-budget", "60s", "--epochs", "1", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "strategy auto (" in run.output and "finetune all layers, every target at once" in run.output
    page = (out / "targets" / "score" / "report.html").read_text()
    assert "every target at once" in page
