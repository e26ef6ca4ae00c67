"""`fmadapt predict` and `fmadapt embed`: a saved model's predictions, a backbone's features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import _JSON, _out, _override_columns, _run, app


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(
        help="A model directory written by `fmadapt fit`, or an export written by `fmadapt export`.")],
    data: Annotated[str, typer.Argument(help="Images (folder or file) or a table of texts.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")],
    text: Annotated[str | None, typer.Option("--text")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write one row per input: id, `pred`, `prob_<class>` (and `error` for inputs that could not be read)."""

    def go() -> None:
        from ..light_predict import exported_table, is_export
        from ..light_predict import predict_table as light_predict_table

        # an export, or a frozen-backbone text model whose graph ran once already: onnxruntime + numpy, no torch
        table = exported_table(model_dir, data, text) if is_export(model_dir) else \
            light_predict_table(model_dir, data, text)
        if table is None:
            from ..light_predict import remember_model
            from ..predictor import load_model

            clf = load_model(model_dir)
            _override_columns(clf, text, None)
            table = clf.predict_table(data)
            remember_model(clf, model_dir)
        output.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(output, index=False)
        n_err = int(table["error"].notna().sum()) if "error" in table else 0
        if as_json:
            _out(json.dumps({"output": str(output.resolve()), "rows": len(table), "errors": n_err}))
        else:
            _out(f"wrote {len(table)} predictions to {output}" + (f" ({n_err} unreadable, see `error`)"
                                                                  if n_err else ""))

    _run(go)


@app.command()
def embed(
    data: Annotated[str, typer.Argument(help="Images (folder or file) or a table of texts.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Features file to write (.npy).")],
    backbone: Annotated[str | None, typer.Option("--backbone")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text column (tables).")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    encoding: Annotated[str, typer.Option(
        "--encoding", help="Text file encoding: auto (UTF-8, else detected, with a warning) or a codec name.")
    ] = "auto",
    no_header: Annotated[bool, typer.Option("--no-header")] = False,
    runtime: Annotated[str, typer.Option(
        "--runtime", help="auto (ONNX Runtime, checked against PyTorch) | torch | int8 (opt-in, ~2x; texts: embeddings "
        "at cosine ~0.99 to fp32)")] = "auto",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write one embedding row per input (same order) to OUTPUT, and OUTPUT's ids to <OUTPUT>.ids.csv."""

    def go() -> None:
        import numpy as np

        from ..embed import embed as run_embed

        feats, ids = run_embed(data, backbone, text_col=text, encoding=encoding, header=not no_header,
                               image_size=image_size, runtime=runtime)
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, feats, allow_pickle=False)
        ids_path = output.with_suffix(".ids.csv")
        ids.to_csv(ids_path, index=False)
        n_err = int(ids["error"].notna().sum())
        if as_json:
            _out(json.dumps({"output": str(output.resolve()), "ids": str(ids_path.resolve()),
                             "shape": list(feats.shape), "errors": n_err}))
        else:
            _out(f"wrote {feats.shape[0]} x {feats.shape[1]} features to {output} (ids: {ids_path})"
                 + (f"; {n_err} unreadable input(s) have NaN rows, see `error`" if n_err else ""))

    _run(go)
