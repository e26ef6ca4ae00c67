"""Shipping a fitted model: `fmadapt export` (one ONNX graph that predicts without torch or fmadapt), `serve` (HTTP),
`distill` (a smaller student) and `compress` (the candidates measured side by side)."""

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


@app.command()
def serve(
    source: Annotated[Path, typer.Argument(help="An export (`fmadapt export`: starts fastest, no torch) or a model "
                                                "directory (`fmadapt fit`).")],
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs --token or "
                                                     "--insecure.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="FMADAPT_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /predict and /metadata "
        "(or $FMADAPT_TOKEN).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve a non-loopback address without a token.")
                        ] = False,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each loads the model).")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Inputs per request and per micro-batch.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", help="How long a batch waits for more requests (0: none; those that arrive while a "
        "batch runs form the next one).")] = 0.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body.")] = 16.0,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars")] = 10_000,
    max_image_pixels: Annotated[int, typer.Option("--max-image-pixels")] = 40_000_000,
    max_sound_seconds: Annotated[float, typer.Option("--max-sound-seconds", help="Longest sound clip.")] = 60.0,
) -> None:
    """Serve predictions over HTTP: POST /predict ({"texts": [...]}, {"images": [base64...]}, {"sounds":
    [base64...]} or multipart images or sounds), GET /health, GET /metadata, OpenAPI docs at /docs. Stops on Ctrl-C /
    SIGTERM after in-flight requests."""

    def go() -> None:
        from ..errors import ConfigError, FmadaptError
        from ..serve.app import ServeConfig, check_binding, run

        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as e:
            raise FmadaptError(f"serving needs FastAPI and uvicorn ({e}): pip install 'fmadapt[serve]'") from None

        why = check_binding(host, token, insecure)
        if why:
            raise ConfigError(why)
        if workers < 1 or max_batch < 1 or max_wait_ms < 0 or max_body_mb <= 0 or max_text_chars < 1 \
                or max_image_pixels < 1 or max_sound_seconds <= 0:
            raise ConfigError("--workers, --max-batch, --max-body-mb, --max-text-chars, --max-image-pixels and "
                              "--max-sound-seconds must be positive, --max-wait-ms at least 0")
        if not source.is_dir():
            raise ConfigError(f"{source}: no such directory (give an export or a model directory)")
        cfg = ServeConfig(str(source), token=token, max_body_bytes=int(max_body_mb * 2**20), max_batch=max_batch,
                          max_text_chars=max_text_chars, max_image_pixels=max_image_pixels, max_wait_ms=max_wait_ms,
                          max_sound_seconds=max_sound_seconds)
        _out(f"serving {source} on http://{host}:{port} (docs: /docs)" + ("" if token else ", no token"), err=True)
        run(cfg, host, port, workers, insecure)

    _run(go)


#: the student options `distill` and `compress` share
_StudentLayers = Annotated[int, typer.Option(
    "--student-layers", help="Texts: layers of the teacher's encoder the student keeps (evenly spaced).")]
_Student = Annotated[str | None, typer.Option(
    "--student", help="Another backbone as the student (a registered name, timm:<arch>, hf:<id>, a directory), "
    "with a new head; texts: `static` (or static:DIM[:HIDDEN], default 256:512) for static token vectors made from "
    "the teacher's encoder (Model2Vec's recipe), averaged, then a hidden layer (HIDDEN 0: none).")]
_StudentImageSize = Annotated[int | None, typer.Option(
    "--student-image-size", help="Images: the student's input size (default: 5/7 of the teacher's, 224 -> 160).")]
_StudentPrune = Annotated[float | None, typer.Option(
    "--student-prune", help="Instead of cutting layers, remove this share of every layer's attention heads and "
    "feed-forward neurons (texts) or of every convolution's channels (images: torch-pruning), then recover by "
    "distillation.")]


