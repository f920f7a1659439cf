"""What the loggers of conf/logger need: the run's name and tags from its `tags`, MLflow offline
and quiet, and hyperparameters every logger takes.

`setup_loggers()` runs before any logger is built (`src.cli.setup`): MLflow reads its settings from
the environment when it is first imported.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.config.schema import tag_list
from src.errors import ConfigError, first_line


def _drop_experiment_created(record: logging.LogRecord) -> bool:
    """Lightning's MLFlowLogger warns when it creates an experiment: expected on a first run."""
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
    mlflow_logger.addFilter(_drop_experiment_created)  # added once: logging keeps no duplicate
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("tag_dict", tag_dict, replace=True)


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as flat `group.key` entries TensorBoard's HParams tab can show."""
    groups = ("data", "model", "optimizer", "scheduler", "trainer")
    chosen = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in groups if k in cfg}
    chosen["seed"] = cfg.get("seed")
    chosen["tags"] = ",".join(tag_list(cfg.get("tags")))  # tags=one: a list of one
    chosen.get("model", {}).pop("optimizer", None)  # the same values as the optimizer group
    chosen.get("model", {}).pop("scheduler", None)  # and as the scheduler group
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_") and key != "cache_dir":
                    walk(value, f"{prefix}{key}.")
        else:
            ok = isinstance(node, (bool, int, float, str))
            flat[prefix.rstrip(".")] = node if ok else str(node)

    walk(chosen, "")
    return flat


def log_hyperparameters(loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Once, at the end, with the real test accuracy (no placeholder hp_metric): the run's
    settings with the metrics they led to. TensorBoard's HParams tab takes both in one call
    (`metrics=`); every other logger gets the settings, then the metrics as values at the run's
    last step."""
    hp_metrics = {"hparams/test_acc": metrics["test/acc"]} if "test/acc" in metrics else {}
    if "train/loss" in metrics:
        hp_metrics["hparams/final_train_loss"] = metrics["train/loss"]
    for logger in loggers:
        params = hyperparameters(cfg)  # each logger its own: they may edit what they are given
        if isinstance(logger, TensorBoardLogger):
            step = int(metrics.get("global_step", 0))  # as every other logger's
            logger.log_hyperparams(params, metrics=hp_metrics or None, step=step)
            if rank_zero_only.rank == 0:  # written empty at the first epoch's end, and kept so:
                Path(logger.log_dir, logger.NAME_HPARAMS_FILE).unlink(missing_ok=True)  # anew
        else:
            logger.log_hyperparams(params)
            if hp_metrics:
                logger.log_metrics(hp_metrics, step=int(metrics.get("global_step", 0)))
        logger.finalize("success")


def prepare_mlflow_stores(configs: Iterable[Any]) -> None:
    """Create (and migrate) each MLflow SQLite store the configs log to, and its experiment, in
    this process, before a sweep launches jobs. Jobs running in parallel would otherwise each
    run MLflow's database migrations on the same new file at once, and all fail
    (`table _alembic_tmp_tags already exists`), or race to create the experiment."""
    done: set[tuple[str, str]] = set()
    for cfg in configs:
        for name, node in (OmegaConf.select(cfg, "logger", default=None) or {}).items():
            if not node or not str(node.get("_target_", "")).endswith("MLFlowLogger"):
                continue
            key = f"logger.{name}"
            try:
                uri = str(OmegaConf.select(cfg, f"{key}.tracking_uri"))
                experiment = str(OmegaConf.select(cfg, f"{key}.experiment_name"))
                artifacts = OmegaConf.select(cfg, f"{key}.artifact_location", default=None)
            except Exception as err:  # an unresolvable value: the job reports it itself
                logging.getLogger(__name__).debug("MLflow store not prepared: %s", err)
                continue
            if not uri.startswith("sqlite:") or (uri, experiment) in done:
                continue
            done.add((uri, experiment))
            _prepare_store(key, uri, experiment, None if artifacts is None else str(artifacts))


def _prepare_store(key: str, uri: str, experiment: str, artifacts: str | None) -> None:
    from mlflow.tracking import MlflowClient

    database = uri.removeprefix("sqlite:///")
    try:
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        with warnings.catch_warnings():  # its SQL store uses a loader SQLAlchemy 2.1 deprecates
            warnings.filterwarnings("ignore", ".*noload.*")
            if client.get_experiment_by_name(experiment) is None:  # opening it migrates it
                client.create_experiment(experiment, artifact_location=artifacts)
    except Exception as err:  # MLflow wraps SQLAlchemy's and the filesystem's errors alike
        reason = first_line(err)
        raise ConfigError(
            f"{key}.tracking_uri={uri}: cannot open the MLflow store ({reason})"
        ) from err


def continue_loggers(loggers: list[Logger], ckpt_path: Path, output_dir: Path, step: int) -> None:
    """Start each logger of a resumed run with the interrupted run's history before `step`, from
    the same folder of that run: TensorBoard's event files (its writer opens with `purge_step`,
    so the iterations logged after the checkpoint by the run that died appear once, from this
    one; the old run's hyperparameters are left out, this run logs its own) and CSV's rows
    (Lightning's CSV logger starts its file afresh). Another run's folder is left as it was;
    resumed into its own, its event files lose their hyperparameters."""
    old_run = ckpt_path.resolve().parent.parent
    for logger in loggers if rank_zero_only.rank == 0 else []:
        new = Path(str(logger.log_dir)) if logger.log_dir else None
        if new is None or not new.resolve().is_relative_to(output_dir.resolve()):
            continue  # a folder outside the run's own (MLflow's store: its own resume)
        old = old_run / new.resolve().relative_to(output_dir.resolve())
        if isinstance(logger, TensorBoardLogger) and old.is_dir():  # its own folder too
            new.mkdir(parents=True, exist_ok=True)
            for event_file in old.glob("events.out.tfevents.*"):
                _copy_events(event_file, new / event_file.name)
        elif isinstance(logger, CSVLogger) and (old / "metrics.csv").is_file():
            with open(old / "metrics.csv", newline="") as f:  # read before the logger empties it
                rows = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
            with warnings.catch_warnings():  # "will be deleted": these rows are kept
                warnings.filterwarnings("ignore", ".*Previous log files in this directory")
                logger.experiment.metrics[:0] = [r for r in rows if int(r["step"]) < step]


def _copy_events(source: Path, target: Path) -> None:
    """A TensorBoard event file, without its hyperparameter summaries (the HParams tab reads the
    first it finds in a folder: the interrupted run's settings and results)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    partial = target.with_name(f".{target.name}.tmp")  # then renamed: the source may be it
    with open(partial, "wb") as out:
        writer = RecordWriter(out)
        for record in RawEventFileLoader(str(source)).Load():
            tags = [v.tag for v in Event.FromString(record).summary.value]
            if not any(tag.startswith(("_hparams_/", "hparams/")) for tag in tags):
                writer.write(record)
    os.replace(partial, target)
