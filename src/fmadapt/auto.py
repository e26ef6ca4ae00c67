"""`--strategy auto --time-budget 10m`: choose the adaptation strategy by measurement on the user's data.

Candidates run on the training split (the cheap ones first, see `candidates`) and are compared on the
validation split. A candidate starts only within the comparison's share of the budget (60 %); a fine-tuning
candidate runs under Lightning's `max_time` set to what is left of the whole budget (less a reserve, 15 %,
for predicting the validation split and refitting a cheap winner), so one that needs longer runs on into
the retraining share instead of being cut off: it could not have been retrained in that share anyway
(SST-2, 4,000 texts, 10 min: all layers stopped at the 60 % mark and its model was kept, 228 s of the budget
unused). Spare time reruns the leading fine-tuning candidates with other seeds (the probe is deterministic),
and the spread is reported. The winner is then trained once more, on training + validation data, with the
settings it won with (the probe's C; the fine-tuning epochs it needed), within what is left of the budget;
when too little is left (estimated from the winner's own setup and epoch seconds, `refit_seconds`), or the
budget stops the refit before its epochs are done, the selected model is kept as trained. The run summary
holds the candidates table and why the winner won.

For texts two classical candidates follow the probe (`auto_ngram`, adapt/ngram.py): character and word n-gram
TF-IDF + logistic regression, and its stack with the probe (the two models' probabilities averaged with a
weight chosen out of fold on the training split). Both cost seconds; a frozen encoder that does not know the
script (Chinese on MiniLM) or the domain's words loses to them. Candidates are ranked by the run's `metric`.
With unlabeled inputs, continued pretraining on them (`fmadapt pretrain`) runs within 30 % of the budget, then the
probe and the leading fine-tuning candidate run again on the pretrained backbone, and the leader teaches a
self-trained student: candidates like the others (auto_unlabeled.py)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from .auto_unlabeled import Unlabeled, pretrained_trials, self_training_trial, with_pseudo
from .config import FitConfig, parse_duration
from .data.examples import Examples, concat

#: auto's classical text candidates (adapt/ngram.py); with the probe, the ones that give the same model for every
#: seed (no reruns with other seeds)
CLASSICAL = ("ngram", "stack")
DETERMINISTIC = ("probe", *CLASSICAL)
SELECTION_SHARE = 0.6  #: of the budget, for starting candidates; the rest trains the winner on all data
#: of the budget, the most a candidate may run to: the rest predicts the validation split and refits a cheap
#: winner (probe, n-gram, stack). At 0.95, clothing reviews (4,000, long texts) ended 65 s over a 10-minute
#: budget: 70 s went to the all-layers candidate's validation pass and the stack's refit
RUN_SHARE = 0.85
#: a candidate's most epochs (the fine-tuning default, 4, when it was chosen: a candidate that cannot be
#: retrained in time is kept as it is, and then it is the default fine-tune on the training split)
CANDIDATE_EPOCHS = 4
#: a fine-tuning winner is refit on all data only when the budget left is this many times the refit's estimate
#: (`refit_seconds`); a refit the budget stops anyway is dropped for the selected model
REFIT_MARGIN = 1.1
#: with unlabeled inputs: of the budget, the most continued pretraining on them may take (the probe and the leading
#: fine-tuning candidate then run again on the pretrained backbone, in what is left of the selection share)
PRETRAIN_SHARE = 0.3
#: pretraining shorter than this is not tried (a few dozen steps change nothing worth a candidate)
MIN_PRETRAIN_SECONDS = 60.0


def candidates(modality: str, cfg: FitConfig) -> list[tuple[str, dict[str, Any]]]:
    """(label, FitConfig overrides) in the order they run; what the budget cannot reach is skipped. The two
    cheap ones first (the probe, fine-tuning the top 2 groups on cached activations), then all layers, then
    LoRA: LoRA still runs the whole network forward and backward, so on a CPU it saves little time (SST-2 5,000,
    MiniLM-L6, one run: 102-108 s per epoch against 123-145 s for all layers) and it scored lower wherever both
    were measured (there 82.8 % vs 86.6 %; 80.9 % vs 85.2 % in benchmarks/strategies.md). Ahead of all layers,
    it took the time that all layers needed in a 10-minute SST-2 search (benchmarks/notes/strategies_sst2_auto.md)."""
    epochs = min(cfg.epochs, CANDIDATE_EPOCHS)
    top = {"strategy": "finetune", "unfreeze": 2, "epochs": epochs}
    if modality == "image":
        top["augment"] = False  # so that the frozen prefix is cached: several times faster per epoch
    # an extended vocabulary must be learnt, which only fine-tuning all layers does; the others run without
    plain = {"extend_vocab": False} if cfg.extend_vocab else {}
    classical = [("n-gram tf-idf", {"strategy": "ngram"}), ("stack: probe + n-gram", {"strategy": "stack"})] \
        if modality == "text" and cfg.auto_ngram and cfg.task == "classification" else []
    return [
        ("probe", {"strategy": "probe", **plain}),
        *classical,
        ("finetune top 2 groups", {**top, **plain}),
        ("finetune all layers" + (" + new tokens" if cfg.extend_vocab else ""),
         {"strategy": "finetune", "unfreeze": -1, "epochs": epochs}),
        # (the speech embedding's convolutions have no names LoRA knows: audio runs without that candidate)
        *([("lora", {"strategy": "lora", "epochs": epochs, **plain})] if modality != "audio" else []),
    ]


class AutoSearch:
    """Runs the comparison through `fit_one(cfg, train, val) -> Member` and `val_metrics(member) -> metrics`,
    both supplied by the estimator; for the classical text candidates, `classical` supplies `targets(ex)`,
    `metrics(val_proba)` and `probe_out_of_fold(member, train, folds)`. After `run`, `ngram` is the n-gram
    model and its weight in the final prediction (None when neither classical candidate won)."""

    def __init__(self, cfg: FitConfig, modality: str, fit_one: Any, val_metrics: Any, classical: Any = None,
                 unlabeled: Unlabeled | None = None, backbone: str = "") -> None:
        self.cfg, self.modality = cfg, modality
        #: unlabeled inputs: the search also tries continued pretraining on them and self-training (auto_unlabeled)
        self.unlabeled, self.backbone = unlabeled, cfg.backbone or backbone
        self.pretrained: dict[str, Any] | None = None
        self.self_training: dict[str, Any] | None = None
        self.fit_one, self.val_metrics, self.classical = fit_one, val_metrics, classical
        self.budget = parse_duration(cfg.time_budget) or 600.0
        #: what ranks the candidates: the run's metric; multi-label, the micro-F1; regression, the RMSE (the
        #: candidates' `val_score` is then minus the RMSE, so that larger is better throughout)
        self.metric = {"multilabel": "micro_f1", "regression": "rmse"}.get(cfg.task, cfg.metric)
        self.sign = -1.0 if cfg.task == "regression" else 1.0
        self.t0 = time.perf_counter()
        self.ngram: tuple[Any, float] | None = None
        self._rows: list[dict[str, Any]] = []  # the candidates table of `run`
        self._probe: tuple[Any, dict[str, Any]] | None = None  # (member, row) of the probe candidate
        self._ngram_trial: tuple[Any, dict[str, Any], Any] | None = None  # (model, history, val proba)
        self.best_neural: dict[str, Any] | None = None  # (as `best` in `run`, over the neural candidates only)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, train: Examples, val: Examples) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(final Member, selection-phase validation metrics of the winner, history)."""
        selection = SELECTION_SHARE * self.budget
        rows: list[dict[str, Any]] = []
        self._rows = rows
        best: dict[str, Any] | None = None
        for label, over in candidates(self.modality, self.cfg):
            left = selection - self.elapsed()
            # (the classical candidates cost seconds, like the probe: they run while any selection time is left)
            need = 0.0 if over["strategy"] in CLASSICAL else max(10.0, 0.05 * self.budget)
            if rows and left < need:
                rows.append({"candidate": label, "strategy": over["strategy"], "status": "skipped: time budget"})
                continue
            if over["strategy"] in CLASSICAL:
                row, member = self._classical_trial(label, over, train, val)
            else:
                row, member = self.trial(label, over, self.cfg.seed, train, val,
                                          RUN_SHARE * self.budget - self.elapsed())
            if over["strategy"] == "probe" and row.get("status") == "ran":
                self._probe = (member, row)
            rows.append(row)
            best = self.better(best, row, member)
        if self.unlabeled is not None:
            best = pretrained_trials(self, train, val, rows, best)
            best = self_training_trial(self, train, val, rows, best)
        # spare selection time: other seeds for the leading fine-tuning candidates
        for row in sorted((r for r in rows if r.get("status") == "ran" and r["strategy"] not in DETERMINISTIC),
                          key=lambda r: -r["val_score"]):
            left = selection - self.elapsed()
            if left < 1.2 * row["seconds"][0]:
                continue
            over = dict(row["overrides"])
            seed = self.cfg.seed + len(row["seeds"])
            extra, member = self.trial(row["candidate"], over, seed, with_pseudo(train, row), val, left)
            row["seeds"].append(seed)
            row["val_accs"].append(extra["val_acc"])
            row["val_scores"].append(extra["val_score"])
            row["seconds"].append(extra["seconds"][0])
            row["val_acc"] = statistics.mean(row["val_accs"])
            row["val_score"] = statistics.mean(row["val_scores"])
            if best is not None and extra["val_score"] > best["row_score"] and best["row"] is row:  # better seed
                best.update(member=member, metrics=extra["metrics"], row_score=extra["val_score"], seed=seed)
        kept = {id(r): r.get("metrics") for r in rows}  # (a classical winner's validation metrics, below)
        for r in rows:
            if r.get("status") == "ran":
                r["val_acc_spread"] = round(max(r["val_accs"]) - min(r["val_accs"]), 4)
                r["val_acc"], r["val_score"] = round(r["val_acc"], 4), round(r["val_score"], 4)
                r.pop("metrics", None)
        ran = [r for r in rows if r.get("status") == "ran"]
        winner = max(ran, key=lambda r: (r["val_score"], -statistics.mean(r["seconds"])))
        if best is None or best["row"] is not winner:  # a rerun changed the ranking: refit is below anyway
            best = {"row": winner, "member": None, "seed": winner["seeds"][0],
                    "metrics": kept[id(winner)] if winner["strategy"] in CLASSICAL else None}
        final, final_note = self._final(winner, best, with_pseudo(train, winner), val)
        if winner.get("pseudo") is not None:  # (listed in the model directory's manifests, as self-training does)
            final.pseudo = winner["pseudo"]
            final.history["self_training"] = {**(self.self_training or {}), "kept": "student"}
        val_metrics = best["metrics"] if best["metrics"] is not None else self.val_metrics(final)
        metric = self.metric.replace("_", " ")
        why = (f"{'lowest' if self.sign < 0 else 'highest'} validation {metric}, {self.sign * winner['val_score']:.4f}"
               + (f" (mean of {len(winner['seeds'])} seeds, spread {winner['val_acc_spread']:.4f})"
                  if len(winner["seeds"]) > 1 else "")
               + "; ties go to the faster candidate")
        runner_up = sorted((r for r in ran if r is not winner), key=lambda r: -r["val_score"])
        if runner_up:
            why += f"; next: {runner_up[0]['candidate']} at {self.sign * runner_up[0]['val_score']:.4f}"
        for r in rows:
            for k in ("overrides", "val_accs", "val_scores", "pseudo"):
                r.pop(k, None)
        history = {"auto": {"budget_seconds": self.budget, "metric": self.metric, "candidates": rows,
                            "winner": winner["candidate"], "why": why, "final": final_note,
                            "seconds": round(self.elapsed(), 1)}, **final.history}
        if self._ngram_trial is not None:
            history["auto"]["ngram"] = self._ngram_trial[1]
        if self.pretrained is not None:
            history["auto"]["pretrain"] = self.pretrained
        if self.self_training is not None:
            history["auto"]["self_training"] = self.self_training
        return final, val_metrics, history

    def trial(self, label: str, over: dict[str, Any], seed: int, train: Examples, val: Examples, left: float
               ) -> tuple[dict[str, Any], Any]:
        cfg = dataclasses.replace(self.cfg, seed=seed, **over)
        if over["strategy"] != "probe":
            cfg = dataclasses.replace(cfg, max_time=max(5.0, left))
        t = time.perf_counter()
        member = self.fit_one(cfg, train, val)
        seconds = round(time.perf_counter() - t, 1)
        metrics = self.val_metrics(member)
        h = member.history
        row = self._row(label, over, seed, seconds, metrics, epochs_run=h.get("epochs_run"),
                        # (a fine-tuning candidate's C: its probe start's, which a refit as a probe keeps)
                        best_epoch=h.get("best_epoch"), C=h.get("C") or h.get("probe_C"))
        self.best_neural = self.better(self.best_neural, row, member)  # (self-training's teacher, auto_unlabeled)
        return row, member

    def _row(self, label: str, over: dict[str, Any], seed: int, seconds: float, metrics: dict[str, Any],
             **more: Any) -> dict[str, Any]:
        score = self.sign * metrics[self.metric]
        acc = metrics.get("accuracy", score)  # (regression has no accuracy: its score stands in)
        return {"candidate": label, "strategy": over["strategy"], "status": "ran", "overrides": over,
                "seeds": [seed], "val_accs": [acc], "val_acc": acc, "val_scores": [score], "val_score": score,
                "val_macro_f1": round(metrics["macro_f1"], 4) if "macro_f1" in metrics else None,
                "seconds": [seconds], "metrics": metrics, **more}

    def _classical_trial(self, label: str, over: dict[str, Any], train: Examples, val: Examples
                         ) -> tuple[dict[str, Any], Any]:
        """The n-gram model (C chosen on validation) or its stack with the probe (weight chosen out of fold)."""
        from .adapt import ngram
        from .adapt.headsearch import weightings
        from .adapt.imbalance import imbalance

        skip = {"candidate": label, "strategy": over["strategy"]}
        if self.classical is None or not len(val):
            return {**skip, "status": "skipped: no validation split"}, None
        t = time.perf_counter()
        y_tr, y_va = self.classical.targets(train), self.classical.targets(val)
        n = self.classical.n_classes
        if over["strategy"] == "ngram":
            ratio = imbalance(y_tr, n, self.cfg)["ratio"]
            model, hist, p_va = ngram.select(list(train.inputs), y_tr, list(val.inputs), y_va, n, self.cfg.metric,
                                             weightings(self.cfg.class_weight, ratio), self.cfg.seed)
            self._ngram_trial = (model, hist, p_va)
            weight, more = 1.0, {"C": hist["C"]}
        else:
            if self._probe is None or self._ngram_trial is None:
                return {**skip, "status": "skipped: needs the probe and the n-gram candidates"}, None
            if self.cfg.label_template:
                return {**skip, "status": "skipped: a probe with a label prior is not stacked"}, None
            counts = np.bincount(y_tr, minlength=n)
            folds = min(5, int(counts[counts > 0].min()))
            if folds < 2:
                return {**skip, "status": "skipped: a class has one training example (no out-of-fold)"}, None
            member, probe_row = self._probe
            model, hist, p_ng_va = self._ngram_trial
            p_probe = self.classical.probe_out_of_fold(member, train, folds)
            p_ng = ngram.out_of_fold(list(train.inputs), y_tr, n, hist["C"], hist["class_weighted"],
                                     self.cfg.seed, folds)
            weight, table = ngram.stack_weight(p_probe, p_ng, y_tr, self.cfg.metric, n)
            p_va = ngram.blend(probe_row["metrics"]["_proba"], p_ng_va, weight)
            hist["stack"] = {"weight": weight, "folds": folds, "chosen_by": f"out-of-fold {self.cfg.metric} on "
                             f"the training split ({len(y_tr)} examples)", "weights": table}
            more = {"C": probe_row.get("C"), "ngram_weight": weight}
        seconds = time.perf_counter() - t
        if over["strategy"] == "stack":  # it needs both models: their time counts too (ties go to the faster)
            seconds += probe_row["seconds"][0] + next(r["seconds"][0] for r in self._rows if r["strategy"] == "ngram")
        row = self._row(label, over, self.cfg.seed, round(seconds, 1), self.classical.metrics(p_va), **more)
        row["ngram_weight"] = weight
        return row, {"ngram_weight": weight}

    @staticmethod
    def better(best: dict[str, Any] | None, row: dict[str, Any], member: Any) -> dict[str, Any]:
        if row.get("status") != "ran":
            return best  # type: ignore[return-value]
        key = (row["val_score"], -row["seconds"][0])
        if best is None or key > (best["row_score"], -best["row"]["seconds"][0]):
            return {"row": row, "member": member, "metrics": row["metrics"], "row_score": row["val_score"],
                    "seed": row["seeds"][0]}
        return best

    def _final(self, winner: dict[str, Any], best: dict[str, Any], train: Examples, val: Examples
               ) -> tuple[Any, str]:
        """The winner with its settings, trained on train + val; or the selected model when time is short."""
        both = concat(train, val)
        data = "training + validation data" + (" + pseudo-labels" if winner.get("pseudo") is not None else "")
        over = dict(winner["overrides"])
        left = self.budget - self.elapsed()
        if winner["strategy"] in CLASSICAL:
            return self._final_classical(winner, both, val)
        if winner["strategy"] == "probe" or (winner.get("best_epoch") == -1):
            c = winner.get("C") or _probe_c(best)
            cfg = dataclasses.replace(self.cfg, seed=best["seed"], strategy="probe", probe_c=c, extend_vocab=False,
                                      **{k: over[k] for k in ("backbone",) if k in over})
            note = f"probe refit on {data} ({len(both)} examples) with C={c}"
            if winner["strategy"] != "probe":
                note += " (the fine-tuning candidate kept its probe starting point)"
            return self.fit_one(cfg, both, val), note
        epochs = max(1, (winner.get("best_epoch") or 0) + 1)
        scale = len(both) / max(1, len(train))
        need = refit_seconds(best["member"].history, epochs, scale) if best["member"] is not None else None
        if need is None:  # (no timings: the whole run, on the larger data)
            need = max(winner["seconds"]) * scale
        kept = (f"kept the selected model (trained on the training split only): {left:.0f} s left of the budget, "
                f"a refit on all data for {epochs} epoch(s) needs about {need:.0f} s")
        if best["member"] is not None and left < REFIT_MARGIN * need:
            return best["member"], kept
        # (the LP-FT probe keeps the C chosen on the clean split: chosen again on a validation split the model
        # now trains on, it would pick the least regularised head)
        cfg = dataclasses.replace(self.cfg, seed=best["seed"], restore_best=False, max_time=max(5.0, left),
                                  **{"probe_c": _probe_c(best) or self.cfg.probe_c, **over, "epochs": epochs})
        note = (f"{winner['candidate']} retrained on {data} ({len(both)} examples) for "
                f"{epochs} epoch(s), those of the weights it kept on validation "
                f"{self.metric if self.cfg.select_by == 'metric' else self.cfg.select_by} "
                f"(keep={self.cfg.keep}), keeping the last weights")
        refit = self.fit_one(cfg, both, val)
        done = refit.history.get("epochs_run", epochs)
        if done < epochs and best["member"] is not None:  # stopped by the budget mid-schedule: not the winner's run
            return best["member"], kept.replace("needs about", "was estimated at") + (
                f", but the refit was stopped by the budget after {done} of them")
        return refit, note

    def _final_classical(self, winner: dict[str, Any], both: Examples, val: Examples) -> tuple[Any, str]:
        """The probe and the n-gram model, each refit on training + validation data with its chosen C (and
        class weighting); the stack's weight as chosen (1.0: the n-gram model alone, the probe kept unused)."""
        from .adapt import ngram

        assert self._probe is not None and self._ngram_trial is not None
        member, probe_row = self._probe
        weighted = (member.history.get("imbalance") or {}).get("weighted")
        cfg = dataclasses.replace(self.cfg, strategy="probe", probe_c=probe_row.get("C"), extend_vocab=False,
                                  class_weight=self.cfg.class_weight if weighted is None else
                                  ("balanced" if weighted else "none"))
        probe = self.fit_one(cfg, both, val)
        hist = self._ngram_trial[1]
        y = self.classical.targets(both)
        model = ngram.fit(list(both.inputs), y, self.classical.n_classes, hist["C"], hist["class_weighted"],
                          self.cfg.seed, {"features": "character 1-3-grams and word 1-2-grams, TF-IDF"})
        weight = float(winner["ngram_weight"])
        self.ngram = (model, weight) if weight > 0.0 else None  # (weight 0: the probe alone)
        what = "the n-gram model alone (the probe is kept, unused)" if weight >= 1.0 else \
            f"the stack: {1 - weight:.1f} x probe + {weight:.1f} x n-gram model"
        return probe, (f"{what}; both refit on training + validation data ({len(both)} examples) with the C "
                       f"chosen on validation (probe C={probe_row.get('C')}, n-gram C={hist['C']})")


def refit_seconds(history: dict[str, Any], epochs: int, scale: float) -> float | None:
    """Seconds a refit for `epochs` epochs on `scale` times the candidate's data should take, from the
    candidate's own timings: its setup (the fit's seconds less its epochs': probe head, cached activations) and
    its first `epochs` epochs, both growing with the data. None without the timings."""
    per_epoch = list(history.get("epoch_seconds") or [])
    fit = history.get("fit_seconds")
    if not per_epoch or fit is None:
        return None
    setup = max(0.0, float(fit) - sum(per_epoch))
    train = sum(per_epoch[:epochs]) + max(0, epochs - len(per_epoch)) * statistics.mean(per_epoch)
    return (setup + train) * scale


def _probe_c(best: dict[str, Any]) -> float | None:
    h = best["member"].history if best.get("member") else {}
    return h.get("C") or h.get("probe_C")
