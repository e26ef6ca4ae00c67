"""`probe`: frozen backbone features (cached on disk) + a multinomial logistic-regression head."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from ..config import FitConfig
from ..data.examples import Examples
from ..data.split import group_ids
from ..model import Classifier
from ..runtime.features import extract_features
from .base import FitContext, Strategy, register_strategy
from .headsearch import SCALINGS, Evaluate, scale, search, weightings
from .imbalance import imbalance
from .labelprior import LabelPrior, OffsetLogReg, class_embeddings, class_sentences, fit_strength

#: up to this many labeled examples (training + validation), C is chosen by cross-validation
CV_MAX = 1000


@register_strategy
class Probe(Strategy):
    """Linear probe: frozen backbone features (cached) and a logistic-regression head whose C (and class
    weighting, on imbalanced data) is chosen on validation by the run's metric (by cross-validation on small
    data; headsearch.py), then refit on all labeled data. Fastest; the default."""

    name = "probe"
    trains_backbone = False

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        if ctx.multilabel:  # one logistic regression per label (adapt/multilabel.py)
            from .multilabel import fit_multilabel_probe

            return fit_multilabel_probe(model, train, val, cfg, ctx)
        if ctx.regression:  # ridge regression on the standardised target (adapt/regression.py)
            from .regression import fit_ridge_probe

            return fit_ridge_probe(model, train, val, cfg, ctx)
        t0 = time.perf_counter()
        kw = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache, "num_workers": cfg.num_workers,
              "progress": ctx.progress, "runtime": cfg.runtime}
        x_tr = ctx.with_table(extract_features(model.backbone, train, desc="train features", **kw), train)
        x_va = ctx.with_table(extract_features(model.backbone, val, desc="val features", **kw), val)
        t_feat = time.perf_counter() - t0
        y_tr, y_va = np.asarray(ctx.targets(train)), np.asarray(ctx.targets(val))
        n_cls = len(ctx.classes)
        refit = bool(cfg.refit and ctx.refit_on_val and len(y_va))
        x_all, y_all = (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])) if refit else (x_tr, y_tr)
        balance = imbalance(y_all, n_cls, cfg)
        compete = weightings(cfg.class_weight, balance["ratio"])
        t1 = time.perf_counter()
        prior = None
        if cfg.label_template:
            prior = LabelPrior(class_embeddings(model.backbone, class_sentences(ctx.classes, cfg.label_template)),
                               x_all, cfg.label_template)
        o_all = prior.logits(x_all) if prior else None
        present = np.bincount(y_all, minlength=n_cls)
        folds = min(5, int(present[present > 0].min()))
        if refit and len(y_all) <= CV_MAX and folds >= 2 and (cfg.probe_c is None or len(compete) > 1):
            # Few examples: a 20 % hold-out of a few dozen is too noisy to choose C on (few-shot SST-2 picked
            # C=0.01 from 4 validation sentences). Cross-validation over all of them uses every label.
            groups = group_ids(train.inputs + val.inputs, cfg.split_groups) if cfg.split_groups else None
            if groups is not None and len(set(groups)) < folds:
                groups = None  # (fewer groups than folds: example by example, as without the option)
            selection = (f"{folds}-fold cross-validation on training + validation data ({len(y_all)} examples"
                         + (f", folds by group: {len(set(groups))} groups)" if groups else ")"))
            evaluate, y_held = _cv_evaluator(x_all, y_all, folds, n_cls, cfg.seed, o_all, groups), y_all
            extra: dict[str, Any] = {"folds": folds}
        else:
            selection = f"validation split ({len(y_va)} examples)"
            o_tr, o_va = (prior.logits(x_tr), prior.logits(x_va)) if prior else (None, None)
            evaluate, y_held = _val_evaluator(x_tr, y_tr, x_va, n_cls, cfg.seed, o_tr, o_va), y_va
            extra = {}
        rows, (c, weighted, scaling), held = search(evaluate, y_held, n_cls, cfg.metric, compete, cfg.probe_c,
                                                    extra)
        honest = held[len(y_tr):] if y_held is y_all else held  # out of fold: never seen by its head
        balance = imbalance(y_all, n_cls, cfg, weighted=weighted)
        if len(compete) > 1:
            balance["chosen_by"] = f"validation {cfg.metric} ({selection}): weighted and unweighted heads competed"
        stacked: dict[str, Any] = {}
        if ctx.table is not None and cfg.table_head != "linear" and cfg.strategy == "probe" and len(y_va):
            def text_head(x_fit: np.ndarray, y_fit: np.ndarray, x_pred: np.ndarray) -> np.ndarray:
                m, s = scale(x_fit, scaling)
                w, b = _linear(_fit_lr((x_fit - m) / s, y_fit, c, cfg.seed, weighted), m, s, n_cls)
                return x_pred @ w.T + b

            stacked = try_stack(model, text_head, x_tr, y_tr, x_va, y_va, x_all, y_all, honest, cfg, n_cls)
            honest = stacked.pop("val", honest)
            x_all = x_all[:, :model.head.in_features] if model.stack is not None else x_all
        mu, sd = scale(x_all, scaling)
        head = _fit_lr((x_all - mu) / sd, y_all, c, cfg.seed, weighted, o_all)
        _set_head(model, head, mu, sd, n_cls, prior)
        # (refit: the honest validation probabilities, out of fold or from before the refit; the estimator takes
        # them out of the history into the member, `Member.val_proba`)
        extra: dict[str, Any] = {"_val_proba": honest} if refit else {}
        if prior is not None:
            assert o_all is not None
            extra["label_prior"] = {
                "template": prior.template, "strength": round(head.strength, 3),
                "zero_shot_acc": round(float((o_all.argmax(1) == y_all).mean()), 4),
                "on": f"{len(y_all)} labeled examples"}
        extra |= stacked
        return extra | {"feature_seconds": round(t_feat, 2), "head_seconds": round(time.perf_counter() - t1, 2),
                "fit_seconds": round(time.perf_counter() - t0, 2), "C": c, "scaling": scaling, "metric": cfg.metric,
                "selection": selection,
                "trained_on": (f"training + validation data ({len(y_all)} examples)" if refit
                               else f"training split ({len(y_tr)} examples)"),
                "candidates": rows, "imbalance": balance}


def out_of_fold(model: Classifier, ex: Examples, y: np.ndarray, cfg: FitConfig, ctx: FitContext,
                history: dict[str, Any], folds: int) -> np.ndarray:
    """Probabilities of every example of `ex` from a probe head (with the C, class weighting and scaling in
    `history`, a fitted probe's) that did not train on it: what `auto` stacks the n-gram model with."""
    x = ctx.with_table(extract_features(model.backbone, ex, batch_size=max(cfg.batch_size, 64), cache=ctx.cache,
                                        num_workers=cfg.num_workers, progress=ctx.progress, runtime=cfg.runtime,
                                        desc="train features"), ex)  # (and the table's columns, as the probe reads)
    weighted = bool((history.get("imbalance") or {}).get("weighted"))
    evaluate = _cv_evaluator(x, np.asarray(y), folds, len(ctx.classes), cfg.seed)
    return evaluate(float(history["C"]), weighted, str(history.get("scaling", "standard")))


class _Head:
    """A head fitted on standardised features: sklearn's logistic regression, or, with a label prior, the
    prior's fitted strength s and a regression on top of s·prior (labelprior.py)."""

    def __init__(self, lr: LogisticRegression | OffsetLogReg, strength: float = 0.0) -> None:
        self.lr, self.strength = lr, strength
        self.coef_, self.intercept_, self.classes_ = lr.coef_, lr.intercept_, lr.classes_

    def proba(self, z: np.ndarray, prior: np.ndarray | None, n_cls: int) -> np.ndarray:
        """(N, n_cls) probabilities; a class absent from the head's training data gets 0 (without a prior)."""
        if isinstance(self.lr, OffsetLogReg):
            assert prior is not None
            return self.lr.proba(z, self.strength * prior)
        full = np.zeros((len(z), n_cls))
        full[:, self.lr.classes_] = self.lr.predict_proba(z)
        return full


def _fit_lr(z: np.ndarray, y: np.ndarray, c: float, seed: int, weighted: bool, prior: np.ndarray | None = None
            ) -> _Head:
    """The head for standardised features z; `prior`: the label prior's logits of the same rows (or None)."""
    # one BLAS thread: lbfgs on (N, D<=1280) is overhead-bound, and multi-threaded OpenBLAS made these
    # fits 10-40x slower on the 2-core machine (benchmarks/throughput.md)
    with threadpool_limits(1):
        if prior is None:
            return _Head(LogisticRegression(C=c, max_iter=2000, random_state=seed,
                                            class_weight="balanced" if weighted else None).fit(z, y))
        w = None
        if weighted:  # sklearn's "balanced": n / (k · n_c)
            counts = np.bincount(y, minlength=prior.shape[1]).astype(float)
            w = len(y) / (np.count_nonzero(counts) * counts[y])
        s = fit_strength(prior, y, w)
        return _Head(OffsetLogReg(c, prior.shape[1]).fit(z, y, s * prior, w), s)


def _val_evaluator(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, n_cls: int, seed: int,
                   o_tr: np.ndarray | None = None, o_va: np.ndarray | None = None) -> Evaluate:
    """Candidates judged on the validation split: a head fitted on the training split predicts it. o_tr,
    o_va: label-prior logits, or None."""
    z = {}
    for sc in SCALINGS:
        mu, sd = scale(x_tr, sc)
        z[sc] = (x_tr - mu) / sd, (x_va - mu) / sd

    def evaluate(c: float, weighted: bool, scaling: str) -> np.ndarray:
        z_tr, z_va = z[scaling]
        return _fit_lr(z_tr, y_tr, c, seed, weighted, o_tr).proba(z_va, o_va, n_cls)

    return evaluate


def _cv_evaluator(x: np.ndarray, y: np.ndarray, folds: int, n_cls: int, seed: int, o: np.ndarray | None = None,
                  groups: list[str] | None = None) -> Evaluate:
    """Candidates judged out of fold (stratified k-fold; with `groups`, each group in one fold): every row of x
    predicted by a head that never saw it. o: label-prior logits of x's rows (the prior's strength is fitted within
    each fold), or None."""
    if groups is not None:
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups))
    else:
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    parts: dict[str, list] = {sc: [] for sc in SCALINGS}
    for tr, te in splits:
        for sc in SCALINGS:
            mu, sd = scale(x[tr], sc)  # scaled on the fold's own training part
            parts[sc].append((tr, te, (x[tr] - mu) / sd, (x[te] - mu) / sd))

    def evaluate(c: float, weighted: bool, scaling: str) -> np.ndarray:
        oof = np.zeros((len(y), n_cls))
        for tr, te, z_tr, z_te in parts[scaling]:
            head = _fit_lr(z_tr, y[tr], c, seed, weighted, None if o is None else o[tr])
            oof[te] = head.proba(z_te, None if o is None else o[te], n_cls)
        return oof

    return evaluate


