"""The `fmadapt` command: a thin layer over the Python API. Exit codes: 0 ok, 1 failure, 2 usage error.

One module per group of commands, each registering on the app of `app.py`; `fmadapt --help` lists them in
the order of ORDER."""

from __future__ import annotations

import sys

from . import evaluate, fit, infer, info  # noqa: F401  (they register the commands)
from .app import _out, app

ORDER = ("fit", "evaluate", "explain", "report", "predict", "embed", "backbones", "strategies", "demo")


def _rank(command: object) -> int:
    name = getattr(getattr(command, "callback", None), "__name__", "")
    return ORDER.index(name) if name in ORDER else len(ORDER)


app.registered_commands.sort(key=_rank)

__all__ = ["app", "main"]


def main() -> None:
    from .._quiet import quiet_libraries

    quiet_libraries()
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _out("interrupted", err=True)
        sys.exit(130)
