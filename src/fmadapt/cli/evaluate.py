"""The evaluation commands: `evaluate`, `explain` and `report` (registered on the app of cli/app.py)."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from .app import _JSON, _groups, _out, _override_columns, _run, app
from .output import _evaluation_lines


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `fmadapt fit`.")],
    data: Annotated[str, typer.Argument(help="Labeled data in the same form as for fit.")],
    text: Annotated[str | None, typer.Option("--text")] = None,
    label: Annotated[str | None, typer.Option("--label")] = None,
    robustness: Annotated[bool, typer.Option(
        "--robustness", help="Accuracy under corruptions (images: noise, blur, JPEG, brightness, contrast x 5 "
        "severities; FGSM/PGD over an eps grid) or text perturbations (typos, casing, punctuation, word drop).")
    ] = False,
    no_adversarial: Annotated[bool, typer.Option("--no-adversarial", help="Robustness without FGSM/PGD.")] = False,
    max_examples: Annotated[int, typer.Option("--max-examples", help="Robustness: examples used (stratified).")
                            ] = 500,
    max_adversarial: Annotated[int, typer.Option("--max-adversarial", help="Images attacked (eager PyTorch).")
                               ] = 200,
    group_col: Annotated[str | None, typer.Option(
        "--group-col", help="Fairness by group: a column of DATA (texts) or of --group-metadata (images).")] = None,
    group_metadata: Annotated[str | None, typer.Option(
        "--group-metadata", help="Images: CSV/JSONL mapping image paths to groups.")] = None,
    min_group_size: Annotated[int, typer.Option(
        "--min-group-size", help="Fairness: smaller groups are flagged and left out of worst-group.")] = 30,
    explain: Annotated[bool, typer.Option("--explain", help="Attributions for 4 right and 4 wrong examples.")
                       ] = False,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Where evaluation/ and report.html go (default: the model directory).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Metrics on DATA (accuracy, macro-F1, per class, confusion, calibration error); optionally robustness,
    fairness by group and explanations. All of it lands in report.html."""

    def go() -> None:
        from ..predictor import load_model

        loaded = load_model(model_dir)
        if hasattr(loaded, "targets_"):  # several targets: each evaluated as a model of its own
            from ..tasks.targets import target_dirs

            if label:
                raise ConfigError("--label names one label column; this model's targets read their own columns "
                                  f"({', '.join(loaded.target_names)}): evaluate one target's directory "
                                  f"({model_dir}/targets/<name>) to read another column")
            parts = list(zip(loaded.target_names, target_dirs(loaded.target_names), strict=True))
            todo = [(name, loaded.target(name), Path("targets") / d) for name, d in parts]
        else:
            todo = [(None, loaded, Path("."))]
        results = {}
        with loaded.shared_features() if hasattr(loaded, "targets_") else nullcontext():
            for name, clf, sub in todo:
                _override_columns(clf, text, label)
                results[name] = evaluate_one(clf, model_dir / sub, (report_dir / sub) if report_dir else None, sub)
        if hasattr(loaded, "targets_"):
            if as_json:
                _out(json.dumps({"targets": {n: r[0] for n, r in results.items()}}, ensure_ascii=False))
                return
            for n, (_, lines) in results.items():
                _out(f"== target {n!r} ==")
                for line in lines:
                    _out(line)
            return
        summary, lines = results[None]
        if as_json:
            _out(json.dumps(summary, ensure_ascii=False))
            return
        for line in lines:
            _out(line)

    def evaluate_one(clf: Any, model_dir: Path, report_dir: Path | None, sub: Path
                     ) -> tuple[dict[str, Any], list[str]]:
        """(the --json summary, the text lines) of one model's evaluation, saved with its report."""
        from ..evaluate.metrics import format_metrics
        from ..report.run import REPORT, run_evaluations, save_evaluations, write_run_report

        ex = clf.read_labeled(data)
        groups = _groups(clf, data, ex, group_col, group_metadata) if group_col or group_metadata else None
        evals = run_evaluations(clf, ex, robustness=robustness, explain=explain, groups=groups,
                                group_col=group_col, min_group_size=min_group_size,
                                robustness_budget={"max_examples": max_examples, "max_adversarial": max_adversarial,
                                                   "adversarial": not no_adversarial},
                                progress=sys.stderr.isatty())
        dest = report_dir or model_dir
        if report_dir:
            _copy_run(model_dir, report_dir)
        save_evaluations(dest, Path(data).name or "data", evals, data=str(data))
        path = write_run_report(dest, Path(dest) / REPORT)
        m = evals["metrics"]
        summary = {**m, **{k: evals[k] for k in ("robustness", "fairness") if k in evals},
                   "seconds": evals["seconds"], "report": str(path.resolve())}
        lines = [format_metrics(m, title=f"[{data}]")]
        if m.get("calibration"):
            c = m["calibration"]
            lines.append(f"calibration (temperature {c['temperature']:.3f}): ECE {c['before']['ece']:.4f} -> "
                         f"{c['after']['ece']:.4f}, Brier {c['before']['brier']:.4f} -> {c['after']['brier']:.4f}")
        if m["skipped"]:
            lines.append(f"skipped {len(m['skipped'])} input(s); --json lists them")
        lines += [f"warning: {w}" for w in ex.warnings]
        lines += _evaluation_lines(evals)
        lines.append(f"report: {path}")
        return summary, lines

    _run(go)


