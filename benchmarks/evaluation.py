#!/usr/bin/env python
"""What fmadapt's evaluation adds on top of a fit, on two shared datasets in ONE run on the local CPU: test-split
ECE / Brier / NLL before and after temperature scaling, the robustness curves, and the seconds each evaluation
part takes next to the probe fit of the same run (the baseline).

    python benchmarks/evaluation.py                      # full run (~10-15 min), writes benchmarks/evaluation.md
    python benchmarks/evaluation.py --quick              # tiny N: a smoke test (< 2 min; prints only)
    python benchmarks/evaluation.py --only sst2 --json raw.json

Datasets (--only):
  sst2         TextClassifier probe (MiniLM-L6) on 5,000 training sentences (stratified subset of the deduplicated
               train.tsv, seed 0), tested on the labeled test.tsv (1,821), as benchmarks/strategies.py.
               Robustness: 4 text perturbations x 4 rates on a stratified 1,000 of the test sentences.
  hymenoptera  ImageClassifier probe (EfficientNet-Lite0, 224 px) on train/ (245), tested on val/ (153).
               Robustness: 5 ImageNet-C corruptions x 5 severities on all 153 test photos; FGSM and PGD
               (5 steps) at eps 0, 1, 2, 4, 8 /255 on a stratified 64 of them.

Parts timed per dataset, each on its own, in this order (wall seconds, and x the probe `fit()` seconds):
  fit (probe)        the baseline: backbone load, data checks, the 20 % validation split, features, C grid,
                     and the temperature fitted on the validation predictions (fit does that now)
  test evaluation    `clf.evaluate(test)` (first pass over the test inputs: pays their feature extraction)
  calibration        `calibrate()` (fit_temperature + measures + reliability bins) on the honest validation
                     predictions the fit used; fit_temperature alone is shown as a breakdown row
  robustness         one `robustness_report` call; its own per-part seconds are breakdown rows
  explanations       `explain_sample(n_right=4, n_wrong=4)` with method="ig" and with method="saliency"
  fairness           `fairness_report` on a SYNTHETIC grouping made only to time it (SST-2: short vs long
                     sentences; hymenoptera: photo orientation); skipped if fmadapt.evaluate.fairness is absent
  report rendering   `render_report` of everything above (figures included) to an HTML string
Calibration on the TEST split: the same test predictions with `clf.temperature_` as fitted (on validation) and
with it set to 1.0 (then restored); measures from `calibration_measures` (15-bin top-label ECE, multiclass Brier,
NLL). The validation-split figures in `clf.calibration_` are in-sample (T was fitted on them) and shown apart.

torch uses 2 threads (--threads; 1 with --quick: on a 2-core machine loaded by other jobs, 2 OpenMP threads ran
this script's adversarial and explanation parts ~20x slower than 1 thread). $FMADAPT_CACHE is a fresh temp dir per
dataset, so the probe pays its feature extraction and the ONNX export; parts after it may reuse cached features of
the same inputs (robustness never does: it switches the cache off for perturbed copies and for its clean pass).
Data: ../shared/data (see its README.md); when it is absent the script says so and exits 0. A failing part is
printed with its traceback, listed, and the run goes on.

Rows appended to benchmarks/results/evaluation.csv (--csv; a --quick run only when --csv is given), one per part
of the time tables: method = the part (`probe_fit` is the baseline of the ratios), options (JSON: what ran, and
whether the row is a breakdown of the one above), seconds, x_fit (× probe fit), peak_mib = this process's peak
while the part ran (none for breakdown rows); the test evaluation row also has the test calibration before / after
temperature scaling, the robustness row the clean and mean perturbed accuracy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import strategies as st  # noqa: E402  (read_sst2, stratified)
import throughput as tp  # noqa: E402  (machine info, md_table, log, load_avg, link_hymenoptera)
from common import (  # noqa: E402
    add_csv_argument,
    append_rows,
    csv_path,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

DATASETS = ("sst2", "hymenoptera")
SEED = 0
THREADS = 2
TITLES = {"sst2": "SST-2", "hymenoptera": "hymenoptera"}


class Plan:
    """Sizes of a full run, or tiny ones for --quick."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sst2_train, self.sst2_test = (200, 100) if quick else (5000, None)  # None: all 1,821
        self.text_max = 80 if quick else 1000  # robustness examples (stratified, seed 0)
        self.hym_per_class: tuple[int, int] | None = (10, 6) if quick else None  # (train, test) per class
        self.image_max = 1000  # robustness: every test photo
        self.max_adversarial = 4 if quick else 64
        self.n_right, self.n_wrong = (1, 1) if quick else (4, 4)
        self.ig_steps = 4 if quick else 32  # 32 = explain.N_STEPS, the library default


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass
class Part:
    dataset: str
    part: str
    what: str
    seconds: float | None = None
    notes: str = ""
    error: str | None = None
    breakdown: bool = False  # a share of the row above it (not added to the totals)
    peak_mib: float | None = None  # this process's peak while the part ran (not for breakdown rows)


