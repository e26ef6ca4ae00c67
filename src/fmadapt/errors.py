"""Errors users see. Each names what went wrong and what to do about it."""

from __future__ import annotations


class FmadaptError(Exception):
    """Base class: the CLI prints the message and exits with code 1."""


class DataError(FmadaptError):
    """The user's data cannot be used as given (bad column, too few classes, unreadable file...)."""


class ConfigError(FmadaptError):
    """An option or a combination of options is invalid (the CLI exits with code 2)."""


class NotFittedError(FmadaptError):
    """A model method was called before `fit` or `from_pretrained`."""


class ArtifactError(FmadaptError):
    """A saved model directory is missing files or holds malformed ones."""


class ExportError(FmadaptError):
    """A model cannot be exported as asked (a part the format cannot hold, a failed parity check)."""


class TrainingDiverged(FmadaptError):
    """Training produced no usable model: the loss or the gradients became NaN/Inf (the run stopped before any
    non-finite weight was saved), or no federated round could be aggregated (every update rejected or lost)."""


class TrainingInterrupted(FmadaptError):
    """SIGTERM or Ctrl-C: the run saved its state and stopped; `fmadapt fit --resume RUN_DIR` continues it."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process ended by it (Ctrl-C: 130)
