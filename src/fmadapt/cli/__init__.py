"""The `fmadapt` command: a thin layer over the Python API. Exit codes: 0 ok, 1 failure, 2 usage error.

One module per group of commands, each registering on the app of `app.py`: the order of the imports below
is the order of `fmadapt --help`."""

from __future__ import annotations

import sys

# isort: off
from . import fit  # noqa: F401  (fit first, then the evaluation, inference and information commands)
from . import federate  # noqa: F401
from . import pretrain  # noqa: F401
from . import evaluate, infer, ship, info  # noqa: F401
# isort: on
from .app import _out, app

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
