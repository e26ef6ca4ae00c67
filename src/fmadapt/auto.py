"""`--strategy auto --time-budget 10m`: choose the adaptation strategy by measurement on the user's data.

Candidates run on the training split (the cheap ones first, see `candidates`) and are compared on the
validation split; every fine-tuning candidate runs under Lightning's `max_time`, so the comparison never
overruns its share of the budget (60 %). Spare time reruns the leading fine-tuning candidates with other
seeds (the probe is deterministic), and the spread is reported. The winner is then trained once more, on training +
validation data, with the settings it won with (the probe's C; the fine-tuning epochs it needed), within
what is left of the budget. The run summary holds the candidates table and why the winner won."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from .config import FitConfig, parse_duration
from .data.examples import Examples, concat

SELECTION_SHARE = 0.6  #: of the budget, for comparing candidates; the rest trains the winner on all data
CANDIDATE_EPOCHS = 3


def candidates(modality: str, cfg: FitConfig) -> list[tuple[str, dict[str, Any]]]:
    """(label, FitConfig overrides) in the order they run; what the budget cannot reach is skipped. The two
    cheap ones first (the probe, fine-tuning the top 2 groups on cached activations), then all layers, then
    LoRA: LoRA still runs the whole network forward and backward, so on a CPU it saves little time (SST-2 5,000,
    MiniLM-L6, one run: 102-108 s per epoch against 123-145 s for all layers) and it scored lower wherever both
    were measured (there 82.8 % vs 86.6 %; 80.9 % vs 85.2 % in benchmarks/strategies.md). Ahead of all layers,
    it took the time that all layers needed in a 10-minute SST-2 search (benchmarks/strategies_sst2_auto.md)."""
    epochs = min(cfg.epochs, CANDIDATE_EPOCHS)
    top = {"strategy": "finetune", "unfreeze": 2, "epochs": epochs}
    if modality == "image":
        top["augment"] = False  # so that the frozen prefix is cached: several times faster per epoch
    # an extended vocabulary must be learnt, which only fine-tuning all layers does; the others run without
    plain = {"extend_vocab": False} if cfg.extend_vocab else {}
    return [
        ("probe", {"strategy": "probe", **plain}),
        ("finetune top 2 groups", {**top, **plain}),
        ("finetune all layers" + (" + new tokens" if cfg.extend_vocab else ""),
         {"strategy": "finetune", "unfreeze": -1, "epochs": epochs}),
        ("lora", {"strategy": "lora", "epochs": epochs, **plain}),
    ]


class AutoSearch:
    """Runs the comparison through `fit_one(cfg, train, val) -> (model, cfg, history, trains_backbone, vocab)`
    and `val_metrics(model, cfg, trains_backbone) -> metrics`, both supplied by the estimator."""

    def __init__(self, cfg: FitConfig, modality: str, fit_one: Any, val_metrics: Any) -> None:
        self.cfg, self.modality = cfg, modality
        self.fit_one, self.val_metrics = fit_one, val_metrics
        self.budget = parse_duration(cfg.time_budget) or 600.0
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, train: Examples, val: Examples) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(final member tuple, selection-phase validation metrics of the winner, history)."""
        selection = SELECTION_SHARE * self.budget
        rows: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        for label, over in candidates(self.modality, self.cfg):
            left = selection - self.elapsed()
            if rows and left < max(10.0, 0.05 * self.budget):
                rows.append({"candidate": label, "strategy": over["strategy"], "status": "skipped: time budget"})
                continue
            row, member = self._trial(label, over, self.cfg.seed, train, val, left)
            rows.append(row)
            best = self._better(best, row, member)
        # spare selection time: other seeds for the leading fine-tuning candidates
        for row in sorted((r for r in rows if r.get("status") == "ran" and r["strategy"] != "probe"),
                          key=lambda r: -r["val_acc"]):
            left = selection - self.elapsed()
            if left < 1.2 * row["seconds"][0]:
                continue
            over = dict(row["overrides"])
            seed = self.cfg.seed + len(row["seeds"])
            extra, member = self._trial(row["candidate"], over, seed, train, val, left)
            row["seeds"].append(seed)
            row["val_accs"].append(extra["val_acc"])
            row["seconds"].append(extra["seconds"][0])
            row["val_acc"] = statistics.mean(row["val_accs"])
            if extra["val_acc"] > best["row_acc"] and best["row"] is row:  # keep the better seed's model
                best.update(member=member, metrics=extra["metrics"], row_acc=extra["val_acc"], seed=seed)
        for r in rows:
            if r.get("status") == "ran":
                r["val_acc_spread"] = round(max(r["val_accs"]) - min(r["val_accs"]), 4)
                r["val_acc"] = round(r["val_acc"], 4)
                r.pop("metrics", None)
        ran = [r for r in rows if r.get("status") == "ran"]
        winner = max(ran, key=lambda r: (r["val_acc"], -statistics.mean(r["seconds"])))
        if best is None or best["row"] is not winner:  # a rerun changed the ranking: refit is below anyway
            best = {"row": winner, "member": None, "metrics": None, "seed": winner["seeds"][0]}
        final, final_note = self._final(winner, best, train, val)
        val_metrics = best["metrics"] if best["metrics"] is not None else self.val_metrics(*_m(final))
        why = (f"highest validation accuracy, {winner['val_acc']:.4f}"
               + (f" (mean of {len(winner['seeds'])} seeds, spread {winner['val_acc_spread']:.4f})"
                  if len(winner["seeds"]) > 1 else "")
               + "; ties go to the faster candidate")
        runner_up = sorted((r for r in ran if r is not winner), key=lambda r: -r["val_acc"])
        if runner_up:
            why += f"; next: {runner_up[0]['candidate']} at {runner_up[0]['val_acc']:.4f}"
        for r in rows:
            r.pop("overrides", None)
            r.pop("val_accs", None)
        history = {"auto": {"budget_seconds": self.budget, "candidates": rows, "winner": winner["candidate"],
                            "why": why, "final": final_note, "seconds": round(self.elapsed(), 1)},
                   **final[2]}
        return final, val_metrics, history

    def _trial(self, label: str, over: dict[str, Any], seed: int, train: Examples, val: Examples, left: float
               ) -> tuple[dict[str, Any], Any]:
        cfg = dataclasses.replace(self.cfg, seed=seed, **over)
        if over["strategy"] != "probe":
            cfg = dataclasses.replace(cfg, max_time=max(5.0, left))
        t = time.perf_counter()
        member = self.fit_one(cfg, train, val)
        seconds = round(time.perf_counter() - t, 1)
        metrics = self.val_metrics(*_m(member))
        h = member[2]
        row = {"candidate": label, "strategy": over["strategy"], "status": "ran", "overrides": over,
               "seeds": [seed], "val_accs": [metrics["accuracy"]], "val_acc": metrics["accuracy"],
               "val_macro_f1": round(metrics["macro_f1"], 4), "seconds": [seconds], "metrics": metrics,
               "epochs_run": h.get("epochs_run"), "best_epoch": h.get("best_epoch"), "C": h.get("C")}
        return row, member

    @staticmethod
    def _better(best: dict[str, Any] | None, row: dict[str, Any], member: Any) -> dict[str, Any]:
        key = (row["val_acc"], -row["seconds"][0])
        if best is None or key > (best["row_acc"], -best["row"]["seconds"][0]):
            return {"row": row, "member": member, "metrics": row["metrics"], "row_acc": row["val_acc"],
                    "seed": row["seeds"][0]}
        return best

    def _final(self, winner: dict[str, Any], best: dict[str, Any], train: Examples, val: Examples
               ) -> tuple[Any, str]:
        """The winner with its settings, trained on train + val; or the selected model when time is short."""
        both = concat(train, val)
        over = dict(winner["overrides"])
        left = self.budget - self.elapsed()
        if winner["strategy"] == "probe" or (winner.get("best_epoch") == -1):
            c = winner.get("C") or _probe_c(best)
            cfg = dataclasses.replace(self.cfg, seed=best["seed"], strategy="probe", probe_c=c, extend_vocab=False)
            note = f"probe refit on training + validation data ({len(both)} examples) with C={c}"
            if winner["strategy"] != "probe":
                note += " (the fine-tuning candidate kept its probe starting point)"
            return self.fit_one(cfg, both, val), note
        per_run = max(winner["seconds"])
        if best["member"] is not None and left < 1.25 * per_run / (1 - self.cfg.val_fraction):
            return best["member"], (f"kept the selected model (trained on the training split only): "
                                    f"{left:.0f} s left of the budget, too little to retrain on all data")
        epochs = max(1, (winner.get("best_epoch") or 0) + 1)
        # (the LP-FT probe keeps the C chosen on the clean split: chosen again on a validation split the model
        # now trains on, it would pick the least regularised head)
        cfg = dataclasses.replace(self.cfg, seed=best["seed"], restore_best=False, max_time=max(5.0, left),
                                  **{"probe_c": _probe_c(best) or self.cfg.probe_c, **over, "epochs": epochs})
        note = (f"{winner['candidate']} retrained on training + validation data ({len(both)} examples) for "
                f"{epochs} epoch(s), the number that gave its best validation {self.cfg.select_by}, keeping the "
                "last weights")
        return self.fit_one(cfg, both, val), note


def _m(member: Any) -> tuple[Any, Any, bool]:
    model, cfg, _, trains, _ = member
    return model, cfg, trains


def _probe_c(best: dict[str, Any]) -> float | None:
    h = best["member"][2] if best.get("member") else {}
    return h.get("C") or h.get("probe_C")
