"""`fmadapt fit --resume RUN_DIR`: the command record a fit leaves in RUN_DIR/checkpoints, and the checks that
a resumed fit is the one that was interrupted."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer

COMMAND_FILE = "command.json"


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


_PATH_PARAMS = ("data", "val", "group_metadata", "backbone")


def resume_params(run: Path, given: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The options `fit --resume RUN` continues with: those RUN was started with (and its directory as --out,
    wherever it is now). None when the user repeated them all (DATA given) and they agree."""
    from ..artifact import read_json

    run = run.resolve()
    path = run / "checkpoints" / COMMAND_FILE
    if not path.is_file():
        raise typer.BadParameter(f"{run} holds no unfinished fit to resume ({path} is missing: the fit finished, "
                                 "or never started training). Start it again without --resume.")
    record = read_json(path)
    saved = record.get("params") if isinstance(record, dict) else None
    if not isinstance(saved, dict) or not set(saved) <= known:
        raise typer.BadParameter(f"{path}: not a command record written by fmadapt fit")
    saved = {k: v for k, v in saved.items() if k not in ("resume", "as_json", "out")}
    if given.get("data") is None:
        cwd = record.get("cwd")
        if isinstance(cwd, str) and os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths in the saved command are relative to where it was run
        return {**saved, "out": run, "resume": run}

    def norm(k: str, v: Any) -> Any:
        v = str(v) if isinstance(v, Path) else v
        return os.path.abspath(v) if k in _PATH_PARAMS and isinstance(v, str) and os.path.exists(v) else v

    diff = sorted(k for k in saved if norm(k, given.get(k)) != norm(k, saved[k]))
    if diff:
        raise typer.BadParameter(f"--resume {run}: the run was started with other {', '.join(diff)} "
                                 f"({', '.join(f'{k}={saved[k]!r}' for k in diff)}). Resume with "
                                 f"`fmadapt fit --resume {run}` alone to reuse them.")
    return None


def drop_checkpoints(ckdir: Path) -> None:
    from ..train.checkpoint import RunCheckpoints

    RunCheckpoints(ckdir, resume=True).remove()
    (ckdir / COMMAND_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        ckdir.rmdir()