@dataclass
class Result:
    dataset: str
    regime: str = ""
    fit_s: float | None = None
    accuracy: float | None = None
    n_test: int | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, Any] = field(default_factory=dict)
    robustness_budget: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.parts: list[Part] = []
        self.results: dict[str, Result] = {}
        self.failures: list[str] = []
        self.dataset_s: dict[str, float] = {}

    def fresh_cache(self, name: str) -> None:
        d = self.tmp / "caches" / name
        d.mkdir(parents=True, exist_ok=True)
        os.environ["FMADAPT_CACHE"] = str(d)

    def timed(self, dataset: str, part: str, what: str, fn: Callable[[], Any]) -> tuple[Part, Any]:
        """Run and time fn(); on failure print the traceback, record the row as failed and return None."""
        tp.log(f"{TITLES[dataset]} | {part} [{what}] ...")
        row = Part(dataset, part, what)
        self.parts.append(row)
        reset_peak()
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - report and keep going
            traceback.print_exc()
            row.error = f"{type(e).__name__}: {e}"
            self.failures.append(f"{TITLES[dataset]} / {part}: {row.error}")
            tp.log(f"  FAILED: {row.error}")
            return row, None
        row.seconds = time.perf_counter() - t0
        row.peak_mib = window_peak_mib()
        tp.log(f"  {row.seconds:.2f} s (load {tp.load_avg()})")
        return row, out

    def sub(self, dataset: str, part: str, what: str, seconds: float | None, notes: str = "") -> None:
        self.parts.append(Part(dataset, part, what, seconds, notes, breakdown=True))


# ----------------------------------------------------------------------------------------------
# the evaluation parts (shared by both datasets)
# ----------------------------------------------------------------------------------------------
def _targets(clf: Any, labels: list[str]) -> Any:
    import numpy as np

    index = {c: i for i, c in enumerate(clf.classes_)}
    return np.asarray([index[lab] for lab in labels], dtype=np.int64)


def first_import(bench: Bench, ds: str, module: str, why: str) -> None:
    """Time importing `module` when this process has not imported it yet: a one-off cost that the first
    use of that evaluation part pays (later datasets of the run do not)."""
    import importlib

    if module in sys.modules:
        return
    t0 = time.perf_counter()
    try:
        importlib.import_module(module)
    except ImportError:
        return  # the part that needs it says so (or fails) itself
    bench.parts.append(Part(ds, f"import {module}", f"one-off, first use in this process ({why})",
                            time.perf_counter() - t0, "paid once per process; later datasets of the run do not"))


def calibration_on_test(clf: Any, ex: Any, reported_ece: float | None) -> dict[str, Any]:
    """Measures on the test split with the fitted temperature and with T = 1 (predictions reuse cached
    features, so this is not timed as a part)."""
    from fmadapt.evaluate.calibration import apply_temperature, calibration_measures

    y = _targets(clf, ex.labels)
    t = float(clf.temperature_)
    after = clf._proba(ex)
    try:
        clf.temperature_ = 1.0
        before = clf._proba(ex)
    finally:
        clf.temperature_ = t
    out = {"temperature": t, "n": len(y), "before": calibration_measures(before, y),
           "after": calibration_measures(after, y), "accuracy_before": float((before.argmax(1) == y).mean()),
           "accuracy_after": float((after.argmax(1) == y).mean())}
    # consistency checks, said in the table when they fail: T applied by predict == apply_temperature by hand,
    # and evaluate()'s "ece" is the calibrated one
    out["apply_matches"] = bool(abs(apply_temperature(before, t) - after).max() < 1e-5)
    out["evaluate_ece_matches"] = None if reported_ece is None else \
        bool(abs(reported_ece - out["after"]["ece"]) < 1e-5)
    cal = dict(clf.calibration_ or {})
    out["val"] = {k: cal.get(k) for k in ("fitted", "n", "note", "before", "after")}
    return out


