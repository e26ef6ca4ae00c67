"""Opt-in experiment tracking through Lightning's loggers (`--log-to tensorboard|mlflow|csv`). Never prompts:
MLflow writes to a local file store (`file:` URI) unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

LOGGERS = ("csv", "tensorboard", "mlflow")


def make_logger(log_to: str | None, log_dir: str | os.PathLike[str] | None, name: str = "fmadapt") -> Any:
    """A Lightning logger, or False (no logging) when `log_to` is None."""
    if not log_to:
        return False
    root = Path(log_dir or "fmadapt-logs")
    if log_to == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(str(root), name=name)
    if log_to == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(str(root), name=name)
        except (ImportError, ModuleNotFoundError) as e:
            raise ConfigError(f"--log-to tensorboard needs the tensorboard package ({e}): "
                              "pip install tensorboard") from None
    if log_to == "mlflow":
        try:
            from lightning.pytorch.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns").resolve().as_uri()
            return MLFlowLogger(experiment_name=name, tracking_uri=uri)
        except (ImportError, ModuleNotFoundError) as e:
            raise ConfigError(f"--log-to mlflow needs the mlflow package ({e}): pip install mlflow") from None
    raise ConfigError(f"log_to must be one of {', '.join(LOGGERS)}, got {log_to!r}")


def log_summary(logger: Any, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """Hyperparameters and final metrics (every strategy, including the probe, which has no training loop)."""
    if not logger:
        return
    logger.log_hyperparams({k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))})
    logger.log_metrics(metrics)
    logger.finalize("success")
    logger.save()
