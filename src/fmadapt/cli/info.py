"""`fmadapt backbones`, `fmadapt strategies` and `fmadapt demo`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .app import _JSON, _out, _run, app
from .output import _print_evaluations, _print_fit, _summary


@app.command()
def backbones(as_json: Annotated[bool, _JSON] = False) -> None:
    """List the built-in backbones (timm:<arch>, hf:<hub id> and local directories also work)."""
    from ..backbones import list_backbones

    entries = [{"name": e.name, "modality": e.modality, "description": e.description} for e in list_backbones()]
    if as_json:
        _out(json.dumps(entries))
        return
    for e in entries:
        _out(f"{e['name']:<20} {e['modality']:<6} {e['description']}")
    _out("\nAlso: timm:<architecture> and hf:<hub id> (online or cached), or a local checkpoint directory.")


@app.command()
def strategies(as_json: Annotated[bool, _JSON] = False) -> None:
    """List the adaptation strategies (`fit --strategy NAME`)."""
    from ..adapt import describe_strategies

    entries = describe_strategies()
    if as_json:
        _out(json.dumps(entries))
        return
    for e in entries:
        _out(f"{e['name']:<12} {e['description']}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")] = Path("fmadapt-demo"),
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Train and evaluate on scikit-learn's handwritten digits with the packaged EfficientNet-Lite0."""

    def go() -> None:
        from ..demo import DEMO_IMAGE_SIZE, write_digits_folder
        from ..estimators import ImageClassifier

        data = write_digits_folder(out / "data")
        if not as_json:
            _out(f"demo: 1,797 handwritten digits (scikit-learn) written to {data}; frozen EfficientNet-Lite0 "
                 f"features at {DEMO_IMAGE_SIZE} px + logistic regression")
        t0 = time.perf_counter()
        clf = ImageClassifier(backbone="efficientnet_lite0", strategy="probe", image_size=DEMO_IMAGE_SIZE)
        clf.fit(data)
        seconds = time.perf_counter() - t0
        model_dir = out / "model"
        clf.save_pretrained(model_dir, command="fmadapt demo")
        evals = clf.evaluate_validation(model_dir, progress=sys.stderr.isatty() and not as_json)
        if as_json:
            _out(json.dumps({**_summary(clf, model_dir, seconds), "report": str(model_dir / "report.html"),
                             "evaluation_seconds": evals["seconds"]}))
        else:
            _print_fit(clf, model_dir, seconds)
            _print_evaluations(evals)
            _out(f"report: {model_dir / 'report.html'}")
            _out(f"try: fmadapt predict {model_dir} {data}/3 -o preds.csv")

    _run(go)