def calibration_parts(bench: Bench, ds: str, clf: Any) -> None:
    import numpy as np

    from fmadapt.evaluate.calibration import calibrate, fit_temperature

    val = clf.splits_["val"]
    proba = getattr(clf.model_, "_val_proba", None)
    source = "honest validation predictions kept by the probe (before its refit on train + val)"
    if proba is None:
        t = clf.temperature_
        try:
            clf.temperature_ = 1.0
            proba = clf._proba(val)
        finally:
            clf.temperature_ = t
        source = "validation predictions of the final model"
    y = _targets(clf, val.labels)
    row, cal = bench.timed(ds, "calibration", f"`calibrate()` on {len(y)} validation predictions",
                           lambda: calibrate(np.asarray(proba), y, source))
    fitted = bool(cal and cal["fitted"])
    if cal is not None:
        row.notes = (f"T = {cal['temperature']:.3f} ({'fitted' if fitted else cal['note']}); "
                     f"same T as fit() found: {abs(cal['temperature'] - clf.temperature_) < 1e-6}; "
                     "already paid inside fit()")
    t0 = time.perf_counter()
    try:
        fit_temperature(np.asarray(proba), y)
        bench.sub(ds, "↳ fit_temperature", "LBFGS on log T (max_iter 200)", time.perf_counter() - t0,
                  "the rest of `calibrate()` is measures + reliability bins" if fitted else
                  "timed on its own: `calibrate()` skipped it (too few validation examples)")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        bench.failures.append(f"{TITLES[ds]} / fit_temperature: {type(e).__name__}: {e}")


def robustness_part(bench: Bench, ds: str, clf: Any, ex: Any, res: Result, max_examples: int,
                    max_adversarial: int) -> None:
    from fmadapt.evaluate.robustness import robustness_report, robustness_summary_lines

    image = ex.modality == "image"
    what = (f"{min(len(ex), max_examples)} images: 5 corruptions x 5 severities; FGSM + PGD x 5 eps on "
            f"{min(len(ex), max_adversarial)}" if image else
            f"{min(len(ex), max_examples)} texts: 4 perturbations x 4 rates")
    res.robustness_budget = what
    row, rob = bench.timed(ds, "robustness", f"`robustness_report` ({what})",
                           lambda: robustness_report(clf, ex, max_examples=max_examples,
                                                     max_adversarial=max_adversarial, adversarial=image,
                                                     seed=SEED))
    if rob is None:
        return
    res.robustness = rob
    for line in robustness_summary_lines(rob):
        print("   ", line)
    row.notes = (f"clean accuracy {rob['clean_accuracy']:.4f} on {rob['n']}; mean perturbed accuracy "
                 f"{rob['mean_perturbed_accuracy']:.4f}" if rob.get("mean_perturbed_accuracy") is not None else "")
    secs = rob.get("seconds") or {}
    shown = 0.0
    for key, label in (("corruptions", "corruptions (25 passes)"), ("adversarial", "adversarial FGSM + PGD"),
                       ("text", "text perturbations (16 passes)")):
        if secs.get(key):
            bench.sub(ds, f"↳ {label}", "seconds reported by `robustness_report`", float(secs[key]))
            shown += float(secs[key])
    if row.seconds is not None:
        bench.sub(ds, "↳ rest", "sampling, decoding + resizing once, clean pass" if image else
                  "sampling, clean pass", row.seconds - shown)


def explanation_parts(bench: Bench, ds: str, clf: Any, ex: Any, plan: Plan, res: Result) -> list[dict[str, Any]]:
    from fmadapt.evaluate.explain import explain_sample

    first_import(bench, ds, "captum.attr", "explanations")
    kept: list[dict[str, Any]] = []
    for method in ("ig", "saliency"):
        what = (f"`explain_sample(n_right={plan.n_right}, n_wrong={plan.n_wrong}, method=\"{method}\""
                + (f", n_steps={plan.ig_steps}" if method == "ig" else "") + ")`")
        row, items = bench.timed(ds, f"explanations ({method})", what,
                                 lambda m=method: explain_sample(clf, ex, n_right=plan.n_right,
                                                                 n_wrong=plan.n_wrong, method=m, seed=SEED,
                                                                 n_steps=plan.ig_steps))
        if items is None:
            continue
        used = sorted({str(i.get("method")) for i in items})
        errors = [i for i in items if i.get("error")]
        per = [float(i["seconds"]) for i in items if i.get("seconds") is not None]
        row.notes = (f"{len(items)} item(s) ({sum(1 for i in items if i.get('correct') is False)} wrong)"
                     + (f", {sum(per) / len(per):.2f} s per item" if per else "")
                     + (f"; method actually used: {', '.join(used)}" if used != [method] else "")
                     + (f"; {len(errors)} item(s) failed: {errors[0]['error']}" if errors else ""))
        res.extra[f"explanations_{method}"] = [{k: v for k, v in i.items() if not k.endswith("_png")}
                                               for i in items]
        if method == "ig":
            kept = items
    return kept


