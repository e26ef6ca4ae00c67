"""Self-training on unlabeled data: which pseudo-labels are chosen, that the student trains on them and is kept
only when it beats the teacher on validation, that labeled inputs never come back as unlabeled ones, and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier
from fmadapt.adapt.selftrain import drop_overlap, sample_pool, select_pseudo_labels
from fmadapt.cli import app
from fmadapt.data.examples import Examples
from fmadapt.errors import ConfigError, DataError


def _proba(pairs):
    """Rows of two-class probabilities from (class index, confidence) pairs."""
    out = np.zeros((len(pairs), 2))
    for i, (k, p) in enumerate(pairs):
        out[i, k], out[i, 1 - k] = p, 1 - p
    return out


def test_pseudo_labels_need_the_threshold_and_keep_the_labeled_class_proportions():
    # 10 confident "a" rows, 4 confident "b" rows, 2 unsure rows; labeled data half and half
    pairs = [(0, 0.91 + i / 100) for i in range(10)] + [(1, 0.95)] * 4 + [(0, 0.6), (1, 0.7)]
    rows, labels, info = select_pseudo_labels(_proba(pairs), ["a", "b"], ["a", "b"] * 5, threshold=0.9)
    assert info["confident"] == 14 and info["confident_per_class"] == {"a": 10, "b": 4}
    assert labels.count("a") == labels.count("b") == 4  # "b" has only 4 confident rows: "a" keeps as many
    assert [r for r, lab in zip(rows, labels, strict=True) if lab == "a"] == [6, 7, 8, 9]  # its most confident ones
    assert info["limited_by"] == "b" and info["per_class"] == {"a": 4, "b": 4}
    assert 14 not in rows and 15 not in rows  # below the threshold
    rows, labels, info = select_pseudo_labels(_proba(pairs), ["a", "b"], ["a", "b"] * 5, 0.9, balance=False)
    assert len(rows) == 14 and info["limited_by"] is None
    # labeled 3:1 -> pseudo-labels 3:1 (12 "a" for the 4 "b")
    pairs = [(0, 0.95)] * 30 + [(1, 0.95)] * 4
    _, labels, _ = select_pseudo_labels(_proba(pairs), ["a", "b"], ["a"] * 6 + ["b"] * 2, 0.9)
    assert labels.count("a") == 12 and labels.count("b") == 4


def test_no_confident_class_means_no_pseudo_labels():
    pairs = [(0, 0.99)] * 5 + [(1, 0.55)] * 5
    rows, labels, info = select_pseudo_labels(_proba(pairs), ["a", "b"], ["a", "b"], 0.9)
    assert rows == [] and labels == [] and info["limited_by"] == "b"
    rows, _, _ = select_pseudo_labels(_proba(pairs), ["a", "b"], ["a", "b"], 0.9, balance=False)
    assert rows == [0, 1, 2, 3, 4]


def test_labeled_inputs_are_dropped_from_the_pool(tmp_path):
    labeled = Examples(["x", "y"], ["a", "b"], ["0", "1"], modality="text")
    pool = Examples(["y", "z", "x", "w"], None, ["0", "1", "2", "3"], modality="text")
    out, dropped = drop_overlap(pool, labeled)
    assert out.inputs == ["z", "w"] and dropped == 2
    (tmp_path / "i.png").write_bytes(b"")
    os.symlink(tmp_path / "i.png", tmp_path / "link.png")
    img_labeled = Examples([str(tmp_path / "i.png")], ["a"], ["i"], modality="image")
    img_pool = Examples([str(tmp_path / "link.png"), str(tmp_path / "j.png")], None, ["l", "j"], modality="image")
    out, dropped = drop_overlap(img_pool, img_labeled)  # the same file under another name
    assert out.inputs == [str(tmp_path / "j.png")] and dropped == 1
    sampled = sample_pool(Examples([str(i) for i in range(100)], None, [str(i) for i in range(100)]), 10, 0)
    assert len(sampled) == 10 and sampled.inputs == sorted(sampled.inputs, key=int)
    assert sample_pool(sampled, 10, 0) is sampled


def _unlabeled_texts(n: int = 40, seed: int = 7) -> list[str]:
    return list(text_frame(n // 2, seed=seed)["text"])


@pytest.mark.parametrize("strategy", ["probe", "finetune"])
def test_student_trains_on_pseudo_labels_and_wins_only_on_validation(strategy, monkeypatch):
    from fmadapt.adapt import get_strategy

    sizes = []
    cls = type(get_strategy(strategy))
    fit = cls.fit

    def spy(self, model, train, val, cfg, ctx):
        sizes.append((len(train), len(val), sum(i.startswith("unlabeled:") for i in train.ids)))
        return fit(self, model, train, val, cfg, ctx)

    monkeypatch.setattr(cls, "fit", spy)
    df = text_frame(16)
    pool = _unlabeled_texts() + list(df["text"][:5])  # 5 labeled texts among them
    clf = TextClassifier(backbone="tiny-bert", strategy=strategy, epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2,
                         seed=0, pseudo_threshold=0.5).fit(df, unlabeled=pool)
    st = clf.history_["self_training"]
    unl = clf.data_summary_["unlabeled"]
    assert unl["found"] == 45 and unl["labeled_overlap_dropped"] >= 5 and unl["used"] == st["unlabeled"]
    if strategy == "finetune":
        sizes = [s for s in sizes if s[1]]  # (the LP-FT probe inside fine-tuning is spied too when it is a probe)
    teacher, student = sizes[0], sizes[-1]
    assert teacher[2] == 0 and student[2] == st["pseudo_labeled"] > 0  # the student got the pseudo-labels
    assert student[0] == teacher[0] + st["pseudo_labeled"] and student[1] == teacher[1]  # same validation
    assert st["kept"] == ("student" if st["student_val"] > st["teacher_val"] else "teacher")
    kept_val = st["student_val"] if st["kept"] == "student" else st["teacher_val"]
    assert clf.metrics_["val"]["accuracy"] == pytest.approx(kept_val)
    assert ("pseudo-labeled" in st["note"]) and st["kept"] in st["note"]


def test_the_better_model_on_validation_is_kept(monkeypatch, tmp_path):
    """Whatever the scores, the kept model is the one that scored higher (the teacher on a tie), and the
    model directory lists the pseudo-labels only when the student is kept."""
    from fmadapt import fitting

    df = text_frame(16)
    for student_wins in (True, False):
        calls = []

        def score(self, member, val, wins=student_wins, calls=calls):
            calls.append(member.model)
            return 0.5 if len(calls) == 1 else (0.9 if wins else 0.5)  # teacher first, then the student

        monkeypatch.setattr(fitting.FitRun, "_selection_score", score)
        clf = TextClassifier(backbone="tiny-bert", strategy="probe", seed=0, pseudo_threshold=0.5).fit(
            df, unlabeled=_unlabeled_texts())
        st = clf.history_["self_training"]
        assert st["kept"] == ("student" if student_wins else "teacher")
        assert (clf.model_ is calls[1]) == student_wins and (clf.model_ is calls[0]) != student_wins
        out = clf.save_pretrained(tmp_path / "m", report=student_wins)  # the same directory both times
        manifest = out / "manifests" / "pseudo_labels.csv"
        assert manifest.exists() == student_wins
        if student_wins:
            listed = pd.read_csv(manifest)
            assert len(listed) == st["pseudo_labeled"] and set(listed["label"]) <= {"pos", "neg"}
            html = (out / "report.html").read_text()
            assert "Self-training on unlabeled data" in html and "the student is kept" in html
        again = TextClassifier.from_pretrained(out)
        assert again.predict(["the film was great"]).shape == (1,)


def test_nothing_confident_keeps_the_teacher():
    clf = TextClassifier(backbone="tiny-bert", strategy="probe", seed=0, pseudo_threshold=1.0).fit(
        text_frame(16), unlabeled=_unlabeled_texts())
    st = clf.history_["self_training"]
    assert st["pseudo_labeled"] == 0 and st["kept"] == "teacher" and "no student trained" in st["note"]
    assert "student_val" not in st


def test_refused_combinations_stop_before_training(monkeypatch):
    from fmadapt import fitting

    monkeypatch.setattr(fitting.FitRun, "_fit_member", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError, match="refit_full"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", refit_full=True).fit(text_frame(8),
                                                                                      unlabeled=["a b c"])
    df = text_frame(8)
    with pytest.raises(DataError, match="no unlabeled input left"):
        TextClassifier(backbone="tiny-bert", strategy="probe").fit(df, unlabeled=list(df["text"]))
    with pytest.raises(ConfigError, match="pseudo_threshold"):
        TextClassifier(backbone="tiny-bert", pseudo_threshold=0.0).fit(df, unlabeled=["a"])


def test_images_from_a_folder_with_unreadable_files_and_labeled_ones(tmp_path):
    import shutil

    root = tmp_path / "all"
    labeled = write_image_folder(root / "labeled", per_class=8)
    pool = write_image_folder(root / "pool", per_class=6, seed=3)
    (pool / "red" / "broken.png").write_bytes(b"not an image")
    shutil.copy(labeled / "blue" / "blue_0.png", pool / "copy_of_a_labeled_photo.png")
    clf = ImageClassifier(backbone="tiny-cnn-cached", strategy="probe", seed=0, pseudo_threshold=0.4,
                          pseudo_max=12).fit(str(labeled), unlabeled=str(root))  # the labeled folder is inside
    unl = clf.data_summary_["unlabeled"]
    assert unl["found"] == 24 + 18 + 1 and unl["labeled_overlap_dropped"] == 24 + 1 and unl["used"] == 12
    assert [s["where"] for s in unl["skipped"]] == [str(pool / "red" / "broken.png")]
    assert clf.history_["self_training"]["unlabeled"] == 12


def test_cli_unlabeled_table_with_other_column_names(tmp_path):
    text_frame(16).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"sentence": _unlabeled_texts()}).to_csv(tmp_path / "more.csv", index=False)
    (tmp_path / "bad.csv").write_text("")
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--backbone",
                                 "tiny-bert", "--unlabeled", str(tmp_path / "more.csv"), "--set",
                                 "pseudo_threshold=0.5", "--report", "off"])
    assert r.exit_code == 0, r.output
    unl = json.loads((tmp_path / "m" / "metrics.json").read_text())["data"]["unlabeled"]
    assert unl["found"] == 40 and unl["used"] == 40 - unl["labeled_overlap_dropped"]
    assert f"self-training: {unl['used']} unlabeled input(s)" in r.output
    assert "more.csv: columns 'text'/'label' of training not found; using 'sentence'" in r.output
    kept = "the student is kept" in r.output
    assert (tmp_path / "m" / "manifests" / "pseudo_labels.csv").exists() == kept
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m2"), "--backbone",
                                 "tiny-bert", "--unlabeled", str(tmp_path / "bad.csv"), "--report", "off"])
    assert r.exit_code != 0 and "bad.csv" in r.output


def _auto_with_unlabeled(monkeypatch, student_score, leader="probe"):
    """An `auto` search on a simulated clock: every fit costs its own seconds, labelling 0.01 s per input; the
    probe (or `leader`) leads the candidates, and a model trained with pseudo-labels scores `student_score`."""
    from fmadapt import auto
    from fmadapt.auto_unlabeled import Unlabeled
    from fmadapt.config import FitConfig
    from fmadapt.member import Member

    clock = [0.0]
    monkeypatch.setattr(auto.time, "perf_counter", lambda: clock[0])
    fits = []

    def fit_one(cfg, tr, va):
        key = "probe" if cfg.strategy == "probe" else f"{cfg.strategy}{cfg.unfreeze}"
        clock[0] += 5.0 if key == "probe" else 20.0
        fits.append((key, list(tr.ids)))
        pseudo = any(i.startswith("unlabeled:") for i in tr.ids)
        score = student_score if pseudo else (0.8 if key == leader else 0.5)
        return Member(score, cfg, {"epochs_run": 4, "best_epoch": 3}, key != "probe")

    def proba(member, ex):
        clock[0] += 0.01 * len(ex)
        k = np.asarray([int(t[1:]) % 2 for t in ex.inputs])
        return np.stack([np.where(k == 0, 0.95, 0.05), np.where(k == 0, 0.05, 0.95)], axis=1)

    def metrics(member):
        return {"accuracy": member.model, "macro_f1": member.model, "balanced_accuracy": member.model}

    tr = Examples(inputs=["a"] * 20, labels=["x", "y"] * 10, ids=[str(i) for i in range(20)])
    va = Examples(inputs=["b"] * 4, labels=["x", "y"] * 2, ids=[f"v{i}" for i in range(4)])
    pool = Examples(inputs=[f"u{i}" for i in range(1000)], labels=None, ids=[str(i) for i in range(1000)],
                    modality="image")  # (images: no continued pretraining of texts in this test)
    cfg = FitConfig(strategy="auto", time_budget="600s", auto_ngram=False)
    search = auto.AutoSearch(cfg, "audio", fit_one, metrics, None, Unlabeled(pool, proba, ["x", "y"]))
    return search.run(tr, va), fits


def test_auto_self_trains_its_leader_within_the_budget_and_keeps_the_student_only_if_it_wins(monkeypatch):
    from fmadapt.auto_unlabeled import affordable

    (final, _, history), fits = _auto_with_unlabeled(monkeypatch, student_score=0.9)
    rows = {r["candidate"]: r for r in history["auto"]["candidates"]}
    assert rows["continued pretraining"]["status"].startswith("skipped: audio")
    assert rows["probe + self-training"]["status"] == "ran" and history["auto"]["winner"] == "probe + self-training"
    info = history["auto"]["self_training"]
    # the budget set how many were labeled: more than the first chunk, fewer than all 1,000
    assert 256 < info["labeled_by_teacher"] < 1000 and info["teacher"] == "probe"
    assert info["pseudo_labeled"] == 2 * min(info["confident_per_class"].values())  # (balanced: half and half)
    assert sum(info["confident_per_class"].values()) == info["labeled_by_teacher"]
    assert info["per_class"] == {"x": info["pseudo_labeled"] // 2, "y": info["pseudo_labeled"] // 2}
    # the student (a probe) trained on the training split + the pseudo-labels, the final model on those + val
    student = [ids for key, ids in fits if any(i.startswith("unlabeled:") for i in ids)]
    assert len(student) == 2 and len(student[0]) == 20 + info["pseudo_labeled"]
    assert len(student[1]) == 24 + info["pseudo_labeled"] and {"v0", "v3"} <= set(student[1])
    assert final.pseudo is not None and len(final.pseudo) == info["pseudo_labeled"]
    assert final.history["self_training"]["kept"] == "student"
    assert "pseudo-labels" in history["auto"]["final"] and "pseudo" not in rows["probe + self-training"]
    # a student that does not beat its teacher on validation is not kept
    (final, _, history), fits = _auto_with_unlabeled(monkeypatch, student_score=0.8)
    assert history["auto"]["winner"] == "probe" and final.pseudo is None and "self_training" not in final.history
    # a budget of 100 s with a 10 s teacher on 100 examples and 0.1 s per input labelled: 400 inputs, which cost
    # 40 s to label and a 1.2 x 10 s x (100 + 400) / 100 = 60 s student
    assert affordable(100.0, 10.0, 100, 0.1, 0) == 400 and affordable(5.0, 10.0, 100, 0.1, 0) == 0


def test_auto_self_trains_a_fine_tuned_leader_with_its_settings(monkeypatch):
    (final, _, history), fits = _auto_with_unlabeled(monkeypatch, student_score=0.9, leader="finetune2")
    rows = {r["candidate"]: r for r in history["auto"]["candidates"]}
    assert rows["finetune top 2 groups + self-training"]["status"] == "ran"
    assert history["auto"]["winner"] == "finetune top 2 groups + self-training"
    assert {key for key, ids in fits if any(i.startswith("unlabeled:") for i in ids)} == {"finetune2"}
    assert final.pseudo is not None and "pseudo-labels" in history["auto"]["final"]


def test_when_an_ngram_candidate_leads_the_leading_neural_candidate_teaches():
    from types import SimpleNamespace

    from fmadapt.auto import AutoSearch
    from fmadapt.auto_unlabeled import Unlabeled, self_training_trial
    from fmadapt.config import FitConfig

    taught = []

    def proba(member, ex):
        taught.append(member)
        return np.tile([[0.97, 0.03]], (len(ex), 1))

    def trial(label, over, seed, train, val, left):
        row = {"candidate": label, "strategy": over["strategy"], "status": "ran", "val_score": 0.9, "metrics": {},
               "seconds": [1.0], "seeds": [seed]}
        return row, "student"

    pool = Examples(inputs=[f"u{i}" for i in range(10)], labels=None, ids=[str(i) for i in range(10)])
    probe = {"row": {"candidate": "probe", "strategy": "probe", "seconds": [1.0], "seeds": [0], "overrides":
                     {"strategy": "probe"}, "val_score": 0.7}, "member": "probe model", "row_score": 0.7}
    ngram = {"row": {"candidate": "n-gram tf-idf", "strategy": "ngram", "seconds": [0.1], "seeds": [0],
                     "val_score": 0.8}, "member": {"ngram_weight": 1.0}, "row_score": 0.8}
    search = SimpleNamespace(unlabeled=Unlabeled(pool, proba, ["x", "y"]), cfg=FitConfig(pseudo_balance=False),
                             best_neural=probe, budget=600.0, elapsed=lambda: 0.0, trial=trial,
                             better=AutoSearch.better, self_training=None)
    rows = []
    tr = Examples(inputs=["a", "b"], labels=["x", "y"], ids=["0", "1"])
    best = self_training_trial(search, tr, tr, rows, ngram)
    assert taught == ["probe model"] and rows[-1]["candidate"] == "probe + self-training"
    assert len(rows[-1]["pseudo"]) == 10 and best["member"] == "student"  # (0.9 beats the n-gram model's 0.8)
    search.best_neural = None  # no neural candidate ran: nothing teaches
    self_training_trial(search, tr, tr, rows, ngram)
    assert rows[-1]["status"] == "skipped: no neural candidate to label the unlabeled inputs"
