"""The `fmadapt` command: a thin layer over the Python API. Exit codes: 0 ok, 1 failure, 2 usage error."""

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

from .cli_resume import COMMAND_FILE, drop_checkpoints, jsonable, resume_params
from .config import FitConfig
from .errors import ConfigError, FmadaptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adapt a pretrained foundation model to your image or text classification task.")

_JSON = typer.Option("--json", help="Print one JSON summary object on stdout.")


def _out(msg: str = "", err: bool = False) -> None:
    typer.echo(msg, err=err)


def _modality(data: str) -> str:
    """Folders are image data; files are tables of texts."""
    return "image" if Path(data).is_dir() else "text"


def _summary(clf: Any, out: Path, seconds: float) -> dict[str, Any]:
    return {
        "model_dir": str(out.resolve()),
        "backbone": clf.model_.backbone.cfg.name,
        "strategy": clf.config_.strategy,
        "classes": clf.classes_,
        "metrics": {k: {m: v[m] for m in ("n", "accuracy", "macro_f1", "ece")} for k, v in clf.metrics_.items()},
        "data": {k: v for k, v in clf.data_summary_.items() if k != "class_counts"},
        "history": clf.history_,
        "seconds": round(seconds, 1),
        "resumed": getattr(clf, "resumed_", []),
    }


def _print_fit(clf: Any, out: Path, seconds: float) -> None:
    from .evaluate.metrics import format_metrics

    ds = clf.data_summary_
    sizes = ", ".join(f"{k} {v}" for k, v in ds["sizes"].items())
    strategy = clf.config_.strategy
    if (clf.history_ or {}).get("auto"):
        strategy = f"auto -> {clf.history_['auto']['winner']}"
    _out(f"backbone {clf.model_.backbone.cfg.name} | strategy {strategy} | {sizes} "
         f"| {len(clf.classes_)} classes | {seconds:.1f}s")
    for w in ds["warnings"]:
        _out(f"warning: {w}")
    auto = (clf.history_ or {}).get("auto")
    if auto:
        _out(f"strategy auto ({auto['seconds']:.0f} s of a {auto['budget_seconds']:.0f} s budget):")
        metric = {"accuracy": "val acc", "balanced_accuracy": "val bal", "macro_f1": "val f1"}[
            auto.get("metric", "accuracy")]
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


def _print_evaluations(evals: dict[str, Any]) -> None:
    if evals.get("robustness"):
        from .evaluate.robustness import robustness_summary_lines

        _out("\n" + "\n".join(robustness_summary_lines(evals["robustness"])))
    if evals.get("fairness"):
        from .evaluate.fairness import fairness_summary_lines

        _out("\n" + "\n".join(fairness_summary_lines(evals["fairness"])))
    if evals.get("explanations") is not None:
        items = evals["explanations"]
        _out(f"\nexplanations: {len(items)} examples ({sum(1 for i in items if i.get('correct') is False)} wrong)")
    if evals.get("seconds"):
        _out("evaluation seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in evals["seconds"].items()))


def _groups(clf: Any, data: str, ex: Any, group_col: str | None, metadata: str | None) -> list[str]:
    """One group per example of `ex`: from the table's column (texts) or the metadata file (images)."""
    from .evaluate.fairness import group_labels_from_metadata, group_labels_from_table

    if ex.modality == "image" or metadata:
        if not metadata:
            raise ConfigError("fairness on images needs --group-metadata FILE (a CSV/JSONL mapping image paths "
                              "to groups) and optionally --group-col to pick its column")
        return group_labels_from_metadata(metadata, ex, group_col)
    assert group_col
    return group_labels_from_table(data, group_col, ex, encoding=clf.config_.encoding, header=clf.config_.header)


def _is_global_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _run(fn: Any) -> None:
    """Map our errors to exit codes: data/runtime problems -> 1, option problems -> 2."""
    try:
        fn()
    except ConfigError as e:
        _out(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except FmadaptError as e:
        _out(f"error: {e}", err=True)
        raise typer.Exit(getattr(e, "exit_code", 1)) from None


def _parse_set(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE -> FitConfig fields, values coerced to the field's type."""
    import dataclasses

    from .config import FitConfig
    from .errors import ConfigError

    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "extra":
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                              f"{', '.join(sorted(k for k in fields if k != 'extra'))}")
        default = fields[key].default
        kind = type(default) if default is not None and default is not dataclasses.MISSING else None
        value: Any = raw
        try:
            if raw.lower() in ("none", "null") and default is None:
                value = None
            elif kind is bool or (kind is None and fields[key].type == "bool | None"):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1", "yes")
            elif kind in (int, float):
                value = kind(raw)
            elif kind is None and fields[key].type in ("float | None", "int | None"):
                value = float(raw) if "float" in str(fields[key].type) else int(raw)
        except ValueError:
            raise ConfigError(f"--set {item!r}: {raw!r} is not a valid {kind.__name__ if kind else 'value'} "
                              f"for {key}") from None
        out[key] = value
    return out


def _override_columns(clf: Any, text: str | None, label: str | None) -> None:
    if text:
        clf.config_.text_col = text
    if label:
        clf.config_.label_col = label


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
        "--strategy", help="probe | finetune | progressive | l2sp | lora | auto (measured choice within "
        "--time-budget; see `fmadapt strategies`)")] = "probe",
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
        from .atomic import write_file
        from .estimators import ImageClassifier, TextClassifier

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
        from .train.checkpoint import RunCheckpoints

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


from . import cli_eval  # noqa: E402,F401  (registers evaluate, explain, report here, after fit)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `fmadapt fit`.")],
    data: Annotated[str, typer.Argument(help="Images (folder or file) or a table of texts.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")],
    text: Annotated[str | None, typer.Option("--text")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write one row per input: id, `pred`, `prob_<class>` (and `error` for inputs that could not be read)."""

    def go() -> None:
        from .light_predict import predict_table as light_predict_table

        # a frozen-backbone text model whose graph ran once already: tokenizers + onnxruntime + numpy, no torch
        table = light_predict_table(model_dir, data, text)
        if table is None:
            from .estimators import load_model
            from .light_predict import remember_model

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

        from .embed import embed as run_embed

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


@app.command()
def backbones(as_json: Annotated[bool, _JSON] = False) -> None:
    """List the built-in backbones (timm:<arch>, hf:<hub id> and local directories also work)."""
    from .backbones import list_backbones

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
    from .adapt import describe_strategies

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
        from .demo import DEMO_IMAGE_SIZE, write_digits_folder
        from .estimators import ImageClassifier

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


def main() -> None:
    from ._quiet import quiet_libraries

    quiet_libraries()
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _out("interrupted", err=True)
        sys.exit(130)