def fairness_part(bench: Bench, ds: str, clf: Any, ex: Any, groups: list[str], grouping: str,
                  res: Result) -> dict[str, Any] | None:
    try:
        first_import(bench, ds, "fmadapt.evaluate.fairness", "fairness: imports fairlearn")
        from fmadapt.evaluate.fairness import fairness_report
    except ImportError as e:
        tp.log(f"{TITLES[ds]} | fairness: skipped ({e})")
        bench.parts.append(Part(ds, "fairness", grouping, None, f"skipped: fmadapt.evaluate.fairness not "
                                                                f"importable ({e})"))
        return None
    pred = clf._proba(ex).argmax(1)  # cached features: not part of the fairness time
    y_true, y_pred = list(ex.labels), [clf.classes_[int(i)] for i in pred]
    row, fair = bench.timed(ds, "fairness", f"`fairness_report` over {len(set(groups))} groups: {grouping}",
                            lambda: fairness_report(y_true, y_pred, groups, list(clf.classes_),
                                                    group_col="synthetic"))
    if fair is not None:
        g = fair["groups"]
        row.notes = ("SYNTHETIC grouping, only to time the call: "
                     + ", ".join(f"{k} n={v['n']} acc {v['accuracy']:.3f}" for k, v in g.items())
                     + f"; DP diff {fair['demographic_parity_difference']:.3f}")
        res.extra["fairness"] = fair
    return fair


def report_part(bench: Bench, ds: str, clf: Any, metrics: dict[str, Any] | None, res: Result,
                fair: dict[str, Any] | None, explanations: list[dict[str, Any]], cmd: str) -> None:
    first_import(bench, ds, "fmadapt.report", "report: jinja2; matplotlib unless explanations loaded it")
    from fmadapt.report import environment_info, render_report

    data = {"title": f"fmadapt evaluation benchmark: {TITLES[ds]}",
            "model": {"dir": "(in memory, not saved)", "task": clf.task, "backbone": clf.config_.backbone,
                      "strategy": clf.strategy, "classes": list(clf.classes_), "config": clf.config_.to_dict()},
            "data": clf.data_summary_, "history": clf.history_,
            "metrics": {"test": metrics} if metrics else {}, "calibration": clf.calibration_,
            "explanations": explanations, "environment": environment_info(seed=SEED, command=cmd)}
    if res.robustness:
        data["robustness"] = res.robustness
    if fair:
        data["fairness"] = fair
    row, html = bench.timed(ds, "report rendering", "`render_report` (figures + HTML) of the parts above",
                            lambda: render_report(data))
    if html is not None:
        row.notes = (f"{len(html) / 1024:.0f} KiB HTML, {html.count('<img ')} embedded images; sections: "
                     + ", ".join(k for k in ("metrics", "calibration", "robustness", "fairness", "explanations")
                                 if data.get(k)))


