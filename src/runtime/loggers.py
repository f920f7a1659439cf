"""What the loggers of conf/logger need: the run's name and tags from its `tags`, MLflow offline
and quiet, and hyperparameters every logger takes.

`setup_loggers()` runs before any logger is built (`src.cli.setup`): MLflow reads its settings from
the environment when it is first imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import OmegaConf

from src.config.schema import tag_list


class _DropExperimentCreated(logging.Filter):
    """Lightning's MLFlowLogger warns when it creates an experiment: expected on a first run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not found. Creating it" not in record.getMessage()


def run_name(tags: Iterable[str] | str | None, output_dir: str) -> str:
    """`<tag>-<tag>_<run folder name>`: dev_2025-01-31_12-00-00, or a sweep job's dev_3_lr=0.05."""
    folder = PurePath(str(output_dir)).name
    joined = "-".join(tag_list(tags))
    return f"{joined}_{folder}" if joined else folder


def tag_dict(tags: Iterable[str] | str | None) -> dict[str, str]:
    """The run's `tags` list as MLflow run tags: each label a tag whose value is "true"."""
    return {t: "true" for t in tag_list(tags)}


def setup_loggers() -> None:
    """MLflow offline and quiet, and the resolvers conf/logger uses (`${run_name:...}`,
    `${tag_dict:...}`); safe to call again."""
    # MLflow 3 sends usage telemetry to its servers unless told not to; a run here stays offline.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Its INFO lines (creating the database tables on the first run) are noise in a training log.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    mlflow_logger = logging.getLogger("lightning.pytorch.loggers.mlflow")
    if not any(isinstance(f, _DropExperimentCreated) for f in mlflow_logger.filters):
        mlflow_logger.addFilter(_DropExperimentCreated())
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("tag_dict", tag_dict, replace=True)


def log_hyperparams(
    logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int
) -> None:
    """The run's settings with the metrics they led to: TensorBoard's HParams tab takes both in
    one call (`metrics=`); every other logger gets the settings, then the metrics as values at
    `step`."""
    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(params, metrics=metrics or None)
        return
    logger.log_hyperparams(params)
    if metrics:
        logger.log_metrics(metrics, step=step)
