"""`auto` with a small validation split (auto_cv.py): the probe, n-gram and stack candidates judged by
cross-validation on training + validation data, fine-tuning candidates on the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from fmadapt.data.examples import Examples


def test_cross_validation_applies_to_a_few_dozen_validation_examples_only():
    from fmadapt.auto_cv import SMALL_VALIDATION, applies

    assert applies(200, SMALL_VALIDATION - 1) and not applies(200, SMALL_VALIDATION)
    assert not applies(990, 20)  # past the probe's own cross-validation size (CV_MAX, 1,000)
    assert not applies(100, 0)


def _search(monkeypatch, n_val):
    """An `auto` search over texts on a simulated clock whose validation split flatters the n-gram model (all
    `n_val` right) while, out of fold on training + validation data, it is a coin (one example in two) and the
    probe is right on 9 in 10; the probe and the fine-tuning candidates score 0.5 and 0.6 on validation, fine-tuning
    all layers 0.95 with the probe start it kept."""
    from types import SimpleNamespace

    from fmadapt import auto
    from fmadapt.adapt import ngram
    from fmadapt.config import FitConfig
    from fmadapt.member import Member

    clock = [0.0]
    monkeypatch.setattr(auto.time, "perf_counter", lambda: clock[0])
    classes = ["x", "y"]
    n_tr = 40
    tr = Examples(inputs=[f"t{i} word" for i in range(n_tr)], labels=classes * (n_tr // 2),
                  ids=[str(i) for i in range(n_tr)])
    va = Examples(inputs=[f"v{i} word" for i in range(n_val)], labels=classes * (n_val // 2),
                  ids=[f"v{i}" for i in range(n_val)])

    def onehot(y, right):
        p = np.full((len(y), 2), 0.1)
        pred = np.where(right, y, 1 - y)
        p[np.arange(len(y)), pred] = 0.9
        return p

    def targets(ex):
        return np.asarray([classes.index(v) for v in ex.labels])

    def accuracy(p, ex):
        return {"accuracy": float((p.argmax(1) == targets(ex)).mean()), "macro_f1": 0.0}

    fits = []

    def fit_one(cfg, train, val, refit=False):
        clock[0] += 1.0 if cfg.strategy == "probe" else 20.0
        fits.append((cfg, len(train), refit))
        if cfg.strategy == "finetune" and cfg.unfreeze == -1:  # all layers: kept its probe start, 0.95 on validation
            return Member(0.95, cfg, {"epochs_run": 2, "best_epoch": -1, "probe_C": 1.0}, True)
        return Member(0.5 if cfg.strategy == "probe" else 0.6, cfg, {"epochs_run": 2, "best_epoch": 1, "C": 1.0},
                      cfg.strategy != "probe")

    def probe_cv(member, ex, folds):
        y = targets(ex)
        right = np.arange(len(y)) % 10 != 0  # 9 in 10
        return {"C": 0.5, "class_weighted": False, "scaling": "global", "candidates": []}, onehot(y, right)

    hooks = SimpleNamespace(
        n_classes=2, targets=targets, metrics=lambda p: {**accuracy(p, va), "_proba": p}, metrics_on=accuracy,
        probe_cv=probe_cv, probe_out_of_fold=lambda m, ex, folds: probe_cv(m, ex, folds)[1])

    def select(tr_texts, y_tr, va_texts, y_va, n, metric, weightings, seed):  # all of validation right
        model = ngram.fit(tr_texts, y_tr, n, 1.0, False, seed)
        return model, {"C": 1.0, "class_weighted": False, "candidates": []}, onehot(y_va, np.ones(len(y_va), bool))

    monkeypatch.setattr(ngram, "select", select)
    monkeypatch.setattr(ngram, "out_of_fold", lambda texts, y, *a: onehot(y, np.arange(len(y)) % 2 == 0))
    cfg = FitConfig(strategy="auto", time_budget="600s")
    half = onehot(targets(va), np.arange(n_val) % 2 == 0)  # (the probe's validation probabilities: 0.5 right)
    search = auto.AutoSearch(cfg, "text", fit_one, lambda m: {"accuracy": m.model, "macro_f1": m.model,
                                                              "_proba": half}, hooks)
    return search.run(tr, va), fits


def test_a_small_validation_split_has_the_cheap_candidates_cross_validated(monkeypatch):
    (final, val_metrics, history), fits = _search(monkeypatch, n_val=10)
    auto = history["auto"]
    rows = {r["candidate"]: r for r in auto["candidates"]}
    judged = {name for name, r in rows.items() if r.get("judged_on")}
    assert judged == {"probe", "n-gram tf-idf", "stack: probe + n-gram", "finetune all layers"}
    assert "50 examples" in rows["probe"]["judged_on"] and "10 examples" in auto["small_validation"]
    # the validation split alone would have chosen the n-gram model (10 of 10 against the probe's 0.5)
    assert rows["n-gram tf-idf"]["val_acc_split"] == 1.0 and rows["probe"]["val_acc_split"] == 0.5
    assert rows["probe"]["val_acc"] == pytest.approx(0.9) and rows["n-gram tf-idf"]["val_acc"] == pytest.approx(0.5)
    assert rows["finetune top 2 groups"]["val_acc"] == 0.6 and "judged_on" not in rows["finetune top 2 groups"]
    # the candidate that kept its probe start is that probe: the probe's score (and a tie goes to the faster)
    everything = rows["finetune all layers"]
    assert everything["val_acc"] == pytest.approx(0.9) and everything["val_acc_split"] == 0.95
    assert "probe start" in everything["judged_on"] and everything["C"] == 0.5 and len(everything["seeds"]) == 1
    # the stack blends with weights chosen on the other folds: here the probe's, so it ties it, and is slower
    assert rows["stack: probe + n-gram"]["val_acc"] == pytest.approx(0.9)
    assert auto["winner"] == "probe" and "cross-validated accuracy, 0.9000" in auto["why"]
    # the final probe has the C and class weighting chosen by cross-validation, on training + validation data
    # (the probe's own refit: out of fold on training + validation data, C chosen as when it was judged)
    cfg, n_train, refit = fits[-1]
    assert cfg.strategy == "probe" and cfg.probe_c is None and cfg.class_weight == "none" and refit and n_train == 40
    assert "probe refit" in auto["final"]
    # the validation figures kept are the validation rows' out-of-fold ones (9 of its 10 right)
    assert val_metrics["accuracy"] == pytest.approx(0.9) and len(val_metrics["_proba"]) == 10
    assert auto["ngram"]["selection"].startswith("5-fold cross-validation")


def test_a_validation_split_of_50_or_more_judges_every_candidate_on_it(monkeypatch):
    (_, val_metrics, history), _ = _search(monkeypatch, n_val=50)
    auto = history["auto"]
    assert "small_validation" not in auto and not any(r.get("judged_on") for r in auto["candidates"])
    assert auto["winner"] == "n-gram tf-idf" and val_metrics["accuracy"] == 1.0