def try_stack(model: Classifier, text_head: Any, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
              y_va: np.ndarray, x_all: np.ndarray, y_all: np.ndarray, fused_va: np.ndarray, cfg: FitConfig,
              n_cls: int, regression: bool = False) -> dict[str, Any]:
    """Table columns stacked late (tablestack.py) against the linear head over text and table, on validation;
    when the stack wins (or table_head is "stack") it goes into `model` (`model.stack`, no table head: the caller
    fits the text-only head) and the result's "val" holds its honest validation predictions. The result (less
    "val") is the history's "table_head" entry."""
    import warnings

    from .tablestack import fit_stack, stack_candidate

    dim = model.head.in_features
    try:  # (the stack is an option: data it cannot be fitted on, or trees not carried exactly, keep the linear head)
        cand = stack_candidate(text_head, dim, x_tr, y_tr, x_va, y_va, fused_va, regression=regression,
                               metric=cfg.metric, n_cls=n_cls, seed=cfg.seed, force=cfg.table_head == "stack")
        if not cand["won"]:
            return {"table_head": cand["row"]}
        stack = fit_stack(text_head, dim, x_all, y_all, regression=regression, seed=cfg.seed)
    except (RuntimeError, ValueError) as e:
        warnings.warn(f"table_head: no stacked trees ({e}); the linear head over text and table is kept",
                      stacklevel=2)
        return {"table_head": {"kept": "linear", "stack_error": str(e)}}
    model.table_head, model.stack = None, stack
    return {"table_head": cand["row"], "val": cand["val"]}


def _linear(lr: _Head, mu: np.ndarray, sd: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (n, D) weights and (n,) bias on unscaled features of a head fitted on standardised ones."""
    coef, icpt = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one logit; softmax([-z/2, z/2]) == sigmoid(z)
        coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
    w = np.zeros((n, coef.shape[1]))
    b = np.full(n, -1e4)  # a class absent from training can never be predicted
    w[lr.classes_] = coef / sd
    b[lr.classes_] = icpt - (coef / sd) @ mu
    return w, b


def _set_head(model: Classifier, lr: _Head, mu: np.ndarray, sd: np.ndarray, n: int,
              prior: LabelPrior | None = None) -> None:
    """Fold the standardisation into the linear head: w·(x-mu)/sd + b = (w/sd)·x + (b - (w/sd)·mu); and a
    label prior's s·(x·M) into the same weights."""
    w, b = _linear(lr, mu, sd, n)
    if prior is not None:
        w = w + lr.strength * prior.weight()
    model.set_linear(w, b)  # (the columns past the backbone's features are the table's, with `features`)