def evaluate_all(bench: Bench, plan: Plan, ds: str, clf: Any, fit: Callable[[], Any], test: Any,
                 groups_of: Callable[[Any], tuple[list[str], str]], max_examples: int, cmd: str) -> None:
    res = bench.results[ds]
    row, _ = bench.timed(ds, "fit (probe) — baseline", "`fit()`, defaults (includes fitting T on validation)", fit)
    if row.error:
        return
    res.fit_s = row.seconds
    sizes = clf.data_summary_.get("sizes", {})
    h = clf.history_ or {}
    row.notes = (f"C={h.get('C')} ({h.get('selection', 'chosen on val')}); fit on {sizes.get('train')} + val "
                 f"{sizes.get('val')}; T = {clf.temperature_:.3f}")
    row, metrics = bench.timed(ds, "test evaluation", "`evaluate(test)`", lambda: clf.evaluate(test))
    ex = None
    if metrics is not None:
        res.accuracy, res.n_test = float(metrics["accuracy"]), int(metrics["n"])
        row.notes = f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, n {metrics['n']}"
    try:
        ex = clf._labeled_for_eval(test)
        res.calibration = calibration_on_test(clf, ex, None if metrics is None else float(metrics["ece"]))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        bench.failures.append(f"{TITLES[ds]} / test calibration: {type(e).__name__}: {e}")
    calibration_parts(bench, ds, clf)
    if ex is None:
        return
    robustness_part(bench, ds, clf, ex, res, max_examples, plan.max_adversarial)
    explanations = explanation_parts(bench, ds, clf, ex, plan, res)
    fair = None
    try:
        groups, grouping = groups_of(ex)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        bench.failures.append(f"{TITLES[ds]} / fairness groups: {type(e).__name__}: {e}")
    else:
        fair = fairness_part(bench, ds, clf, ex, groups, grouping, res)
    report_part(bench, ds, clf, metrics, res, fair, explanations, cmd)


# ----------------------------------------------------------------------------------------------
# datasets (preparation is not timed)
# ----------------------------------------------------------------------------------------------
def length_groups(ex: Any) -> tuple[list[str], str]:
    import numpy as np

    words = [len(t.split()) for t in ex.inputs]
    k = int(np.median(words))
    return ([f"short (<= {k} words)" if w <= k else f"long (> {k} words)" for w in words],
            f"sentence length vs the median ({k} words)")


def orientation_groups(ex: Any) -> tuple[list[str], str]:
    from PIL import Image

    out = []
    for p in ex.inputs:
        with Image.open(p) as im:  # header only
            w, h = im.size
        out.append("landscape" if w > h else "portrait" if h > w else "square")
    return out, "photo orientation (landscape / portrait / square)"


def dataset_sst2(bench: Bench, plan: Plan, data: Path, cmd: str) -> None:
    from fmadapt import TextClassifier

    pool, test = st.read_sst2(data)
    train, test = st.stratified(pool, plan.sst2_train), st.stratified(test, plan.sst2_test)
    res = bench.results["sst2"] = Result("sst2", f"train {len(train):,} (stratified, seed 0) / test {len(test):,}")
    tp.log(f"SST-2: {res.regime}")
    clf = TextClassifier(text_col="text", label_col="label", strategy="probe", seed=SEED, progress=False)
    evaluate_all(bench, plan, "sst2", clf, lambda: clf.fit(train), test, length_groups, plan.text_max, cmd)


def dataset_hymenoptera(bench: Bench, plan: Plan, data: Path, cmd: str) -> None:
    from fmadapt import ImageClassifier

    root = bench.tmp / "hym"
    sizes = tp.link_hymenoptera(data, root, plan.hym_per_class)
    res = bench.results["hymenoptera"] = Result("hymenoptera", f"train {sizes['train']} / test {sizes['val']} "
                                                               "(= val split), 224 px")
    tp.log(f"hymenoptera: {res.regime}")
    clf = ImageClassifier(strategy="probe", seed=SEED, progress=False)
    evaluate_all(bench, plan, "hymenoptera", clf, lambda: clf.fit(str(root / "train")), str(root / "val"),
                 orientation_groups, plan.image_max, cmd)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def f4(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}"


def calibration_table(bench: Bench) -> str:
    rows = []
    for ds, r in bench.results.items():
        c = r.calibration
        if not c:
            rows.append([TITLES[ds], "—", "—", *(["—"] * 6), "not measured (see failures)"])
            continue
        b, a = c["before"], c["after"]
        checks = []
        if not c["apply_matches"]:
            checks.append("**predict's T != apply_temperature by hand**")
        if c["evaluate_ece_matches"] is False:
            checks.append("**evaluate()'s ece differs from the calibrated test ECE**")
        if c["accuracy_before"] != c["accuracy_after"]:
            checks.append("**accuracy changed with T**")
        v = c["val"]
        vb, va = v.get("before") or {}, v.get("after") or {}
        val = (f"validation (in-sample, n {v.get('n')}): ECE {f4(vb.get('ece'))} → {f4(va.get('ece'))}"
               if vb and v.get("fitted") else f"validation: {v.get('note')}")
        rows.append([TITLES[ds], f"{c['temperature']:.3f}", f"{c['n']:,}", f4(b["ece"]), f4(a["ece"]),
                     f4(b["brier"]), f4(a["brier"]), f4(b["nll"]), f4(a["nll"]),
                     "; ".join([val, f"test accuracy {c['accuracy_after']:.4f} both ways", *checks])])
    header = ["dataset", "T (fit on val)", "test n", "ECE before", "ECE after", "Brier before", "Brier after",
              "NLL before", "NLL after", "notes"]
    return tp.md_table(header, rows, "---|---:|---:|---:|---:|---:|---:|---:|---:|---")


