"""`auto` with a small validation split: the cheap candidates judged by cross-validation.

With 100 labels the validation split holds 20 examples, and a candidate wins by a whole example (5 points) or
not at all. On SST-2 (100 labels, seed 0) the n-gram model led the probe there by two sentences (0.65 against
0.55) and `auto` returned it: 0.5717 on the test set against the probe's 0.6766
(benchmarks/notes/auto_selftrain.md). The probe, the n-gram model and their stack cost seconds, so below
`SMALL_VALIDATION` validation examples (and up to the probe's own cross-validation size, `CV_MAX`) each is
judged again by k-fold cross-validation over training + validation data, every label used: the probe and the
n-gram model with their C (and class weighting, and the probe's scaling) chosen again that way, the stack with
its weight chosen on the other folds' out-of-fold predictions (so its score is not the best of its own weights).
Their rows' scores are then these, marked `judged_on`; fine-tuning candidates, which train once, keep their
validation scores, except one that kept its probe start (`best_epoch` -1): that model is the probe, and it gets the
probe's cross-validated score (on SST-2, 100 labels, such a candidate led on 20 validation sentences as a probe with
another C). The validation metrics kept for the winner are the out-of-fold ones of the validation rows,
from heads that did not see them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from .adapt.probe import CV_MAX
from .data.examples import Examples, concat
from .data.split import SMALL_VALIDATION

__all__ = ["SMALL_VALIDATION", "applies", "rescore"]


def applies(n_train: int, n_val: int) -> bool:
    """Whether the cheap candidates are judged by cross-validation: a validation split of a few dozen examples."""
    return 0 < n_val < SMALL_VALIDATION and n_train + n_val <= CV_MAX


def rescore(search: Any, train: Examples, val: Examples, rows: list[dict[str, Any]], members: dict[int, Any]
            ) -> str | None:
    """Judge the probe, n-gram and stack rows of `rows` (those not judged so yet) by cross-validation over
    training + validation data, in place; `members`: id(row) -> its model. The note for the history, or None
    when it does not apply (the hooks missing, a label prior, a class with one example)."""
    hooks = search.classical
    if hooks is None or search.cfg.label_template or not applies(len(train), len(val)):
        return None
    both = concat(train, val)
    y = hooks.targets(both)
    counts = np.bincount(y, minlength=hooks.n_classes)
    folds = min(5, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    how = f"{folds}-fold cross-validation on training + validation data ({len(y)} examples)"
    todo = [r for r in rows if r.get("status") == "ran" and "judged_on" not in r and r.get("pseudo") is None]
    oof: dict[str, np.ndarray] = {}
    for r in (r for r in todo if r["strategy"] == "probe"):
        member = members.get(id(r))
        if member is None or not hasattr(member, "model"):
            continue
        choice, p = hooks.probe_cv(member, both, folds)
        oof.setdefault("probe", p)  # (the first probe's: the one the stack blends)
        r["overrides"] = {**r["overrides"], "class_weight": "balanced" if choice["class_weighted"] else "none"}
        _judged(search, r, p, hooks, both, len(train), how, C=choice["C"], scaling=choice["scaling"])
    # a fine-tuning candidate that kept its probe start is that probe (on the same backbone): it gets its score
    probes = {r["overrides"].get("backbone"): r for r in rows if r["strategy"] == "probe" and r.get("judged_on")}
    for r in todo:
        probe_row = probes.get(r["overrides"].get("backbone"))
        if probe_row is not None and r["strategy"] not in ("probe", "ngram", "stack") and r.get("best_epoch") == -1:
            r["overrides"] = {**r["overrides"], "class_weight": probe_row["overrides"]["class_weight"]}
            r.update({k: list(v) if isinstance(v, list) else v for k, v in probe_row.items() if k in
                      ("val_accs", "val_acc", "val_scores", "val_score", "val_macro_f1", "metrics", "C")},
                     val_acc_split=r["val_acc"],
                     judged_on=f"its probe start, kept: the probe's {how}")
    ngram_row = next((r for r in todo if r["strategy"] == "ngram"), None)
    if ngram_row is not None and search.ngram_trial is not None:
        from .adapt import ngram
        from .adapt.headsearch import search as head_search
        from .adapt.headsearch import weightings
        from .adapt.imbalance import imbalance

        texts, n, seed = list(both.inputs), hooks.n_classes, search.cfg.seed

        def evaluate(c: float, weighted: bool, _scaling: str) -> np.ndarray:
            return ngram.out_of_fold(texts, y, n, c, weighted, seed, folds)

        compete = weightings(search.cfg.class_weight, imbalance(y, n, search.cfg)["ratio"])
        table, (c, weighted, _), p = head_search(evaluate, y, n, search.cfg.metric, compete, scalings=("tf-idf",),
                                                 extra={"folds": folds})
        hist = search.ngram_trial[1]
        hist.update(C=c, class_weighted=weighted, candidates=table, selection=how)
        oof["ngram"] = p
        _judged(search, ngram_row, p, hooks, both, len(train), how, C=c)
    stack_row = next((r for r in todo if r["strategy"] == "stack"), None)
    if stack_row is not None and {"probe", "ngram"} <= oof.keys():
        from .adapt import ngram

        weight, table = ngram.stack_weight(oof["probe"], oof["ngram"], y, search.cfg.metric, hooks.n_classes)
        honest = np.zeros_like(oof["probe"])  # each fold blended with the weight the other folds chose
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=search.cfg.seed + 1).split(y, y):
            w, _ = ngram.stack_weight(oof["probe"][tr], oof["ngram"][tr], y[tr], search.cfg.metric, hooks.n_classes)
            honest[te] = ngram.blend(oof["probe"][te], oof["ngram"][te], w)
        search.ngram_trial[1]["stack"] = {"weight": weight, "folds": folds, "weights": table,
                                          "chosen_by": f"out-of-fold {search.cfg.metric}, {how}"}
        stack_row["ngram_weight"] = weight
        members[id(stack_row)] = {"ngram_weight": weight}
        _judged(search, stack_row, honest, hooks, both, len(train), how + ", the weight chosen on the other folds",
                C=probes[None].get("C") if None in probes else None)
    return (f"the validation split holds {len(val)} examples (fewer than {SMALL_VALIDATION}): the probe, n-gram "
            f"and stack candidates were judged by {how}; fine-tuning candidates on the validation split")


def _judged(search: Any, row: dict[str, Any], p: np.ndarray, hooks: Any, both: Examples, n_train: int, how: str,
            **more: Any) -> None:
    """Row `row` scored on out-of-fold probabilities `p` of training + validation rows (the validation ones last)."""
    whole = hooks.metrics_on(p, both)
    score = search.sign * whole[search.metric]
    acc = whole.get("accuracy", score)
    row.update(val_acc_split=row["val_acc"], val_accs=[acc], val_acc=acc, val_scores=[score], val_score=score,
               val_macro_f1=round(whole["macro_f1"], 4) if "macro_f1" in whole else None,
               metrics=hooks.metrics(p[n_train:]), judged_on=how, **more)
