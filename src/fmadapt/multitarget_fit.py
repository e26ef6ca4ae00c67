"""Fitting several targets from one table (`targets=`): the shared split, one frozen backbone with a head per
target, or one backbone fine-tuned for all of them (tasks/joint.py); returns the fitted model,
multitarget.MultiTarget."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .config import FitConfig
from .data.cache import FeatureCache, MemoryFeatureCache
from .data.readers import DataLike
from .errors import ConfigError
from .multitarget import MultiTarget, share_backbones
from .predictor import Predictor
from .tasks.targets import parse_weights, target_specs


def fit_targets(modality: str, default_backbone: str, config: Callable[[dict[str, Any] | None], FitConfig],
                data: DataLike, val: DataLike | None, *, cache: bool = True, progress: bool | None = None,
                checkpoints: Any = None) -> MultiTarget:
    """Fit the targets of `config(None).targets`: the same validation rows for every target (a seeded random
    split of the table's rows, unless `val` is given). Strategy probe: a head per target on one frozen backbone,
    built once, each input's features computed once. A fine-tuning strategy: the targets' probes first (their
    heads are the start), then one backbone trained for all targets at once (tasks/joint.py), each target keeping
    its rows of the joint head; when no epoch beats the probes' start on validation, the probes are the model.
    `checkpoints` (train.checkpoint.RunCheckpoints): the joint fine-tune saves its state there and resumes from it."""
    from .adapt import get_strategy
    from .data.tables import read_table

    cfg = config(None)
    if cfg.strategy == "auto":
        return auto_targets(modality, default_backbone, config, data, val, cache=cache, progress=progress,
                            checkpoints=checkpoints)
    specs = target_specs(str(cfg.targets), cfg.task)
    val_ids = None
    if val is None:
        if isinstance(data, list):
            raise ConfigError("several targets read a table (a path or a DataFrame), not a list of texts")
        df, _ = read_table(data, encoding=cfg.encoding, header=cfg.header)
        order = np.random.default_rng(cfg.seed).permutation(len(df))
        n_val = min(len(df) - 1, max(1, int(round(len(df) * cfg.val_fraction))))
        val_ids = frozenset(str(i) for i in order[:n_val].tolist())
    shared = MemoryFeatureCache(FeatureCache() if cache else None)
    backbones: dict[str, Any] = {}
    joint = get_strategy(cfg.strategy).trains_backbone

    def fit_each(tuned: dict[tuple[str, int], tuple[Any, ...]] | None = None, start: bool = False,
                 over: dict[str, Any] | None = None) -> dict[str, Predictor]:
        """A Predictor per target: frozen-backbone heads; with `start`, the joint run's starting probes (`over`:
        one ensemble member's backbone and seed); with `tuned`, each (backbone, seed) member's joint model with
        the target's rows of its head."""
        from .fitting import FitRun
        from .tasks.joint import head_of

        out: dict[str, Predictor] = {}
        for index, (column, task) in enumerate(specs):
            def target_config(inferred: dict[str, Any] | None, column: str = column, task: str = task) -> FitConfig:
                found = {k: v for k, v in (inferred or {}).items() if k != "label_col"}
                c = dataclasses.replace(config(found), targets=None, target_weights=None, label_col=column, task=task)
                if start:  # the joint run's starting heads: probes fitted on the training split alone
                    c = dataclasses.replace(c, strategy="probe", refit=False,
                                            table_head="linear" if c.features else c.table_head, **(over or {}))
                c.check(modality)
                return c

            run = FitRun(modality, default_backbone, target_config, cache=shared, progress=progress)
            run.val_ids, run.target_columns = val_ids, [c for c, _ in specs]
            run.backbones = backbones if tuned is None else None
            if tuned is not None:  # (a refit's 4th item: the run before it, for honest validation figures)
                run.tuned = {key: (model, head_of(model, spec, index), history,
                                   *[(b[0], head_of(b[0], b[1], index)) for b in before])
                             for key, (model, spec, history, *before) in tuned.items()}
                run.table_encoder = next(iter(tuned.values()))[1].table_encoder
            fitted = run.run(data, val)
            fitted.cache = cache
            out[column] = fitted
        return out

    if not joint:
        targets = fit_each()
    else:
        from .fitting import member_specs

        members = member_specs(cfg, default_backbone)
        runs: dict[tuple[str, int], tuple[Any, ...]] = {}
        for b, seed in members:  # (an ensemble: one joint run per backbone and seed, each from its own probes)
            over: dict[str, Any] = ({"backbone": b, "seed": seed, "ensemble": 1, "ensemble_backbones": None}
                                    if len(members) > 1 else {})
            probes = fit_each(start=True, over=over)
            mcfg = dataclasses.replace(cfg, **over)
            runs[(b, seed)] = fit_joint(probes, specs, mcfg, progress, checkpoints)
            best = int(runs[(b, seed)][2].get("best_epoch", -1))
            if cfg.refit_full and val is None and best >= 0:  # the epochs chosen, again on all labeled rows
                before = runs[(b, seed)]
                once = dataclasses.replace(mcfg, epochs=best + 1, restore_best=False, refit_full=False)
                again = fit_joint(probes, specs, once, progress, checkpoints, refit=True)
                again[2]["refit_full"] = {
                    "selection_epochs": before[2].get("epochs"), "selection_best_epoch": best,
                    "note": f"retrained on training + validation rows for {best + 1} epoch(s), those of the weights "
                            "kept on validation; last weights kept; the validation figures and calibration come "
                            "from the run before"}
                runs[(b, seed)] = (*again, before)
        history = runs[members[0]][2]
        if len(members) == 1 and history.get("best_epoch") == -1:  # no epoch beat the start: the probes are the model
            # (refit_full is skipped then, as for one target)
            note = {"joint": {**history, "note": "no fine-tuning epoch beat the targets' probes on validation "
                                                 "(the weighted mean of their scores): the probes are kept"}}
            for p in probes.values():
                p.history_ = {**p.history_, **note}
                p.members_[0].history.update(note)
            targets = probes
        else:  # (an ensemble's member whose epochs did not beat its start is that start: its probes' heads)
            targets = fit_each(tuned=runs)
    share_backbones(list(targets.values()))
    first = next(iter(targets.values()))
    final = dataclasses.replace(config(None), text_col=first.config_.text_col)
    return MultiTarget(modality, targets, final, cache=cache, progress=progress)


def fit_joint(probes: dict[str, Predictor], specs: list[tuple[str, str]], cfg: FitConfig, progress: bool | None,
              checkpoints: Any = None, refit: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """One backbone fine-tuned for every target (cfg's strategy): the head is the targets' probe heads side by
    side, the loss the weighted sum of theirs, on the union of their training rows; (the trained Classifier, the
    tasks.joint.JointSpec, the run's history)."""
    import sys

    import torch

    from .adapt import FitContext, get_strategy
    from .backbones import create_backbone
    from .data.examples import Examples
    from .model import Classifier
    from .tasks.joint import JointSpec, joint_rows

    preds = [probes[c] for c, _ in specs]
    names = [c for c, _ in specs]
    spec = JointSpec(names, [t for _, t in specs], [len(p.classes_) for p in preds],
                     parse_weights(cfg.target_weights, names))
    per_target: list[dict[str, np.ndarray]] = []
    texts: dict[str, dict[str, str]] = {"train": {}, "val": {}}
    #: with table columns beside the text: where each example's row is (target index, position in its split)
    where: dict[str, dict[str, tuple[int, int]]] = {"train": {}, "val": {}}
    for k, (p, (_, task)) in enumerate(zip(preds, specs, strict=True)):
        ctx = FitContext(p.classes_, None, False, label_sep=p.config_.label_sep if task == "multilabel" else None,
                         target_scale=p.target_scale_)
        rows: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            ex = p.splits_[split]
            for j, (i, text, y) in enumerate(zip(ex.ids, ex.inputs, ctx.targets(ex), strict=True)):
                texts[split][i] = text
                where[split].setdefault(i, (k, j))
                if task == "classification":
                    row = np.zeros(len(p.classes_), dtype=np.float32)
                    row[int(y)] = 1.0
                else:
                    row = np.asarray(y, dtype=np.float32).reshape(-1)
                rows[i] = row
        per_target.append(rows)
    first = preds[0]
    spec.rows = joint_rows([*texts["train"], *texts["val"]], per_target, spec.sizes)
    # (each example's "label": its joint row as text, which a checkpoint's data fingerprint covers)
    splits = {name: Examples(inputs=list(t.values()), labels=[" ".join(f"{v:.6g}" for v in spec.rows[i]) for i in t],
                             ids=list(t), source=first.splits_["train"].source, modality="text")
              for name, t in texts.items()}
    # table columns beside the text: one encoding for the joint model (the first target's, fitted on its training
    # rows: the same rows as the others' unless some lack that target's label), the tables in the joint splits
    encoder = first.table_encoder_
    spec.table_encoder = encoder
    if encoder is not None:
        for name, ex in splits.items():
            ex.table = _rows_of(where[name], [p.splits_[name].table for p in preds], ex.ids)
    if refit:  # refit_full: training + validation rows (the validation pass then only reports)
        from .data.examples import concat

        splits["train"] = concat(splits["train"], splits["val"])
    strategy = get_strategy(cfg.strategy)
    backbone = create_backbone(first.config_.backbone or first.members_[0].model.backbone.cfg.name)
    limit = cfg.max_tokens or strategy.max_tokens
    if limit and backbone.cfg.max_tokens:
        backbone.cfg.max_tokens = min(int(limit), backbone.cfg.max_tokens)
    model = Classifier(backbone, spec.width, cfg.dropout, table_dim=encoder.width if encoder is not None else 0)
    with torch.no_grad():  # the start: each target's probe head (fitted on the training split alone)
        model.head.weight.copy_(torch.cat([p.members_[0].model.head.weight for p in preds]))
        model.head.bias.copy_(torch.cat([p.members_[0].model.head.bias for p in preds]))
        if model.table_head is not None:
            model.table_head.weight.copy_(torch.cat([p.members_[0].model.table_head.weight  # type: ignore[union-attr]
                                                     for p in preds]))
    torch.manual_seed(cfg.seed)
    ctx = FitContext([f"{n}:{c}" for n, p in zip(names, preds, strict=True) for c in p.classes_], None,
                     bool(progress if progress is not None else sys.stderr.isatty()), checkpoints=checkpoints,
                     joint=spec, table=encoder)
    jcfg = dataclasses.replace(cfg, targets=None, target_weights=None, max_tokens=backbone.cfg.max_tokens)
    history = strategy.fit(model, splits["train"], splits["val"], jcfg, ctx)
    history["joint_targets"] = [{"name": n, "task": t, "outputs": k, "loss_weight": w} for n, t, k, w in
                                zip(spec.names, spec.tasks, spec.sizes, spec.weights, strict=True)]
    history["joint_examples"] = {"train": len(splits["train"]), "val": len(splits["val"])}
    return model, spec, history


def _rows_of(where: dict[str, tuple[int, int]], tables: list[Any], ids: list[str]) -> Any:
    """The table rows of examples `ids` (a DataFrame in their order), each taken from the split table of the
    target that had it first (`where`: id -> (target index, position))."""
    import pandas as pd

    parts, order = [], []
    for k, table in enumerate(tables):
        mine = [(i, where[i][1]) for i in ids if where[i][0] == k]
        if mine:
            parts.append(table.iloc[[j for _, j in mine]])
            order += [i for i, _ in mine]
    rows = pd.concat(parts, ignore_index=True)
    position = {i: n for n, i in enumerate(order)}
    return rows.iloc[[position[i] for i in ids]].reset_index(drop=True)


def auto_targets(modality: str, default_backbone: str, config: Callable[[dict[str, Any] | None], FitConfig],
                 data: DataLike, val: DataLike | None, *, cache: bool = True, progress: bool | None = None,
                 checkpoints: Any = None) -> MultiTarget:
    """`auto` with several targets, within `time_budget`: the probe (a head per target on one frozen backbone),
    then, when it started within the selection share of the budget, one backbone fine-tuned for every target (all
    layers, the fine-tuning candidate's epochs, stopped by the budget); the better by the weighted mean of the
    targets' validation scores (the run's metric, micro-F1, R²: each 1 when perfect; a tie keeps the probe) is
    the model, as trained (no refit). Both candidates use the same validation rows."""
    import time

    from .auto import CANDIDATE_EPOCHS, RUN_SHARE, SELECTION_SHARE
    from .config import parse_duration

    cfg = config(None)
    budget = parse_duration(cfg.time_budget) or 600.0
    names = [c for c, _ in target_specs(str(cfg.targets), cfg.task)]
    weights = parse_weights(cfg.target_weights, names)
    t0 = time.perf_counter()

    def fit(over: dict[str, Any]) -> tuple[MultiTarget, float, float]:
        start = time.perf_counter()
        m = fit_targets(modality, default_backbone, lambda found: dataclasses.replace(config(found), **over), data,
                        val, cache=cache, progress=progress, checkpoints=checkpoints)
        return m, validation_score(m, weights), time.perf_counter() - start

    def row(name: str, strategy: str, score: float | None, seconds: float | None) -> dict[str, Any]:
        # (the candidates table of single-target auto, which the CLI and the report show)
        ran = score is not None
        return {"candidate": name, "strategy": strategy, "status": "ran" if ran else "skipped: time budget",
                "seeds": [cfg.seed] if ran else [], "val_score": score, "val_acc": score,
                "val_acc_spread": 0.0 if ran else None, "seconds": [round(seconds or 0.0, 1)] if ran else []}

    tuned_name = "finetune all layers, every target at once"
    best, score, seconds = fit({"strategy": "probe", "target_weights": None})
    rows = [row("probe", "probe", round(score, 4), seconds)]
    winner = "probe"
    left = RUN_SHARE * budget - (time.perf_counter() - t0)
    if time.perf_counter() - t0 < SELECTION_SHARE * budget:
        tuned, s2, sec2 = fit({"strategy": "finetune", "unfreeze": -1, "epochs": min(cfg.epochs, CANDIDATE_EPOCHS),
                               "max_time": max(5.0, left)})
        rows.append(row(tuned_name, "finetune", round(s2, 4), sec2))
        if s2 > score:
            best, winner = tuned, tuned_name
    else:
        rows.append(row(tuned_name, "finetune", None, None))
    weights_text = ", ".join(f"{n}={w:g}" for n, w in zip(names, weights, strict=True))
    scores = [r["val_score"] for r in rows if r["val_score"] is not None]
    note = {"auto": {"budget_seconds": budget, "metric": "targets' weighted mean score", "candidates": rows,
                     "winner": winner, "seconds": round(time.perf_counter() - t0, 1),
                     "why": f"highest weighted mean of the targets' validation scores (the run's metric, micro-F1, "
                            f"R²; weights {weights_text}): {max(scores):.4f}; ties go to the probes",
                     "final": "the winner as trained on the training split (no refit with several targets)"}}
    for p in best.targets_.values():
        p.history_ = {**p.history_, **note}
    return best


def validation_score(model: MultiTarget, weights: list[float]) -> float:
    """The weighted mean of the targets' validation scores: the run's metric (classification), micro-F1
    (multi-label) or R² (regression)."""
    scores = []
    for p in model.targets_.values():
        m, task = p.metrics_.get("val") or {}, p.config_.task
        key = "r2" if task == "regression" else "micro_f1" if task == "multilabel" else p.config_.metric
        scores.append(float(m.get(key, float("nan"))))
    if not all(np.isfinite(scores)):
        raise RuntimeError(f"a target has no validation score ({scores}): auto needs a validation split")
    return float(np.average(scores, weights=weights))
