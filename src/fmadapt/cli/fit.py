"""`fmadapt fit`: train on a folder of images or a table of texts, save the model directory, evaluate it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import GROUPS, FitConfig
from ..errors import ConfigError
from ..options import option_type, parse_assignments, read_config_file
from .app import _JSON, _groups, _is_global_zero, _modality, _out, _run, app
from .output import _print_evaluations, _print_fit, _summary
from .resume import COMMAND_FILE, drop_checkpoints, jsonable, resume_params

#: FitConfig options with a flag of their own here (--text, --label, --no-header) or set by the command (log_dir)
_OWN_FLAGS = frozenset({"text_col", "label_col", "header", "log_dir"})


@app.command()
def fit(
    data: Annotated[str | None, typer.Argument(
        help="Image folder, or a CSV/TSV/JSONL/Parquet table of texts (with --resume: optional).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model directory to write.")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue the interrupted fit whose --out was RUN_DIR, from its last checkpoint "
        "(end of an epoch, or where SIGTERM stopped it), with the data and options it was started with.")
    ] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Options from a YAML or JSON file: flat (lr: 1.0e-4), by group (optim: {lr: 1.0e-4}) or "
        "dotted (optim.lr: 1.0e-4). Flags override it, --set overrides both.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text column (tables).")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Label column (tables); with --task multilabel, several 0/1 columns named with commas "
        "(sports,politics,tech). Repeat it for several targets, each COLUMN or COLUMN:TASK (--label "
        "rating:regression --label recommended): one frozen backbone, a head per target, one model directory.")
    ] = None,
    val: Annotated[str | None, typer.Option("--val", help="Separate validation data.")] = None,
    unlabeled: Annotated[str | None, typer.Option(
        "--unlabeled", help="Unlabeled inputs (an image or sound folder, or a table of texts) for self-training: the "
        "model labels them, and a second model trains on the confident ones too (--pseudo-threshold, --pseudo-max); "
        "kept if better on validation. With --strategy auto: continued pretraining on them is tried within the "
        "budget, kept if better on validation.")] = None,
    pretrain: Annotated[bool, typer.Option(
        "--pretrain", help="First continue pretraining the backbone on --unlabeled (as `fmadapt pretrain`: texts "
        "masked-LM, adding unknown pieces as tokens when --extend-vocab is given; images SimCLR at --image-size), "
        "then fit on it; the unlabeled inputs serve pretraining only, not self-training. The backbone is written to "
        "OUT/pretrained-backbone (the model needs it there) and reused by a later fit with the same unlabeled "
        "inputs.")] = False,
    pretrain_budget: Annotated[str | None, typer.Option(
        "--pretrain-budget", help="With --pretrain: stop pretraining after this long (30m, 1h); default one epoch "
        "over the unlabeled inputs.")] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="The table has no header row.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any option as KEY=VALUE or GROUP.KEY=VALUE (e.g. --set optim.lr=1e-4 --set dropout=0.1; "
        "none/null unsets); repeatable.")] = None,
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
    as_json: Annotated[bool, _JSON] = False,
    **options: Any,
) -> None:
    """Train a classifier on DATA and write a model directory with metrics, a model card and report.html.
    Fine-tuning saves a checkpoint in OUT/checkpoints at the end of every epoch and on SIGTERM (exit code 143);
    `fmadapt fit --resume OUT` continues an interrupted run."""
    params = {**{k: v for k, v in locals().items() if k in _FIT_PARAMS}, **options}
    if resume is not None:
        saved = resume_params(resume, params, _FIT_PARAMS)
        if saved is not None:
            return fit(**saved, as_json=as_json)
    if data is None or out is None:
        raise typer.BadParameter("DATA and --out are required (or --resume RUN_DIR alone)")
    ckdir = out / "checkpoints"

    def go() -> None:
        from ..atomic import write_file
        from ..estimators import AudioClassifier, ImageClassifier, TextClassifier

        kind = _modality(data)
        if report not in ("full", "basic", "off"):
            raise ConfigError(f"--report must be full, basic or off, got {report!r}")
        if group_metadata and not group_col and kind == "text":
            raise ConfigError("--group-metadata is for image folders; for tables give --group-col COL")
        opts = read_config_file(config) if config is not None else {}
        opts.update({k: v for k, v in options.items() if v is not None})  # the flags given
        opts.update(parse_assignments(set_ or []))
        if group_col and kind == "text" and report != "off":  # a column the report needs: checked before training
            from ..data.tables import missing_column, read_table

            df, source = read_table(data, encoding=opts.get("encoding", "auto"), header=not no_header)
            if group_col not in [str(c) for c in df.columns]:
                raise missing_column(source, group_col, df, "--group-col")
        fit_unlabeled = unlabeled
        if pretrain or pretrain_budget:
            opts["backbone"] = str(_pretrained(out, kind, unlabeled, text, opts, pretrain_budget, as_json))
            fit_unlabeled = None  # (pretraining only: no self-training on the same texts)
        if opts.get("log_to") and not opts.get("log_dir"):
            opts["log_dir"] = str(out / "logs")
        if kind == "text":
            labels = list(label or [])
            if len(labels) > 1:
                opts["targets"] = ",".join(labels)
            opts.update({k: v for k, v in (("text_col", text), ("label_col", labels[0] if len(labels) == 1 else None))
                         if v is not None})
            if no_header:
                opts["header"] = False
            cls: Any = TextClassifier
        else:
            cls = AudioClassifier if kind == "audio" else ImageClassifier
            if Path(data).is_file():  # a table listing the files: --text names its path column, --label its labels
                opts.update({k: v for k, v in (("text_col", text), ("label_col", label[0] if label else None))
                             if v is not None})
                opts.update({"header": False} if no_header else {})
        t0 = time.perf_counter()
        clf = cls(backbone=opts.pop("backbone", None), strategy=opts.pop("strategy", FitConfig.strategy),
                  cache=not no_cache, **opts)
        from ..train.checkpoint import RunCheckpoints

        RunCheckpoints(ckdir, resume=resume is not None)  # refuses to overwrite an unfinished run's checkpoints
        if resume is None and _is_global_zero():
            ckdir.mkdir(parents=True, exist_ok=True)  # what --resume needs to start the same fit again
            record = {k: v for k, v in jsonable(params).items() if k not in ("resume", "as_json")}
            write_file(ckdir / COMMAND_FILE, json.dumps({"params": record, "cwd": os.getcwd()}))
        clf.fit(data, val=val, unlabeled=fit_unlabeled, checkpoint_dir=ckdir, resume=resume is not None,
                keep_checkpoints=True)
        seconds = time.perf_counter() - t0
        if not _is_global_zero():
            return  # under multi-process DDP only global rank 0 writes the model and prints
        clf.save_pretrained(out, command="fmadapt " + shlex.join(sys.argv[1:]), report=report != "off")
        drop_checkpoints(ckdir)  # the model directory is written: the checkpoints are no longer needed
        fitted = clf.check_fitted()
        if hasattr(fitted, "targets_"):  # several targets
            return _finish_targets(fitted, out, data, seconds, report, group_col, group_metadata, as_json)
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


def _finish_targets(fitted: Any, out: Path, data: str, seconds: float, report: str, group_col: str | None,
                    group_metadata: str | None, as_json: bool) -> None:
    """What `fit` evaluates and prints for a model of several targets: each target as a model of its own (its
    directory under OUT/targets/), then the model directory."""
    from ..tasks.targets import target_dirs

    evals: dict[str, Any] = {}
    if report == "full" or (report == "basic" and group_col):
        evals = fitted.evaluate_validation(
            out, robustness=report == "full", explain=report == "full", group_col=group_col,
            groups_of=(lambda p: _groups(p, data, p.splits_["val"], group_col, group_metadata))
            if group_col or group_metadata else None, progress=sys.stderr.isatty())
    dirs = dict(zip(fitted.target_names, target_dirs(fitted.target_names), strict=True))
    if as_json:
        summary = {"model_dir": str(out.resolve()), "task": fitted.task, "backbone": fitted.backbone_name,
                   "strategy": fitted.config_.strategy, "seconds": round(seconds, 1),
                   "report": str((out / "report.html").resolve()) if report != "off" else None,
                   "targets": {name: {**_summary(p, out / "targets" / dirs[name], seconds),
                                      "task": p.config_.task,
                                      "evaluation_seconds": (evals.get(name) or {}).get("seconds", {})}
                               for name, p in fitted.targets_.items()}}
        _out(json.dumps(summary, ensure_ascii=False))
        return
    _out(f"{len(fitted.targets_)} targets on one backbone ({fitted.backbone_name}: {fitted.backbone_note}), "
         f"{seconds:.1f}s in all")
    for name, p in fitted.targets_.items():
        _out(f"\n== target {name!r} ({p.config_.task}) ==")
        _print_fit(p, out / "targets" / dirs[name], seconds)
        _print_evaluations(evals.get(name) or {})
    _out(f"\nmodel directory (all targets): {out}")
    if report != "off":
        _out(f"report: {out / 'report.html'}")


def _option_parameter(f: dataclasses.Field) -> inspect.Parameter:
    """The `fit` flag of FitConfig field `f`: its help, choices and default from the field's metadata, in the
    --help panel of its group; None (not given) unless given, so --config and the defaults stay in force."""
    kind = option_type(f.name)
    flag = "--" + f.name.replace("_", "-")
    choices = f.metadata.get("choices")
    default = "unset" if f.default is None else str(f.default).lower() if kind is bool else f.default
    text = f.metadata["help"]
    among = f"one of {' | '.join(choices)}; " if choices else ""
    doc = f"{text[:1].upper()}{text[1:]} ({among}default: {default})"
    info = typer.Option(f"{flag}/--no-{flag[2:]}" if kind is bool else flag, help=doc, show_default=False,
                        rich_help_panel=GROUPS[f.metadata["group"]])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, info])


def _pretrained(out: Path, kind: str, unlabeled: str | None, text: str | None, opts: dict[str, Any],
                budget: str | None, as_json: bool) -> Path:
    """--pretrain: OUT/pretrained-backbone, continued on `unlabeled` from the backbone the options name (the
    modality's default otherwise); one already there from the same backbone, inputs and options is reused."""
    import shutil

    from ..estimators import ImageClassifier, TextClassifier
    from ..pretrain import fingerprint, pretrain, read_images, read_texts
    from ..pretrain.config import PretrainConfig

    if kind not in ("text", "image"):
        raise ConfigError(f"--pretrain continues text and image backbones ({kind}: not built)")
    if unlabeled is None:
        raise ConfigError("--pretrain continues pretraining on unlabeled inputs: give --unlabeled (texts: a .txt "
                          "file, one text per line, or a table; images: a folder)")
    source = str(opts.get("backbone") or (TextClassifier if kind == "text" else ImageClassifier).default_backbone)
    pc = PretrainConfig(extend_vocab=bool(opts.get("extend_vocab")), time_budget=budget,
                        image_size=opts.get("image_size")).resolved(kind)  # (checked first)
    target = out / "pretrained-backbone"
    done = target / "pretrain.json"
    if done.is_file():  # (the inputs are read here only to compare them with those it was pretrained on)
        rec = json.loads(done.read_text())
        inputs = read_texts(unlabeled, text)[0] if kind == "text" else read_images(unlabeled)[0]
        if rec.get("source_backbone", {}).get("name") == source and rec.get("options") == pc.to_dict() and \
                rec.get("data", {}).get("fingerprint") == fingerprint(inputs, kind):
            if not as_json:
                _out(f"pretrained backbone reused: {target} (same backbone, unlabeled inputs and options)")
            return target.resolve()
    if target.exists():
        shutil.rmtree(target)  # (ours: an earlier --pretrain of other texts or options)
    rec = pretrain(unlabeled, target, source, pc, text=text, progress=not as_json)  # (it records where U came from)
    if not as_json:
        r = rec["run"]
        _out(f"pretrained {source} on {rec['data']['inputs']} unlabeled {'texts' if kind == 'text' else 'images'}: "
             f"{r['steps']} steps in "
             f"{r['seconds']:.0f} s; {rec['guard'].get('verdict', '')}")
    return target.resolve()


def _generated_signature() -> inspect.Signature:
    """`fit`'s own parameters, then one flag per FitConfig option (before --json)."""
    own = [p for p in inspect.signature(fit, eval_str=True).parameters.values()
           if p.kind != inspect.Parameter.VAR_KEYWORD]
    generated = [_option_parameter(f) for f in dataclasses.fields(FitConfig)
                 if f.name != "extra" and f.name not in _OWN_FLAGS]
    return inspect.Signature([*own, *generated])


fit.__signature__ = _generated_signature()  # type: ignore[attr-defined]
fit.__annotations__.update({p.name: p.annotation for p in fit.__signature__.parameters.values()  # type: ignore
                            if p.kind == inspect.Parameter.KEYWORD_ONLY})
_FIT_PARAMS = frozenset(fit.__signature__.parameters)  # type: ignore[attr-defined]
