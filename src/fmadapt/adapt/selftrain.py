"""Self-training on unlabeled data (pseudo-labelling; Lee, 2013; Xie et al., 2020, "Self-training with Noisy
Student"). A first model (the teacher) is trained on the labeled data; it labels the user's unlabeled inputs;
the inputs it is sure about (probability >= `pseudo_threshold`), in the labeled data's class proportions, join
the training data of a second model (the student), trained from the pretrained weights again. The student is
kept only if it does better than the teacher on the labeled validation split, which neither trained on
(on a tie, the teacher).

The choice of pseudo-labels is made by pure functions; `SelfTraining`, a base of the fit pipeline
(fitting.FitRun), runs the two fits with the pipeline's own `_fit_member` and `_member_proba`."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import FitConfig
from ..data.cache import content_hash
from ..data.examples import Examples, concat
from ..errors import DataError
from ..evaluate.metrics import metric_score

if TYPE_CHECKING:
    from ..member import Member
    from .base import FitContext


def _digest(path: str) -> str | None:
    """The file's content hash, as the feature cache keys images and sounds (None when it cannot be read)."""
    try:
        return content_hash(path, "image")
    except OSError:
        return None


def drop_overlap(pool: Examples, *labeled: Examples) -> tuple[Examples, int]:
    """The pool without the inputs that are also labeled ones, and how many were dropped: the same text, or
    the same image or sound (the same file under any name, or a copy with the same bytes). A validation example
    labeled by the teacher and trained on by the student would make the student look better than it is."""
    if pool.modality == "text":
        seen = {v for ex in labeled for v in ex.inputs}
        keep = [i for i, v in enumerate(pool.inputs) if v not in seen]
    else:
        real = {os.path.realpath(v) for ex in labeled for v in ex.inputs}
        by_size: dict[int, list[str]] = {}
        for v in real:
            with contextlib.suppress(OSError):
                by_size.setdefault(os.path.getsize(v), []).append(v)
        digests: dict[int, set[str | None]] = {}  # only files of a size some labeled file has are read
        keep = []
        for i, v in enumerate(pool.inputs):
            r = os.path.realpath(v)
            if r in real:
                continue
            try:
                size = os.path.getsize(r)
            except OSError:
                size = -1
            if size in by_size:
                if size not in digests:
                    digests[size] = {_digest(x) for x in by_size[size]}
                if _digest(r) in digests[size] - {None}:
                    continue
            keep.append(i)
    return (pool if len(keep) == len(pool) else pool.subset(keep)), len(pool) - len(keep)


def sample_pool(pool: Examples, limit: int | None, seed: int) -> Examples:
    """At most `limit` inputs of the pool: a seeded random sample, in the pool's order."""
    if limit is None or len(pool) <= limit:
        return pool
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), size=limit, replace=False))
    return pool.subset([int(i) for i in idx])


def select_pseudo_labels(proba: np.ndarray, classes: list[str], labeled: list[str], threshold: float,
                         balance: bool = True) -> tuple[list[int], list[str], dict[str, Any]]:
    """Which pool inputs to train on, with which label: (row indices, labels, a summary).

    A row qualifies when its largest probability is >= threshold. With `balance`, each class keeps its most
    confident rows in the proportions of the labeled training data (as many in all as the class the teacher is
    least sure of allows): a teacher that favours one class would otherwise hand the student more of it."""
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(1) if len(proba) else np.zeros(0, dtype=int)
    conf = proba.max(1) if len(proba) else np.zeros(0)
    ok = conf >= threshold
    confident = {c: int(np.sum(ok & (pred == k))) for k, c in enumerate(classes)}
    counts = Counter(labeled)
    share = {c: counts.get(c, 0) / max(1, len(labeled)) for c in classes}
    if balance:
        scale = min((confident[c] / share[c] for c in classes if share[c] > 0), default=0.0)
        quota = {c: min(confident[c], int(math.floor(scale * share[c] + 1e-9))) for c in classes}
    else:
        quota = dict(confident)
    rows: list[int] = []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(ok & (pred == k))
        idx = idx[np.argsort(-conf[idx], kind="stable")][: quota[c]]
        rows.extend(int(i) for i in idx)
    rows.sort()
    labels = [classes[int(pred[i])] for i in rows]
    # the class whose few confident rows set the total, when balancing left rows out (or kept none)
    limiting = None
    if balance and len(proba) and (not rows or any(quota[c] < confident[c] for c in classes)):
        limiting = min((c for c in classes if share[c] > 0), key=lambda c: confident[c] / share[c], default=None)
    info = {"threshold": threshold, "balanced": balance, "confident": int(ok.sum()),
            "confident_per_class": confident, "pseudo_labeled": len(rows),
            "per_class": {c: int(n) for c, n in sorted(Counter(labels).items())},
            "limited_by": limiting}
    return rows, labels, info


