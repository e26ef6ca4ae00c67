"""The Typer app of the `fmadapt` command and what every command uses: output, exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError, FmadaptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adapt a pretrained foundation model to your image, text or sound classification task.")

_JSON = typer.Option("--json", help="Print one JSON summary object on stdout.")


def _out(msg: str = "", err: bool = False) -> None:
    typer.echo(msg, err=err)


def _modality(data: str) -> str:
    """Folders are image data, or audio data when most of their files are sound files; files are tables of
    texts, or of image or sound files when a column lists such files by path."""
    if not Path(data).is_dir():
        from ..data.filetable import table_modality

        return table_modality(data) or "text"
    from ..data.audio import mostly_audio

    return "audio" if mostly_audio(data) else "image"


def _groups(clf: Any, data: str, ex: Any, group_col: str | None, metadata: str | None) -> list[str]:
    """One group per example of `ex`: from the table's column (texts) or the metadata file (images)."""
    from ..evaluate.fairness import group_labels_from_metadata, group_labels_from_table

    if ex.modality in ("image", "audio") or metadata:
        if not metadata:
            raise ConfigError(f"fairness on {ex.modality} files needs --group-metadata FILE (a CSV/JSONL mapping "
                              "file paths to groups) and optionally --group-col to pick its column")
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


def _override_columns(clf: Any, text: str | None, label: str | None) -> None:
    for target in getattr(clf, "targets_", {}).values():  # several targets: each reads the text column
        _override_columns(target, text, label)
    if text:
        clf.config_.text_col = text
    if label:
        clf.config_.label_col = label
