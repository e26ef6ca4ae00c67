"""What `fit` and `demo` print: the run summary (text or JSON) and the evaluations' summary lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .app import _out


def _summary(clf: Any, out: Path, seconds: float) -> dict[str, Any]:
    privacy = ((clf.history_ or {}).get("federation") or {}).get("privacy")
    return {
        "model_dir": str(out.resolve()),
        "backbone": clf.model_.backbone.cfg.name,
        "strategy": clf.config_.strategy,
        "classes": clf.classes_,
        "metrics": {k: {m: v[m] for m in ("n", "accuracy", "macro_f1", "ece", "micro_f1", "subset_accuracy", "rmse",
                                          "mae", "r2", "spearman", "interval_coverage", "interval_width")
                        if m in v} for k, v in clf.metrics_.items()},
        "data": {k: v for k, v in clf.data_summary_.items() if k != "class_counts"},
        "history": clf.history_,
        "seconds": round(seconds, 1),
        "resumed": getattr(clf, "resumed_", []),
        **({"epsilon": privacy["epsilon"]} if privacy else {}),  # (differential privacy: the largest spent)
    }


def _outputs(clf: Any) -> str:
    if clf.regression:
        interval = clf.interval_
        return (f"regression of {clf.classes_[0]!r}" + (f", {interval['coverage']:.0%} intervals ± "
                                                        f"{interval['halfwidth']:.4g}" if interval else ""))
    return f"{len(clf.classes_)} {'labels (multi-label)' if clf.multilabel else 'classes'}"


def _print_fit(clf: Any, out: Path, seconds: float) -> None:
    from ..evaluate.metrics import format_metrics

    ds = clf.data_summary_
    sizes = ", ".join(f"{k} {v}" for k, v in ds["sizes"].items())
    strategy = clf.config_.strategy
    if (clf.history_ or {}).get("auto"):
        strategy = f"auto -> {clf.history_['auto']['winner']}"
    _out(f"backbone {clf.model_.backbone.cfg.name} | strategy {strategy} | {sizes} "
         f"| {_outputs(clf)} | {seconds:.1f}s")
    for w in ds["warnings"]:
        _out(f"warning: {w}")
    auto = (clf.history_ or {}).get("auto")
    if auto:
        _out(f"strategy auto ({auto['seconds']:.0f} s of a {auto['budget_seconds']:.0f} s budget):")
        metric = {"accuracy": "val acc", "balanced_accuracy": "val bal", "macro_f1": "val f1", "micro_f1": "val f1µ",
                  "rmse": "-val rmse"}.get(auto.get("metric", "accuracy"), "val score")
        _out(f"  {'candidate':<24} {metric:>8} {'spread':>7} {'seeds':>5} {'seconds':>8}  status")
        for r in auto["candidates"]:
            if r.get("status") == "ran":
                _out(f"  {r['candidate']:<24} {r.get('val_score', r['val_acc']):>8.4f} {r['val_acc_spread']:>7.4f} "
                     f"{len(r['seeds']):>5} {sum(r['seconds']):>8.1f}  ran")
            else:
                _out(f"  {r['candidate']:<24} {'':>8} {'':>7} {'':>5} {'':>8}  {r['status']}")
        for r in auto.get("backbone_ranking") or []:
            _out(f"  backbone {r['backbone']:<24} LogME {r['logme']:>8.4f} ({r['seconds']:.1f} s)")
        _out(f"  winner: {auto['winner']} ({auto['why']})")
        _out(f"  final: {auto['final']}")
    fed = (clf.history_ or {}).get("federation")
    if fed:
        for line in federation_lines(fed):
            _out(line)
    tta = (clf.history_ or {}).get("tta")
    if tta:
        _out(f"test-time augmentation ({tta['views']}): validation accuracy {tta['val_accuracy']:.4f}, "
             f"{tta['val_accuracy_without']:.4f} without")
    elif getattr(clf.config_, "tta", False):
        _out("test-time augmentation (image + horizontal mirror image): on; not compared with it off, since the "
             "final model trained on the validation split (probe refit or refit_full)")
    hist = clf.history_ or {}
    for h in hist.get("ensemble") or [hist]:
        st, lp = h.get("self_training"), h.get("label_prior")
        who = f" (member seed {h['seed']}, {h['backbone']})" if "ensemble" in hist else ""
        if lp:
            _out(f"label prior{who}: {lp['template']!r} with each class name; zero-shot accuracy "
                 f"{lp['zero_shot_acc']:.1%} on the {lp['on']}, strength {lp['strength']:g} (0: the names were no "
                 "help and are ignored)")
        if st:
            _out(f"self-training{who}: {st['unlabeled']} unlabeled input(s), {st['confident']} with probability "
                 f">= {st['threshold']:g}, {st['pseudo_labeled']} pseudo-labeled {st['per_class']}; {st['note']}")
    unl = clf.data_summary_.get("unlabeled")
    if unl and unl.get("labeled_overlap_dropped"):
        _out(f"unlabeled data: {unl['labeled_overlap_dropped']} input(s) left out, they are labeled ones too")
    imb = (clf.history_ or {}).get("imbalance")
    if imb and (imb["weighted"] or imb.get("chosen_by")):
        how = ("weighted by inverse class frequency" if imb["weighted"] else "not weighted")
        why = (f"chosen by {imb['chosen_by']}" if imb.get("chosen_by") else "--class-weight none to turn off")
        _out(f"class imbalance: largest/smallest class = {imb['ratio']:g}; the loss is {how} ({why})")
    skipped = ds["skipped"] + ((ds.get("unlabeled") or {}).get("skipped") or [])
    if skipped:
        _out(f"skipped {len(skipped)} input(s):")
        for s in skipped[:20]:
            _out(f"  {s['where']}: {s['reason']}")
        if len(skipped) > 20:
            _out(f"  ... and {len(skipped) - 20} more (metrics.json lists all)")
    for split, m in clf.metrics_.items():
        _out(format_metrics(m, title=f"\n[{split}]"))
    cal = getattr(clf, "calibration_", {}) or {}
    if cal.get("fitted"):
        _out(f"\ncalibration: temperature {cal['temperature']:.3f} fitted on the validation predictions; "
             f"ECE {cal['before']['ece']:.4f} -> {cal['after']['ece']:.4f} (on those same predictions)")
    _out(f"\nmodel saved to {out}")


def federation_lines(fed: dict[str, Any]) -> list[str]:
    """The federation of a federated fit: clients, rounds (every round up to 25, else a sample) and what was
    rejected."""
    from ..federated.card import round_problems

    sizes = [c["examples"] for c in fed["clients"]] or [0]
    skews = [c["label_skew"] for c in fed["clients"] if "label_skew" in c]
    where = (f"on SuperNodes through the SuperLink at {fed['deployment']['superlink']}" if fed.get("deployment") else
             f"{fed['workers']} workers")
    lines = [f"federation: {len(fed['clients'])} clients (partition {fed['partition']}: {min(sizes)}-{max(sizes)} "
             "examples each" + (f", label skew {min(skews):.2f}-{max(skews):.2f}" if skews else "")
             + f"), {len(fed['rounds'])} rounds of {fed['aggregation']}{' with SecAgg+' if fed.get('secure') else ''}"
             f" in {fed['seconds']:.1f} s ({where}); "
             + (f"{fed['bytes'] / 1e6:.3f} MB sent in all; " if fed.get("bytes") is not None else "")
             + f"{fed['trainable']}",
             f"  {'round':>5} {'held-out acc':>12} {'loss':>7} {'used':>9} {'seconds':>8}  rejected / failed"]
    rows = fed["rounds"]
    shown = rows if len(rows) <= 25 else [r for i, r in enumerate(rows) if i % (len(rows) // 20 + 1) == 0 or
                                          i == len(rows) - 1]
    for r in shown:
        acc, loss = r.get("accuracy"), r.get("loss")
        lines.append(f"  {r['round']:>5} {'' if acc is None else f'{acc:.4f}':>12} "
                     f"{'' if loss is None else f'{loss:.4f}':>7} "
                     f"{str(r.get('used', '')) + '/' + str(r.get('sampled', '')):>9} {r.get('seconds', 0):>8.2f}  "
                     f"{round_problems(r) or '-'}")
    privacy = fed.get("privacy")
    if privacy:
        lines.append(f"  differential privacy: epsilon spent {privacy['epsilon']} at delta {privacy['delta']} (the "
                     f"largest over the clients; target {privacy['epsilon_target']})")
    if fed["rejected"] or fed["failed"]:
        lines.append(f"  {fed['rejected']} update(s) rejected and {fed['failed']} client failure(s) in all; the "
                     "rounds went on without them")
    return lines


def _print_evaluations(evals: dict[str, Any]) -> None:
    for line in _evaluation_lines(evals):
        _out(line)


def _evaluation_lines(evals: dict[str, Any]) -> list[str]:
    """What the evaluations found, as the lines `fit` and `evaluate` print."""
    lines = []
    if evals.get("robustness"):
        from ..evaluate.robustness import robustness_summary_lines

        lines.append("\n" + "\n".join(robustness_summary_lines(evals["robustness"])))
    if evals.get("fairness"):
        from ..evaluate.fairness import fairness_summary_lines
        from ..evaluate.fairness_tasks import task_fairness_lines

        fair = evals["fairness"]  # (multi-label and regression models: fairness_tasks.py's keys)
        lines.append("\n" + "\n".join((task_fairness_lines if fair.get("task") else fairness_summary_lines)(fair)))
    if evals.get("explanations") is not None:
        items = evals["explanations"]
        lines.append(f"\nexplanations: {len(items)} examples ({sum(1 for i in items if i.get('correct') is False)} "
                     "wrong)")
    if evals.get("seconds"):
        lines.append("evaluation seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in evals["seconds"].items()))
    return lines