def curve_table(title: str, rows: dict[str, dict[str, float]], clean: float, col: Callable[[str], str],
                params: dict[str, str] | None = None) -> list[str]:
    if not rows:
        return []
    cols = list(next(iter(rows.values())))
    header = [title, "clean", *[col(c) for c in cols]] + (["parameter"] if params else [])
    out = [[name, f"{clean:.3f}", *[f"{accs.get(c, float('nan')):.3f}" for c in cols]]
           + ([params.get(name, "")] if params else []) for name, accs in rows.items()]
    align = "---|" + "|".join("---:" for _ in range(len(cols) + 1)) + ("|---" if params else "")
    return [tp.md_table(header, out, align), ""]


def robustness_section(r: Result) -> list[str]:
    rob = r.robustness
    if not rob:
        return ["Not measured (see failures).", ""]
    out = [f"Budget: {r.robustness_budget} (stratified, seed 0). Clean accuracy on the same {rob['n']}: "
           f"{rob['clean_accuracy']:.4f}.", ""]
    if rob.get("corruptions"):
        cs = rob["params"]["corruptions"]
        params = {k: f"{v['param']}: {', '.join(f'{x:g}' for x in v['values'])}" for k, v in cs.items()}
        out += ["Accuracy per corruption severity (ImageNet-C parameters at the model's 224 px scale):", ""]
        out += curve_table("corruption", rob["corruptions"], rob["clean_accuracy"], lambda c: f"sev {c}", params)
    adv = rob.get("adversarial") or {}
    if adv.get("fgsm"):
        eps = [f"{e:g}/255" for e in adv["eps_255"]]
        rows = {k: dict(zip(eps, adv[k].values(), strict=False)) for k in ("fgsm", "pgd")}
        out += [f"Accuracy under L-inf attacks on {adv['n']} images ({adv['note']}; PGD {adv['steps']} steps, "
                "step 2.5 eps / steps, seeded random start). eps in pixel units of a 0-255 image:", ""]
        out += curve_table("attack", rows, adv["clean_accuracy"], lambda c: f"ε {c}")
    if rob.get("text"):
        out += ["Accuracy per perturbation rate (share of words perturbed; seeded):", ""]
        out += curve_table("perturbation", rob["text"], rob["clean_accuracy"], lambda c: f"rate {c}")
    if rob.get("skipped"):
        out += [f"{len(rob['skipped'])} input(s) skipped while decoding.", ""]
    return out


def time_table(bench: Bench, ds: str) -> list[str]:
    fit_s = bench.results[ds].fit_s
    rows, total = [], 0.0
    for p in (p for p in bench.parts if p.dataset == ds):
        if p.error:
            rows.append([p.part, p.what, "FAILED", "—", p.error])
            continue
        if p.seconds is None:
            rows.append([p.part, p.what, "—", "—", p.notes])
            continue
        ratio = f"{p.seconds / fit_s:.2f}" if fit_s else "—"
        rows.append([p.part, p.what, f"{p.seconds:.2f}", ratio, p.notes])
        if not p.breakdown and not p.part.startswith("fit"):
            total += p.seconds
    if fit_s:
        rows.append(["**all evaluation parts**", "sum of the non-breakdown rows below the fit", f"**{total:.1f}**",
                     f"**{total / fit_s:.2f}**", ""])
    header = ["part", "what", "seconds", "× probe fit", "notes"]
    return [tp.md_table(header, rows, "---|---|---:|---:|---"), ""]


CSV_FIELDS = ["dataset", "regime", "method", "options", "seconds", "x_fit", "accuracy", "n_test", "temperature",
              "ece_before", "ece_after", "brier_before", "brier_after", "nll_before", "nll_after", "clean_accuracy",
              "mean_perturbed_accuracy", "peak_mib", "error"]


