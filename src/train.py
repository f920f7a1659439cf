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
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from src.config_checks import ConfigError, check_config, one_line, preflight
from src.data.arrays import DataError
from src.model.state import BN_STATS_DESCRIPTIONS

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


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as flat `group.key` entries TensorBoard's HParams tab can show."""
    groups = ("data", "model", "optimizer", "trainer")
    chosen = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in groups if k in cfg}
    chosen["seed"] = cfg.get("seed")
    chosen.get("model", {}).pop("optimizer", None)  # the same values as the optimizer group
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
    """Once, at the end, with the real test accuracy (no placeholder hp_metric)."""
    hp_metrics = {"hparams/test_acc": metrics["test/acc"]} if "test/acc" in metrics else {}
    if "train/loss" in metrics:
        hp_metrics["hparams/final_train_loss"] = metrics["train/loss"]
    for logger in loggers:
        logger.log_hyperparams(hyperparameters(cfg), metrics=hp_metrics or None)
        logger.finalize("success")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test, write `metrics.json` in the run directory, and return the metrics."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # .hydra/config.yaml keeps the interpolations; this is what the run actually used.
    resolved = {k: v for k, v in cfg.items() if k != "hydra"}
    OmegaConf.save(OmegaConf.create(resolved), output_dir / "config.yaml", resolve=True)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    # Read the data before the trainer exists: bad data then costs one line and nothing else.
    datamodule.setup("fit")
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and "/" in k
    }
    metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step)
    bn_stats = cfg.model.get("bn_stats", "running")
    if cfg.get("test"):
        log.info("Testing with bn_stats=%s: %s.", bn_stats, BN_STATS_DESCRIPTIONS[bn_stats])
        for results in trainer.test(model, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in results.items()})
        metrics[f"test/acc_{bn_stats}"] = metrics["test/acc"]
        log.info("Test accuracy (%s statistics): %.4f", bn_stats, metrics["test/acc"])
    log_hyperparameters(loggers, cfg, metrics)

    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log.info("Outputs in %s", output_dir)
    return metrics


# An absolute path: works whether this runs as `python -m src.train` or is imported.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """CLI entry point; returns the metric a Hydra sweeper optimises (`optimized_metric`)."""
    try:
        metrics = train(cfg)
    except (ConfigError, DataError) as err:
        # One line, no traceback: the message names the key, file or value at fault.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except InstantiationException as err:  # e.g. +model.foo=1: a key the class does not take
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


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
