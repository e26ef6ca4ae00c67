"""`fmadapt pretrain`: continued self-supervised pretraining of a backbone on unlabeled data, written as a backbone
directory for `--backbone DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import _JSON, _out, _run, app


@app.command()
def pretrain(
    unlabeled: Annotated[str, typer.Argument(
        help="Unlabeled inputs. Texts: a .txt file (one text per line) or a CSV/TSV/JSONL/Parquet table; images: a "
        "folder (every image under it, any depth) or a table with a path column.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Backbone directory to write (new or empty).")],
    backbone: Annotated[str | None, typer.Option(
        "--backbone", help="The backbone to continue (name or directory); default: efficientnet_lite0 for a folder "
        "of images, minilm-l6 for texts (a table of image paths needs --backbone).")] = None,
    method: Annotated[str | None, typer.Option(
        "--method", help="Texts: mlm (masked-language modelling: what teaches new tokens their meaning; the default) "
        "| simcse (unsupervised SimCSE: sentence embeddings) | tsdae (denoising auto-encoder: sentence embeddings). "
        "Images: simclr (contrastive, two augmented views of each image; the default).")] = None,
    time_budget: Annotated[str | None, typer.Option(
        "--time-budget", help="Stop training after this long (30m, 90s, 1h); default: the epochs in full.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the unlabeled texts.")] = 1,
    extend_vocab: Annotated[bool, typer.Option(
        "--extend-vocab", help="First add the pieces the tokenizer does not know (e.g. CJK characters) as new tokens, "
        "to be learnt here.")] = False,
    text: Annotated[str | None, typer.Option("--text", help="Text column (tables).")] = None,
    labeled: Annotated[str | None, typer.Option(
        "--labeled", help="Labeled data for the before/after quick probe (a table of texts; images: a class folder "
        "or a table), else held-out unlabeled inputs' alignment and uniformity.")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column of --labeled.")] = None,
    labeled_text: Annotated[str | None, typer.Option("--labeled-text", help="Text column of --labeled.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other pretrain option as KEY=VALUE (batch_size, lr, max_inputs, warmup, temperature, "
        "seed; texts: max_tokens, mask_prob, extend_vocab_ngram, trainable; images: image_size, crop_scale; ...); "
        "repeatable.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Continue pretraining BACKBONE on unlabeled texts or images (self-supervised: no labels) and write it as a
    backbone directory that --backbone takes everywhere. A quick check before and after says whether it got
    better."""

    def go() -> None:
        from ..pretrain.config import PretrainConfig, assignments

        opts = {"method": method, "time_budget": time_budget, "epochs": epochs, "extend_vocab": extend_vocab,
                **assignments(set_ or [])}
        pc = PretrainConfig.from_dict(opts)  # checked before anything is read
        if labeled is None and (label or labeled_text):
            from ..errors import ConfigError

            raise ConfigError("--label/--labeled-text name columns of --labeled: give --labeled TABLE")
        from ..pretrain import pretrain as run

        record = run(unlabeled, out, backbone, pc, text=text, labeled=labeled, label=label,
                     labeled_text=labeled_text, progress=not as_json)
        if as_json:
            _out(json.dumps({"out": str(out), **{k: record[k] for k in ("method", "data", "vocabulary", "guard",
                                                                        "seconds")},
                             "run": {k: v for k, v in record["run"].items() if k != "curve"}}, ensure_ascii=False))
            return
        r, g = record["run"], record["guard"]
        what = "texts" if record["modality"] == "text" else "images"
        _out(f"{record['method']} on {record['data']['trained_on']} {what}: {r['steps']} steps "
             f"({r['epochs_done']} epochs{', stopped by the time budget' if r['stopped_by_time_budget'] else ''}) "
             f"in {r['seconds']:.0f} s; loss {r['loss_first']} -> {r['loss_last']}")
        if g.get("verdict"):
            _out(f"check ({g['on']}): {g['verdict']}")
        _out(f"backbone saved to {out}: use it with --backbone {out}")

    _run(go)