def part_method(part: str) -> str:
    """A part's method name in the CSV: "probe_fit" for the fit (the baseline), else its name as an identifier
    ("↳ corruptions (25 passes)" -> "corruptions_25_passes")."""
    if part.startswith("fit"):
        return "probe_fit"
    name = re.sub(r"[^a-z0-9]+", "_", part.replace("↳", "").lower()).strip("_")
    return "robustness_rest" if name == "rest" else name  # (the one "↳ rest" row is robustness's)


def csv_rows(bench: Bench) -> list[dict[str, Any]]:
    """The time tables as rows of benchmarks/results/evaluation.csv."""
    out = []
    for p in bench.parts:
        res = bench.results.get(p.dataset)
        fit_s = res.fit_s if res else None
        row: dict[str, Any] = {
            "dataset": p.dataset, "regime": res.regime if res else "", "method": part_method(p.part),
            "options": options_json({"what": p.what, **({"breakdown": True} if p.breakdown else {})}),
            "seconds": round(p.seconds, 3) if p.seconds is not None else "",
            "x_fit": round(p.seconds / fit_s, 3) if p.seconds is not None and fit_s else "",
            "peak_mib": p.peak_mib if p.peak_mib is not None else "", "error": p.error or ""}
        if res and p.part == "test evaluation" and res.accuracy is not None:
            row |= {"accuracy": round(res.accuracy, 4), "n_test": res.n_test}
            c = res.calibration
            if c:
                row["temperature"] = round(c["temperature"], 4)
                for m in ("ece", "brier", "nll"):
                    row[f"{m}_before"], row[f"{m}_after"] = round(c["before"][m], 4), round(c["after"][m], 4)
        if res and p.part == "robustness" and res.robustness:
            rob = res.robustness
            row["clean_accuracy"] = round(rob["clean_accuracy"], 4)
            if rob.get("mean_perturbed_accuracy") is not None:
                row["mean_perturbed_accuracy"] = round(rob["mean_perturbed_accuracy"], 4)
        out.append(row)
    return out


