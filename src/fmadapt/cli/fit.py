"""`fmadapt fit`: train on a folder of images or a table of texts, save the model directory, evaluate it."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import FitConfig
from ..errors import ConfigError
from .app import _JSON, _groups, _is_global_zero, _modality, _out, _parse_set, _run, app
from .output import _print_evaluations, _print_fit, _summary
from .resume import COMMAND_FILE, drop_checkpoints, jsonable, resume_params

#: the names `--strategy` takes (written out: the registry imports torch, which `fmadapt --help` must not;
#: tests/test_cli.py checks them against it)
STRATEGY_NAMES = ("probe", "finetune", "progressive", "l2sp", "lora", "contrastive", "auto")


@app.command()
def fit(
    data: Annotated[str | None, typer.Argument(
        help="Image folder, or a CSV/TSV/JSONL/Parquet table of texts (with --resume: optional).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model directory to write.")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue the interrupted fit whose --out was RUN_DIR, from its last checkpoint "
        "(end of an epoch, or where SIGTERM stopped it), with the data and options it was started with.")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text column (tables).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column (tables).")] = None,
    val: Annotated[str | None, typer.Option("--val", help="Separate validation data.")] = None,
    unlabeled: Annotated[str | None, typer.Option(
        "--unlabeled", help="Unlabeled inputs (image folder, or a table of texts) for self-training: the model "
        "labels them, and a second model trains on the confident ones too (--set pseudo_threshold=0.9, "
        "pseudo_max=N); kept if better on validation.")] = None,
    backbone: Annotated[str | None, typer.Option("--backbone", help="See `fmadapt backbones`.")] = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help=" | ".join(STRATEGY_NAMES) + " (auto: the measured choice within --time-budget; "
        "see `fmadapt strategies`)")] = "probe",
    time_budget: Annotated[str, typer.Option(
        "--time-budget", help="--strategy auto: wall-clock budget, e.g. 10m, 90s, 1h.")] = "10m",
    epochs: Annotated[int, typer.Option("--epochs")] = FitConfig.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    lr: Annotated[float | None, typer.Option("--lr", help="Backbone learning rate (finetune).")] = None,
    unfreeze: Annotated[int, typer.Option("--unfreeze", help="Finetune only the top N layer groups.")] = -1,
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    augment: Annotated[bool | None, typer.Option(
        "--augment/--no-augment", help="Images, finetune: random crop/flip (default off).")] = FitConfig.augment,
    cache_activations: Annotated[str, typer.Option(
        "--cache-activations", help="Partial finetune: auto | on | off (frozen prefix computed once).")] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    accelerator: Annotated[str, typer.Option("--accelerator")] = "auto",
    devices: Annotated[str, typer.Option("--devices", help="Lightning devices: auto, 1, 2, ...")] = "auto",
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Lightning multi-node training.")] = 1,
    dist_strategy: Annotated[str, typer.Option("--dist-strategy", help="Lightning strategy: auto, ddp, fsdp, ...")
                             ] = "auto",
    encoding: Annotated[str, typer.Option(
        "--encoding", help="Text file encoding: auto (UTF-8, else detected, with a warning) or a codec name, "
        "e.g. latin-1, gb18030.")] = "auto",
    no_header: Annotated[bool, typer.Option("--no-header", help="The table has no header row.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    runtime: Annotated[str, typer.Option(
        "--runtime", help="Frozen features: auto (ONNX Runtime) | torch | int8 (opt-in, ~2x; images calibrated "
        "on your data)")] = "auto",
    optimizer: Annotated[str, typer.Option("--optimizer", help="Finetune: adamw | sgd (momentum 0.9, Nesterov)")
                         ] = "adamw",
    schedule: Annotated[str, typer.Option(
        "--schedule", help="cosine (warmup + cosine) | inverse_time (a0/(1+bt)) | onecycle | constant")] = "cosine",
    layer_decay: Annotated[float, typer.Option(
        "--layer-decay", help="Layer-wise LR decay: group k from the top trains at lr*d**k (1 = off).")] = 1.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = 0.0,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="Clip the gradient norm.")] = None,
    class_weight: Annotated[str, typer.Option(
        "--class-weight", help="auto (on imbalanced classes, weighted and unweighted heads compete on validation) "
        "| balanced | none")] = "auto",
    metric: Annotated[str, typer.Option(
        "--metric", help="What chooses on validation (the probe's C and class weighting, the fine-tuning "
        "epoch, auto's candidates): accuracy | "
        "balanced_accuracy | macro_f1; saved with the model.")] = "accuracy",
    ensemble: Annotated[int, typer.Option(
        "--ensemble", help="Train K models (seeds) per backbone and average their probabilities.")] = 1,
    ensemble_backbones: Annotated[str | None, typer.Option(
        "--ensemble-backbones", help="Comma list of backbones to ensemble (x --ensemble seeds).")] = None,
    extend_vocab: Annotated[bool, typer.Option(
        "--extend-vocab", help="Texts: add the tokens the tokenizer does not know (e.g. Chinese characters for "
        "MiniLM) and learn them (their embeddings at --set new_token_lr=..., default 20 x --lr); needs --strategy "
        "finetune. --set extend_vocab_ngram=2 also adds frequent 2-character CJK words.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other fit option as KEY=VALUE (e.g. --set dropout=0.1 --set decay_beta=0.001); "
        "repeatable.")] = None,
    report: Annotated[str, typer.Option(
        "--report", help="report.html in the model directory: full (adds robustness and explanations on the "
        "validation split, and fairness with --group-col) | basic (metrics, calibration, mistakes) | off")
    ] = "full",
    group_col: Annotated[str | None, typer.Option(
        "--group-col", help="Fairness by group: a column of the table (texts), or of --group-metadata (images).")
    ] = None,
    group_metadata: Annotated[str | None, typer.Option(
        "--group-metadata", help="Images: a CSV/JSONL mapping image paths (column path/file/filename/image) to "
        "groups.")] = None,
    log_to: Annotated[str | None, typer.Option(
        "--log-to", help="Track the run with a Lightning logger: tensorboard | mlflow | csv (in <out>/logs).")
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Train a classifier on DATA and write a model directory with metrics, a model card and report.html.
    Fine-tuning saves a checkpoint in OUT/checkpoints at the end of every epoch and on SIGTERM (exit code 143);
    `fmadapt fit --resume OUT` continues an interrupted run."""
    params = {k: v for k, v in locals().items() if k in _FIT_PARAMS}
    if resume is not None:
        saved = resume_params(resume, params, _FIT_PARAMS)
        if saved is not None:
            return fit(**saved, as_json=as_json)
    if data is None or out is None:
        raise typer.BadParameter("DATA and --out are required (or --resume RUN_DIR alone)")
    ckdir = out / "checkpoints"

    def go() -> None:
        from ..atomic import write_file
        from ..estimators import ImageClassifier, TextClassifier

        kind = _modality(data)
        opts: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, lr=lr, unfreeze=unfreeze,
                                    image_size=image_size, seed=seed, accelerator=accelerator,
                                    devices=devices, runtime=runtime, num_nodes=num_nodes,
                                    dist_strategy=dist_strategy, augment=augment,
                                    cache_activations=cache_activations, optimizer=optimizer,
                                    schedule=schedule, layer_decay=layer_decay, label_smoothing=label_smoothing,
                                    grad_clip=grad_clip, class_weight=class_weight, time_budget=time_budget,
                                    metric=metric)
        if extend_vocab:
            opts["extend_vocab"] = True
        if ensemble > 1 or ensemble_backbones:
            opts.update(ensemble=ensemble, ensemble_backbones=ensemble_backbones)
        if report not in ("full", "basic", "off"):
            raise ConfigError(f"--report must be full, basic or off, got {report!r}")
        if group_metadata and not group_col and kind == "text":
            raise ConfigError("--group-metadata is for image folders; for tables give --group-col COL")
        if log_to:
            opts.update(log_to=log_to, log_dir=str(out / "logs"))
        opts.update(_parse_set(set_ or []))
        if kind == "text":
            opts.update(text_col=text, label_col=label, encoding=encoding, header=not no_header)
            cls: Any = TextClassifier
        else:
            cls = ImageClassifier
        t0 = time.perf_counter()
        clf = cls(backbone=backbone, strategy=strategy, cache=not no_cache, **opts)
        from ..train.checkpoint import RunCheckpoints

        RunCheckpoints(ckdir, resume=resume is not None)  # refuses to overwrite an unfinished run's checkpoints
        if resume is None and _is_global_zero():
            ckdir.mkdir(parents=True, exist_ok=True)  # what --resume needs to start the same fit again
            record = {k: v for k, v in jsonable(params).items() if k not in ("resume", "as_json")}
            write_file(ckdir / COMMAND_FILE, json.dumps({"params": record, "cwd": os.getcwd()}))
        clf.fit(data, val=val, unlabeled=unlabeled, checkpoint_dir=ckdir, resume=resume is not None,
                keep_checkpoints=True)
        seconds = time.perf_counter() - t0
        if not _is_global_zero():
            return  # under multi-process DDP only global rank 0 writes the model and prints
        clf.save_pretrained(out, command="fmadapt " + shlex.join(sys.argv[1:]), report=report != "off")
        drop_checkpoints(ckdir)  # the model directory is written: the checkpoints are no longer needed
        evals: dict[str, Any] = {}
        if report == "full" or (report == "basic" and group_col):
            groups = _groups(clf, data, clf.splits_["val"], group_col, group_metadata) if group_col or \
                group_metadata else None
            evals = clf.evaluate_validation(out, robustness=report == "full", explain=report == "full",
                                            groups=groups, group_col=group_col,
                                            progress=sys.stderr.isatty())
        summary = _summary(clf, out, seconds)
        summary["report"] = str((out / "report.html").resolve()) if report != "off" else None
        summary["evaluation_seconds"] = evals.get("seconds", {})
        if as_json:
            _out(json.dumps(summary, ensure_ascii=False))
        else:
            _print_fit(clf, out, seconds)
            _print_evaluations(evals)
            if report != "off":
                _out(f"report: {out / 'report.html'}")

    _run(go)


_FIT_PARAMS = frozenset(inspect.signature(fit).parameters)
