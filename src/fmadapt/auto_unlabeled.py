"""What `auto` does with unlabeled inputs (`fit(..., unlabeled=...)`, `--unlabeled`): two more kinds of candidate,
judged on the labeled validation split like the others.

- Continued pretraining (`pretrained_trials`): `fmadapt pretrain`'s default method on the unlabeled inputs, within
  PRETRAIN_SHARE of the budget (texts and images), then the probe and the leading fine-tuning candidate again on
  the pretrained backbone.
- Self-training (`self_training_trial`, adapt/selftrain.py): the leading candidate (the teacher) labels the
  unlabeled inputs; those it is sure about, in the labeled data's class proportions, join the training data of
  a student trained with the teacher's settings. The student wins only if it beats every candidate on validation;
  then the final model trains on training + validation data + the same pseudo-labels. How many unlabeled inputs
  are labeled is set by the time left: the first chunk's labelling time and the teacher's own fit time give the
  cost of each. When an n-gram or stacked candidate leads, the leading neural candidate teaches (a student of the
  n-gram model would be a neural model alone)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.examples import Examples, concat

if TYPE_CHECKING:
    from .auto import AutoSearch

#: unlabeled inputs labeled first, to time the teacher's labelling before the budget sets how many more
FIRST_CHUNK = 256
#: the student's fit time is estimated at this many times the teacher's, scaled by its training data
STUDENT_MARGIN = 1.2


@dataclass
class Unlabeled:
    """The unlabeled inputs of an `auto` search and what labelling them needs from the fit."""

    pool: Examples
    #: (member, examples) -> (N, C) probabilities of a candidate
    proba: Callable[[Any, Examples], np.ndarray]
    classes: list[str]


def pretrained_trials(search: AutoSearch, train: Examples, val: Examples, rows: list[dict[str, Any]],
                      best: Any) -> Any:
    """Continued pretraining on the unlabeled inputs (fmadapt pretrain's default method, within PRETRAIN_SHARE of
    the budget), then the probe and the leading fine-tuning candidate again on the pretrained backbone: it is kept
    only if one of them wins on validation like any other candidate."""
    from .auto import CLASSICAL, MIN_PRETRAIN_SECONDS, PRETRAIN_SHARE, RUN_SHARE, SELECTION_SHARE
    from .errors import FmadaptError
    from .pretrain.cached import pretrain_within

    label = "continued pretraining"
    skip = {"candidate": label, "strategy": "pretrain"}
    if search.modality not in ("text", "image"):
        rows.append({**skip, "status": f"skipped: {search.modality} backbones are not pretrained"})
        return best
    ran = [r for r in rows if r.get("status") == "ran" and r["strategy"] not in CLASSICAL]
    probe_seconds = next((r["seconds"][0] for r in ran if r["strategy"] == "probe"), 0.0)
    left = SELECTION_SHARE * search.budget - search.elapsed()
    seconds = min(PRETRAIN_SHARE * search.budget, left - 2 * probe_seconds - 10.0)
    if seconds < MIN_PRETRAIN_SECONDS:
        rows.append({**skip, "status": f"skipped: time budget ({max(0.0, left):.0f} s of the selection share "
                                       f"left; pretraining needs {MIN_PRETRAIN_SECONDS:.0f} s and a probe)"})
        return best
    from .data.cache import default_cache_dir

    cfg = search.cfg
    assert search.unlabeled is not None
    t = time.perf_counter()
    try:
        folder, record, reused = pretrain_within(default_cache_dir(), search.backbone,
                                                 list(search.unlabeled.pool.inputs), search.modality, seconds,
                                                 cfg.extend_vocab, cfg.image_size, cfg.seed, progress=False)
    except (FmadaptError, RuntimeError, ValueError) as e:
        rows.append({**skip, "status": f"skipped: {' '.join(str(e).split())[:200]}"})
        return best
    run = record["run"]
    search.pretrained = {"method": record["method"], "folder": str(folder), "reused": reused,
                         "unlabeled": record["data"]["trained_on"], "steps": run["steps"],
                         "epochs_done": run["epochs_done"], "seconds": run["seconds"],
                         "budget_seconds": round(seconds, 1), "loss": [run["loss_first"], run["loss_last"]],
                         "vocabulary": record.get("vocabulary") or {}}
    rows.append({**skip, "seconds": [round(time.perf_counter() - t, 1)],
                 "status": f"{'reused' if reused else 'done'}: {record['method']}, {run['steps']} steps on "
                           f"{record['data']['trained_on']} unlabeled inputs ({run['epochs_done']} epochs)"})
    plain = {"extend_vocab": False} if cfg.extend_vocab else {}
    trials = [("probe, pretrained backbone", {"strategy": "probe", **plain, "backbone": str(folder)})]
    tuned = sorted((r for r in ran if r["strategy"] != "probe"), key=lambda r: -r["val_score"])
    if tuned:
        trials.append((f"{tuned[0]['candidate']}, pretrained backbone",
                       {**tuned[0]["overrides"], "backbone": str(folder)}))
    for name, over in trials:
        left = SELECTION_SHARE * search.budget - search.elapsed()
        if left < (0.0 if over["strategy"] == "probe" else max(10.0, 0.05 * search.budget)):
            rows.append({"candidate": name, "strategy": over["strategy"], "status": "skipped: time budget"})
            continue
        row, member = search.trial(name, over, cfg.seed, train, val, RUN_SHARE * search.budget - search.elapsed())
        rows.append(row)
        best = search.better(best, row, member)
    return best


def affordable(left: float, teacher_seconds: float, n_train: int, per_input: float, labeled: int) -> int:
    """How many unlabeled inputs the time `left` allows labelling (`labeled` already are, at `per_input` seconds
    each) and training a student on, when the student's fit costs STUDENT_MARGIN x the teacher's
    (`teacher_seconds` on `n_train` examples), growing with its data (as if every input became a pseudo-label)."""
    per_student = STUDENT_MARGIN * teacher_seconds / max(1, n_train)
    room = left - STUDENT_MARGIN * teacher_seconds + per_input * labeled
    return max(0, int(room / (per_student + per_input)))


def self_training_trial(search: AutoSearch, train: Examples, val: Examples, rows: list[dict[str, Any]],
                        best: Any) -> Any:
    """The leading candidate as the teacher of a self-trained student: one more candidate (see the module's
    docstring). The pseudo-labels ride on the student's row (`pseudo`) for the final refit."""
    from .adapt.selftrain import pseudo_label
    from .auto import CLASSICAL, RUN_SHARE, SELECTION_SHARE

    assert search.unlabeled is not None
    unl, cfg = search.unlabeled, search.cfg
    # the leader teaches; when an n-gram or stacked candidate leads, the leading neural one does (a student of the
    # n-gram model would be a neural model alone)
    lead = best if best is not None and best["row"]["strategy"] not in CLASSICAL else search.best_neural
    teacher = lead["row"] if lead is not None else None
    label = f"{teacher['candidate']} + self-training" if teacher else "self-training"
    skip = {"candidate": label, "strategy": teacher["strategy"] if teacher else "selftrain"}
    if lead is None or teacher is None or lead["member"] is None:
        rows.append({**skip, "status": "skipped: no neural candidate to label the unlabeled inputs"})
        return best
    seconds = teacher["seconds"][0]
    selection = SELECTION_SHARE * search.budget
    if selection - search.elapsed() < STUDENT_MARGIN * seconds + 5.0:
        rows.append({**skip, "status": f"skipped: time budget (a student needs about {seconds:.0f} s or more)"})
        return best
    t = time.perf_counter()
    order = np.random.default_rng(cfg.seed).permutation(len(unl.pool))
    first = [int(i) for i in order[:FIRST_CHUNK]]
    proba = [unl.proba(lead["member"], unl.pool.subset(first))]
    per_input = (time.perf_counter() - t) / max(1, len(first))
    n = affordable(selection - search.elapsed(), seconds, len(train), per_input, len(first))
    more = [int(i) for i in order[len(first):n]]
    if more:
        proba.append(unl.proba(lead["member"], unl.pool.subset(more)))
        first += more
    picked = first[:n] if n < len(first) else first
    p = np.concatenate(proba)[: len(picked)]
    label_seconds = round(time.perf_counter() - t, 1)
    if not picked:
        rows.append({**skip, "status": "skipped: time budget (no time left to train a student after labelling)"})
        return best
    pseudo, info = pseudo_label(unl.pool.subset(picked), p, unl.classes, list(train.labels or []), cfg)
    summary = {"teacher": teacher["candidate"], "unlabeled": len(unl.pool), "labeled_by_teacher": len(picked),
               "label_seconds": label_seconds, **info}
    search.self_training = summary
    if pseudo is None:
        why = f"class {info['limited_by']!r} had" if info["limited_by"] else "there was"
        rows.append({**skip, "status": f"skipped: {why} no prediction that confident (pseudo_threshold "
                                       f"{cfg.pseudo_threshold:g})"})
        return best
    over = dict(teacher["overrides"])
    row, member = search.trial(label, over, teacher["seeds"][0], concat(train, pseudo), val,
                                RUN_SHARE * search.budget - search.elapsed())
    row["seconds"] = [round(row["seconds"][0] + label_seconds, 1)]  # (labelling is part of its cost)
    row["pseudo"] = pseudo
    summary["student_val_score"] = round(row["val_score"], 4)
    rows.append(row)
    return search.better(best, row, member)


def with_pseudo(train: Examples, row: dict[str, Any]) -> Examples:
    """A candidate's training data: the training split, plus its pseudo-labels for a self-trained student."""
    return concat(train, row["pseudo"]) if row.get("pseudo") is not None else train