def render(bench: Bench, plan: Plan, cmd: str, started: str, total_s: float, mach: dict[str, str],
           loads: tuple[str, str], threads: int) -> str:
    out = ["# Evaluation: calibration, robustness curves and what each evaluation part costs", ""]
    if plan.quick:
        out += ["**QUICK SMOKE RUN (tiny N): numbers are not meaningful.**", ""]
    out += [
        f"- Command: `{cmd}` (from the repository root)",
        f"- Date: {started}; total runtime {total_s / 60:.1f} min, one run, every number below from it",
        "- Dataset wall times: " + (", ".join(f"{TITLES[k]} {v / 60:.1f} min" for k, v in bench.dataset_s.items())
                                    or "none"),
        f"- Machine: nproc = {mach['nproc']} ({mach['cpu']}), no GPU; `torch.set_num_threads({threads})`",
        f"- Versions: torch {mach['torch']}, onnxruntime {mach['onnxruntime']}, timm {mach['timm']}, transformers "
        f"{mach['transformers']}, python {mach['python']}; fmadapt {mach['fmadapt']} @ {mach['commit']} "
        "(HEAD when the run started)",
        f"- Load average (1/5/15 min) at start {loads[0]}, at end {loads[1]} (shared machine: timings are noisy)",
        "",
        "Each dataset: one probe `fit` (seed 0, defaults: the baseline every part is compared with), then each "
        "evaluation part timed on its own, in the order of the time table. *× probe fit* = part seconds / fit "
        "seconds of the same dataset in this run. `fit()` already includes fitting the temperature on the "
        "validation split (20 % of the training data, stratified, seed 0). Rows marked ↳ split the row above "
        "(the library's own per-part seconds) and are not added to the totals. `$FMADAPT_CACHE` is a fresh "
        "temp dir per dataset: the fit pays feature extraction and the ONNX export; `evaluate(test)` pays the "
        "test features; later parts reuse them where they predict clean inputs (explanations pick their "
        "sample from cached predictions; robustness switches the cache off).",
        "",
        "Data (../shared/data): SST-2 training subset from train.tsv deduplicated, test = the labeled test.tsv; "
        "hymenoptera train/ for training and val/ as the test set.",
        "",
    ]
    if bench.failures:
        out += ["## Failures", ""] + [f"- {f}" for f in bench.failures] + [""]
    out += ["## 1. Calibration on the test split: before / after temperature scaling", "",
            "T is fitted by `fit()` on the validation predictions (honest ones: the probe keeps its predictions "
            "from before it refits the head on train + val); *before* = the same test predictions with T = 1. "
            "Temperature scaling never changes the predicted class. ECE: 15 equal-width bins, top label; Brier: "
            "multiclass (sum over classes); NLL: mean. The validation figures in the notes are those of "
            "`clf.calibration_`, measured on the predictions T was fitted on (in-sample, optimistic).", "",
            calibration_table(bench), ""]
    out += ["## 2. Robustness curves", ""]
    for ds, r in bench.results.items():
        out += [f"### {TITLES[ds]} ({r.regime})", "", *robustness_section(r)]
    out += ["## 3. Time each evaluation part adds", ""]
    for ds, r in bench.results.items():
        acc = f"; test accuracy {r.accuracy:.4f} on {r.n_test:,}" if r.accuracy is not None else ""
        out += [f"### {TITLES[ds]} ({r.regime}{acc})", "", *time_table(bench, ds)]
    out += ["Explanations run the eager PyTorch model (never ONNX), gradients on; images: Integrated Gradients "
            f"with a black baseline ({plan.ig_steps} steps, internal batch 16) or plain saliency; texts: Layer IG on "
            "the input embeddings (`method=\"saliency\"` on text falls back to it, as the notes say). Fairness rows "
            "use a made-up grouping to time the call; their numbers say nothing about fairness of the model.", ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny N: a smoke test (prints only)")
    ap.add_argument("--only", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)} (default: all)")
    ap.add_argument("--data", type=Path, default=tp.DEFAULT_DATA, help="data root (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown output (default: benchmarks/evaluation.md for a full run of both datasets; a "
                         "quick or partial run only prints unless --out is given)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON here")
    ap.add_argument("--threads", type=int, default=None,
                    help=f"torch.set_num_threads (default {THREADS}, as the committed table; 1 with --quick: on a "
                         "loaded 2-core machine 2 OpenMP threads can be many times slower than 1)")
    add_csv_argument(ap, "evaluation", quick=True)
    args = ap.parse_args(argv)
    chosen = st.parse_list(args.only, DATASETS, "dataset", ap)
    if not args.data.is_dir():
        print(f"benchmark data not found at {args.data} (expected ../shared/data next to the repo); skipping.")
        return 0
    out_path = args.out
    if out_path is None and not args.quick and chosen == list(DATASETS):
        out_path = HERE / "evaluation.md"

    cmd = "python benchmarks/evaluation.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    run_stamp = stamp()
    loads0 = tp.load_avg()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    if args.threads is None:
        args.threads = 1 if args.quick else THREADS
    torch.set_num_threads(args.threads)
    import fmadapt  # noqa: F401  (also quiets Lightning / transformers chatter)

    mach = tp.machine()  # at the start: the commit of the code this run loads
    plan = Plan(args.quick)
    needs = {"sst2": "sst2", "hymenoptera": "hymenoptera"}
    fns = {"sst2": dataset_sst2, "hymenoptera": dataset_hymenoptera}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmadapt-evaluation-") as tmpd:
        bench = Bench(Path(tmpd))
        for ds in chosen:
            if not (args.data / needs[ds]).is_dir():
                tp.log(f"{ds}: {args.data / needs[ds]} not found; skipping")
                continue
            tp.log(f"==== {ds} (load {tp.load_avg()})")
            bench.fresh_cache(ds)
            t0 = time.perf_counter()
            try:
                fns[ds](bench, plan, args.data, cmd)
            except Exception as e:  # noqa: BLE001 - data preparation failed; keep the other dataset
                traceback.print_exc()
                bench.failures.append(f"{ds}: {type(e).__name__}: {e}")
            bench.dataset_s[ds] = time.perf_counter() - t0
            tp.log(f"==== {ds} done in {bench.dataset_s[ds]:.0f} s")
        total = time.perf_counter() - t_start
        md = render(bench, plan, cmd, started, total, mach, (loads0, tp.load_avg()), args.threads)
    tp.write_outputs(md, total, out_path, args.json,
                     {"command": cmd, "started": started, "total_s": total, "dataset_s": bench.dataset_s,
                      "failures": bench.failures, "parts": [asdict(p) for p in bench.parts],
                      "results": {k: asdict(v) for k, v in bench.results.items()}})
    path = csv_path(args.csv, "evaluation", args.quick)
    if path is not None and bench.parts:
        append_rows(path, CSV_FIELDS, csv_rows(bench), run_stamp)
        print(f"appended {len(bench.parts)} rows to {path}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
