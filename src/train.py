"""`python -m src.train [overrides]`: the source example's experiment, configured by Hydra."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from src.config_checks import ConfigError, check_config, preflight
from src.data.arrays import DataError

log = logging.getLogger(__name__)


class _DropAdverts(logging.Filter):
    """Lightning advertises a cloud logger at every start; with no network it is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())

# In-memory batches need no worker processes; Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 on torch 2.13 trips over a torch deprecation in its own pytree helper.
warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a `_target_` (callbacks, loggers)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test, write `metrics.json` in the run directory, and return the metrics."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step)
    if cfg.get("test"):
        for results in trainer.test(model, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in results.items()})
        log.info("Test accuracy: %.4f", metrics["test/acc"])

    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log.info("Outputs in %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """CLI entry point; returns the metric a Hydra sweeper optimises (`optimized_metric`)."""
    try:
        metrics = train(cfg)
    except (ConfigError, DataError) as err:
        # One line, no traceback: the message names the key, file or value at fault.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def cli() -> None:
    """Check the command line's config first, so mistakes cost one line and no run directory."""
    try:
        preflight(sys.argv[1:], CONFIG_DIR, "config")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