@app.command()
def distill(
    teacher: Annotated[Path, typer.Argument(help="A model directory (`fmadapt fit`): the teacher.")],
    data: Annotated[str, typer.Argument(help="Labeled data (as for `fit`); 20 % are held out.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The student's model directory.")],
    unlabeled: Annotated[str | None, typer.Option(
        "--unlabeled", help="More inputs (a table of texts, a folder of images) the student learns the teacher's soft "
        "targets on.")] = None,
    student_layers: _StudentLayers = 3,
    student: _Student = None,
    student_image_size: _StudentImageSize = None,
    student_prune: _StudentPrune = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Softening of the soft targets (T).")] = 2.0,
    alpha: Annotated[float, typer.Option(
        "--alpha", help="Weight of the soft-target loss; 1 - alpha goes to the labels.")] = 0.5,
    hidden_weight: Annotated[float | None, typer.Option(
        "--hidden-weight", help="Texts, layer and pruned students: weight of a loss that brings each student layer's "
        "hidden states to its teacher layer's (1 - cosine per token). Default: distill's DEFAULTS.")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 3,
    lr: Annotated[float | None, typer.Option("--lr", help="Default 1e-4 (a static student: 1e-3).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Train a smaller student on the teacher's soft targets (knowledge distillation) and save it as a model
    directory; prints the teacher's and the student's held-out accuracy and the measured speed-up."""

    def go() -> None:
        from ..compress.distill import distill as run
        from ..errors import ConfigError

        if not (0.0 <= alpha <= 1.0) or temperature <= 0 or epochs < 1 or (lr is not None and lr <= 0) \
                or batch_size < 1 or (hidden_weight is not None and hidden_weight < 0):
            raise ConfigError("--alpha must be in [0, 1]; --temperature, --epochs, --lr and --batch-size positive; "
                              "--hidden-weight at least 0")
        s = run(teacher, data, out, unlabeled=unlabeled, student_layers=student_layers, student=student,
                student_image_size=student_image_size, student_prune=student_prune, temperature=temperature,
                alpha=alpha, hidden_weight=hidden_weight, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        if as_json:
            _out(json.dumps({"out": str(out.resolve()), **s}))
            return
        t, st = s["teacher"], s["student"]
        what = ", ".join(f"{k} {v}" for k, v in st.items() if k in ("layers", "image_size", "backbone", "pruned"))
        _out(f"student ({what}) saved to {out}: held-out accuracy {st['accuracy']:.4f} against the teacher's "
             f"{t['accuracy']:.4f} ({s['validation']} inputs, agreement {s['agreement']:.1%}); {st['per_s']:.0f} "
             f"inputs/s against {t['per_s']:.0f} ({s['speedup']:.2f}x)")

    _run(go)


@app.command()
def compress(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (`fmadapt fit`).")],
    data: Annotated[str, typer.Argument(help="Labeled data; 20 % are held out to measure every candidate on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the candidates and the leaderboard.")],
    keep: Annotated[str | None, typer.Option(
        "--keep", help="best-under:latency=10ms (the most accurate with p50 <= 10 ms) or smallest-within:1pt "
        "(the smallest within 1 point of the model's accuracy): copied to OUT/kept.")] = None,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also int8 exports of the model and the student.")
                    ] = True,
    student_layers: _StudentLayers = 3,
    student: _Student = None,
    student_image_size: _StudentImageSize = None,
    student_prune: _StudentPrune = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Distillation epochs.")] = 3,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The model, its fp32 and int8 exports, a distilled student and its exports, measured side by side on the
    same held-out inputs (accuracy, MB, latency at batch 1, throughput at batch 64): OUT/leaderboard.md and .csv."""

    def go() -> None:
        from ..compress.leaderboard import compress as run
        from ..compress.leaderboard import parse_keep

        parse_keep(keep)  # (a bad --keep fails before any work)
        res = run(model_dir, data, out, keep=keep, int8=int8, student_layers=student_layers, student=student,
                  student_image_size=student_image_size, student_prune=student_prune, epochs=epochs)
        if as_json:
            _out(json.dumps({"out": str(out.resolve()), **res}, default=str))
            return
        _out((out / "leaderboard.md").read_text(encoding="utf-8"))

    _run(go)