def pseudo_examples(pool: Examples, rows: list[int], labels: list[str]) -> Examples:
    """The chosen pool inputs as labeled examples (ids marked, so they are told apart from the user's)."""
    sub = pool.subset(rows)
    return Examples(inputs=sub.inputs, labels=list(labels), ids=[f"unlabeled:{i}" for i in sub.ids],
                    source=pool.source, modality=pool.modality)


def pseudo_label(pool: Examples, proba: np.ndarray, classes: list[str], labeled: list[str], cfg: FitConfig
                 ) -> tuple[Examples | None, dict[str, Any]]:
    """The pool's confident inputs as pseudo-labeled examples (None when none qualifies) and the choice's summary,
    at cfg.pseudo_threshold and cfg.pseudo_balance: the one labelling step of `fit --unlabeled` and of auto's
    self-training candidate (auto_unlabeled.py)."""
    rows, labels, info = select_pseudo_labels(proba, classes, labeled, cfg.pseudo_threshold, cfg.pseudo_balance)
    return (pseudo_examples(pool, rows, labels) if rows else None), info


class SelfTraining:
    """Self-training steps of a fit (`fit(..., unlabeled=...)`); the fit pipeline provides `classes_`,
    `encode_labels`, `_load_pool`, `_fit_member` and `_member_proba`."""

    classes_: list[str]
    _pool_summary: dict[str, Any]

    def _unlabeled_pool(self, data: Any, cfg: FitConfig, splits: dict[str, Examples]) -> Examples:
        """The unlabeled inputs for self-training, without unreadable ones (reported) and without the labeled
        inputs among them (the same text or image file: a validation example would otherwise be trained on)."""
        pool = self._load_pool(data, cfg)
        found = len(pool)
        pool, overlap = drop_overlap(pool, *splits.values())
        used = sample_pool(pool, cfg.pseudo_max, cfg.seed)
        self._pool_summary = {"source": pool.source, "found": found, "labeled_overlap_dropped": overlap,
                              "used": len(used), "pseudo_max": cfg.pseudo_max}
        if not len(used):
            raise DataError(f"{pool.source or 'unlabeled data'}: no unlabeled input left to self-train on "
                            f"({found} readable, {overlap} of them also labeled ones); pass other inputs or "
                            "drop --unlabeled")
        return used

    def _self_train(self, backbone_name: str, seed: int, cfg: FitConfig, train: Examples, val: Examples,
                    pool: Examples, ctx: FitContext,
                    first: Member) -> Member:
        """The teacher (`first`) labels the pool; a student trains from the pretrained weights on the training
        data plus the confident pseudo-labels; the better of the two on `val` is kept (the teacher on a tie)."""
        history = first.history
        t = time.perf_counter()
        pseudo, info = pseudo_label(pool, self._member_proba(first, pool), ctx.classes, train.labels or [], cfg)
        summary: dict[str, Any] = {"unlabeled": len(pool), **info,
                                   "teacher_val": self._selection_score(first, val),
                                   "label_seconds": round(time.perf_counter() - t, 1)}
        if pseudo is None:
            why = (f"class {info['limited_by']!r} had no prediction that confident" if info["limited_by"]
                   else "no prediction that confident")
            history["self_training"] = {**summary, "kept": "teacher",
                                        "note": f"no student trained: {why} (pseudo_threshold "
                                                f"{cfg.pseudo_threshold:g})"}
            return first
        student = self._fit_member(backbone_name, seed, cfg, concat(train, pseudo), val, ctx)
        summary["student_val"] = self._selection_score(student, val)
        summary["teacher_history"] = {k: v for k, v in history.items() if k != "self_training"}
        better = summary["student_val"] > summary["teacher_val"]
        what = ("validation " + (cfg.metric.replace("_", " ") if cfg.select_by == "metric" else cfg.select_by)
                + (" (negated)" if cfg.select_by == "loss" else ""))
        note = (f"student trained on {len(train)} labeled + {len(pseudo)} pseudo-labeled examples; {what} "
                f"{summary['student_val']:.4f} vs teacher {summary['teacher_val']:.4f}: "
                + ("the student is kept" if better else "the teacher is kept"))
        if not better:
            history["self_training"] = {**summary, "kept": "teacher", "note": note}
            return first
        student.history["self_training"] = {**summary, "kept": "student", "note": note}
        student.pseudo = pseudo  # listed in the model directory's manifests
        return student

    def _selection_score(self, member: Member, val: Examples) -> float:
        """Higher is better: the run's metric (or accuracy), or minus the validation log-loss (`select_by`)."""
        if not len(val):
            return float("nan")
        # a probe refit on training + validation data keeps its predictions from before that refit
        cfg = member.config
        proba = member.val_proba
        if proba is None:
            proba = self._member_proba(member, val)
        y = self.encode_labels(val.labels)
        if cfg.select_by == "loss":
            return round(-float(np.mean(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)))), 6)
        metric = cfg.metric if cfg.select_by == "metric" else "accuracy"
        return round(metric_score(metric, y, proba.argmax(1), len(self.classes_)), 6)
