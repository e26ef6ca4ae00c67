"""`fmadapt export`: a fitted model as one ONNX graph that predicts without torch or fmadapt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import _JSON, _out, _run, app


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `fmadapt fit`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the export to.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (the only format for now).")] = "onnx",
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also write an int8 graph (the default one then), refused unless it predicts as fp32 on "
        ">= 98 % of the check inputs.")] = False,
    data: Annotated[str | None, typer.Option(
        "--data", help="Inputs to check the export on (as `predict` takes them). Default: the validation images "
        "the model lists, or built-in sample texts.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text column of --data.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write OUT: model.onnx (backbone, heads, ensemble, calibration in one graph), export.json, the tokenizer
    (texts) and predict.py (onnxruntime + numpy + tokenizers/Pillow, no torch). Checked against the model first:
    same predictions, probabilities within 1e-4; nothing is written otherwise."""

    def go() -> None:
        from ..errors import ConfigError

        if fmt != "onnx":
            raise ConfigError(f"--format {fmt}: only onnx is supported")
        from ..compress.export import export_model

        meta = export_model(model_dir, out, int8=int8, data=data, text_col=text)
        p = meta["parity"]
        if as_json:
            _out(json.dumps({"out": str(out.resolve()), "graphs": meta["graphs"], "parity": p}))
            return
        _out(f"exported {model_dir} to {out} ({', '.join(meta['graphs'].values())}); checked on {p['inputs']}: "
             f"fp32 graph within {p['fp32']['graph']['max_abs_diff']:.1e} of the model"
             + (f", int8 predicts as fp32 on {p['int8'].get('same_class', p['int8'].get('same_labels_at_0.5', 1)):.1%}"
                if "int8" in p else ""))
        _out(f"predict without torch: python {out / 'predict.py'} {out} INPUT...")

    _run(go)
