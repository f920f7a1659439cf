"""`python -m src.evaluate ckpt_path=PATH [overrides]`: test a training checkpoint on any data."""

from __future__ import annotations

from src.errors import exit_on_signals

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line too
    exit_on_signals()

import gc
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from src.checkpoint import model_settings, read_checkpoint
from src.cli import finished
from src.errors import DataError
from src.io import write_text
from src.model.state import state_label
from src.reports.figures import confusion_matrix
from src.runtime.build import (
    build_datamodule,
    build_model,
    check_batches,
    checked_checkpoint,
    command_overrides,
    computes_population,
    data_config,
    entry_point,
    instantiate_group,
    read_data,
    save_resolved_config,
    tested_as_trained,
)
from src.runtime.threads import configure_threads

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint, write `metrics.json` in the run directory, and return the metrics."""
    ckpt, data = checked_evaluation(cfg)
    configure_threads(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # What this run actually used: the checkpoint's data, not the placeholder group.
    output_dir = save_resolved_config(cfg, data=data)

    datamodule = build_datamodule(data)
    # The training set only for population statistics the checkpoint does not hold.
    population = computes_population(ckpt, cfg.model.get("bn_stats"))
    read_data(datamodule, "test", test_only=not population)
    datamodule.check_labels(model_settings(ckpt, cfg.ckpt_path).get("num_classes"), trained=True)
    model = build_model(ckpt, Path(cfg.ckpt_path), cfg.model.get("bn_stats"), datamodule)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=instantiate_group(cfg.get("logger")) or False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # a few test batches: the bar would only add noise
        _convert_="all",  # as src.train: Lightning takes dicts, not configs
    )
    check_batches(trainer, datamodule, "test")
    metrics: dict[str, Any] = {}
    for results in trainer.test(model, datamodule=datamodule, verbose=False):
        metrics.update({k: float(v) for k, v in results.items()})
    confusion_matrix(trainer, model)
    for logger in trainer.loggers:  # the figure came after test's own finalize: written out now
        logger.finalize("success")
    metrics.update(
        ckpt_path=str(Path(cfg.ckpt_path).resolve()),
        bn_stats=model.bn_stats,
        num_test_images=len(datamodule.test_set),
    )
    log.info(
        "Test accuracy (%s): %.4f on %d images",
        state_label(model.bn_stats, bool(model.update_state)),
        metrics["test/acc"],
        metrics["num_test_images"],
    )
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    finished(log, output_dir)
    return metrics


def checked_evaluation(cfg: DictConfig) -> tuple[dict, DictConfig]:
    """The checkpoint, and the data it is tested on: the training run's, with the command line's
    `data.KEY` on top (`data_config`), checked as the run's data (`checked_checkpoint`). A data
    folder moved since the training run, say, costs one line and no run folder."""
    path = OmegaConf.select(cfg, "ckpt_path", default=None)
    if not isinstance(path, str) or not path.strip() or path.startswith("~"):
        return checked_checkpoint(cfg), cfg.data  # which words what is wrong with it
    ckpt = read_checkpoint(Path(path))
    tested_as_trained(cfg, ckpt)
    data = data_config(cfg, ckpt)
    if not computes_population(ckpt, cfg.model.get("bn_stats")):  # the test set alone is read
        with open_dict(data):
            data.pop("train_file", None)  # data=mat: a test file alone will do
    try:
        return checked_checkpoint(cfg, data), data
    except DataError as err:
        chosen = any(o.key_or_group.startswith("data") for o in command_overrides(cfg))
        if chosen or "no such" not in str(err):
            raise  # the command line chose the data, or where it is; or it is there
        raise DataError(
            f"{err}: the data ckpt_path was trained on is no longer there; say where it is "
            "now (+data.KEY=PATH) or test on other data (data=NAME ...)"
        ) from err


main, cli = entry_point(evaluate, "evaluate", check=checked_evaluation)


if __name__ == "__main__":
    gc.freeze()  # what the imports made lives as long as the process: no collection walks it
    cli()