def _copy_run(model_dir: Path, dest: Path) -> None:
    """The JSON a report is made of (not the weights), so a report can live outside a read-only model dir."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.json", "labels.json", "run.json"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, dest / name)


@app.command()
def explain(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `fmadapt fit`.")],
    inputs: Annotated[str, typer.Argument(help="Images (folder or file) or a table of texts.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the overlays and explanations.json "
                                             "(default: <model dir>/explanations).")] = None,
    method: Annotated[str, typer.Option("--method", help="Images: ig (Integrated Gradients) | saliency (fast). "
                                        "Texts: always layer IG on the token embeddings.")] = "ig",
    limit: Annotated[int, typer.Option("--limit", help="Explain at most this many inputs.")] = 20,
    steps: Annotated[int, typer.Option("--steps", help="Integrated Gradients steps.")] = 32,
    text: Annotated[str | None, typer.Option("--text")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Attributions (Captum) for INPUTS: heatmap overlays for images, per-word scores for texts."""

    def go() -> None:
        from ..evaluate.explain import METHODS, explain_inputs, save_explanations
        from ..predictor import load_model

        if method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if limit < 1 or steps < 1:
            raise ConfigError("--limit and --steps must be >= 1")
        clf = load_model(model_dir)
        _override_columns(clf, text, None)
        ex = clf.read_inputs(inputs)
        items = explain_inputs(clf, ex, method=method, limit=limit, n_steps=steps)
        dest = out or model_dir / "explanations"
        files = save_explanations(items, dest)
        if as_json:
            _out(json.dumps({"out": str(dest.resolve()), "files": [str(f) for f in files],
                             "items": [{k: v for k, v in i.items() if not k.endswith("_png") and k != "heatmap"}
                                       for i in items]}, ensure_ascii=False))
            return
        for i in items:
            line = f"{i['id']}: {i['pred']}" + (f" ({i['confidence']:.2f})" if i["confidence"] is not None else "")
            if i.get("explained"):  # (multi-label: the label whose score the words explain)
                line += f" [{i['explained']}]"
            if i.get("tokens"):
                top = sorted(i["tokens"], key=lambda t: -abs(t[1]))[:5]
                line += "  " + ", ".join(f"{w} {s:+.2f}" for w, s in top)
            if i.get("error"):
                line += f"  error: {i['error']}"
            _out(line)
        if ex.skipped:
            _out(f"skipped {len(ex.skipped)} unreadable input(s)")
        _out(f"wrote {len(files)} file(s) to {dest}")

    _run(go)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A model directory written by `fmadapt fit`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default RUN_DIR/report.html)")
                      ] = None,
) -> None:
    """(Re)write the self-contained report.html from what RUN_DIR holds (no data or model run needed)."""

    def go() -> None:
        from ..multitarget import holds_targets, rewrite_reports
        from ..report.run import write_run_report

        if holds_targets(run_dir):  # several targets: each target's report, then the index linking them
            if output is not None:
                raise ConfigError("a model of several targets writes report.html into each target's directory and "
                                  "an index into RUN_DIR: leave out --output")
            _out(f"report: {rewrite_reports(run_dir)}")
            return
        _out(f"report: {write_run_report(run_dir, output)}")

    _run(go)
