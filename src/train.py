"""`python -m src.train [overrides]`: the source example's experiment, configured by Hydra."""

from __future__ import annotations

from src.errors import exit_on_signals

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line too
    exit_on_signals()

import gc
import json
import logging
import os
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.checkpoint import AtomicCheckpointIO, read_checkpoint
from src.cli import config_checked, finished
from src.config.rules import check_config
from src.console import print_config_tree
from src.data.datamodule import DigitsDataModule
from src.errors import ConfigError, TrainingDiverged
from src.io import write_text
from src.model.precision import say_fast_choice
from src.model.state import describe_state, state_label
from src.reports import figures
from src.reports.state_tables import network_tables, state_after_training
from src.runtime.build import (
    build_model,
    changed_settings,
    check_batches,
    computes_population,
    entry_point,
    instantiate_group,
    read_data,
    save_resolved_config,
    tested_as_trained,
)
from src.runtime.loggers import continue_loggers, log_hyperparameters
from src.runtime.threads import configure_threads
from src.sweep.resume import continue_job, release_job

log = logging.getLogger(__name__)


def train(cfg: DictConfig, checked: bool = False) -> dict[str, float]:
    """Fit, test, write `metrics.json` in the run directory, and return the metrics. The config
    is checked first unless `checked` (the command line's check passed it)."""
    if not checked:
        check_config(cfg)
    configure_threads(cfg)  # parallel launchers share the cores; a plain run keeps torch's default
    say_fast_choice(cfg)  # experiment=fast on a machine without native bfloat16: one line
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    training = cfg.get("train", True)  # train=false: test the network of ckpt_path, no training
    ckpt = read_checkpoint(Path(cfg.ckpt_path)) if cfg.get("ckpt_path") else {}
    if ckpt and not training:  # as src.evaluate tests it
        tested_as_trained(cfg, ckpt)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # .hydra/config.yaml keeps the interpolations; this is what the run actually used.
    resolved = {k: v for k, v in cfg.items() if k != "hydra"}
    if rank_zero_only.rank == 0:  # DDP: the processes Lightning launches write no outputs
        save_resolved_config(cfg)
        print_config_tree(cfg, output_dir / "config_tree.log")
    else:  # and log to their own file only (train_ddp_process_N.log), not to the terminal
        for handler in logging.getLogger().handlers[:]:
            if not isinstance(handler, logging.FileHandler):  # the console's
                logging.getLogger().removeHandler(handler)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    # Read the data before the trainer exists: bad data then costs one line and nothing else.
    # train=false: the training set only for population statistics the checkpoint lacks.
    needs_train = training or computes_population(ckpt, cfg.model.get("bn_stats"))
    read_data(datamodule, "fit" if training else "test", test_only=not needs_train)
    ours = isinstance(datamodule, DigitsDataModule)  # a fork's own: Lightning checks it
    if ours:
        datamodule.check_labels(cfg.model.get("num_classes"), trained=bool(cfg.get("ckpt_path")))
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    # Saved in every checkpoint: evaluation reads the data settings from it, from any folder.
    model.run_config = OmegaConf.to_container(OmegaConf.create(resolved), resolve=True)
    for key in ("root", "train_file", "test_file"):  # data.root=ds: where it is from here
        if isinstance(path := model.run_config["data"].get(key), str):
            model.run_config["data"][key] = os.path.abspath(path)
    callbacks = instantiate_group(cfg.get("callbacks"))
    resume, step = {}, int(ckpt.get("global_step", 0))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt and training:
        resume = {TensorBoardLogger: {"purge_step": step}}  # the old events after it: hidden
        log.info("Resuming from %s (iteration %d).", ckpt_path, step)
        if changed := changed_settings(ckpt, cfg):  # an experiment preset left out, say
            log.warning("Resuming with other settings than the checkpoint's: %s; the run differs "
                        "from one never stopped", ", ".join(changed))  # fmt: skip
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), resume)
    if resume:  # each logger's history before the checkpoint, from the interrupted run
        continue_loggers(loggers, Path(ckpt_path), output_dir, step)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="all",  # Lightning takes dicts and lists (max_time={hours: 1}), not configs
    )

    if ours:
        check_batches(trainer, datamodule, *(["train", "val"] if training else []),
                      *(["test"] if cfg.get("test") else []))  # fmt: skip
    # What is reported once (conf/reports) is called here, not dispatched at every iteration.
    reports = cfg.get("reports") or {}
    # weights_only: a checkpoint holds tensors, dicts and numbers only; nothing else is trusted.
    if training:
        if reports.get("state_tables"):
            network_tables(model.net, ckpt or None)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except ValueError as err:  # Lightning's check once it knows an epoch's length, as it does
            every, batches = trainer.val_check_interval, trainer.num_training_batches
            if not (isinstance(every, int) and every > batches and trainer.limit_val_batches
                    and trainer.check_val_every_n_epoch is not None):  # fmt: skip
                raise
            raise ConfigError(
                f"trainer.val_check_interval={every} is more than the {batches} training batches "
                f"of an epoch: use at most {batches}, a fraction of it (0.5), or validate every "
                f"{every} iterations across epochs with +trainer.check_val_every_n_epoch=null"
            ) from err
        ended = getattr(model, "end_skipped_fit", None)  # a fork's module may have none
        if ended is not None and ended():  # resumed with no iteration left: its state, saved
            for saver in trainer.checkpoint_callbacks:
                getattr(saver, "save", lambda _: None)(trainer)
        if getattr(model, "non_finite", None):  # and no RunCheckpoint stopped it: callbacks=none
            lr = OmegaConf.select(cfg, "optimizer.lr")
            raise TrainingDiverged(
                f"training diverged: {model.non_finite}; the learning rate (optimizer.lr={lr}) "
                "is most likely too high for this network. Lightning's own checkpoints of this "
                "run (without callbacks.model_checkpoint) hold the diverged weights"
            )
        if reports.get("first_batch"):
            figures.first_batch(trainer, model)
        if reports.get("training_progress"):
            figures.training_progress(trainer, model)
        if reports.get("state_tables"):
            state_after_training(model)
    else:  # its weights and batch-norm state (model.bn_stats picks which), as src.evaluate does
        model = build_model(ckpt, Path(ckpt_path), cfg.model.get("bn_stats"), datamodule)
        log.info("Testing %s (iteration %d); no training (train=false).", ckpt_path,
                 int(ckpt["global_step"]))  # fmt: skip
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and "/" in k
    }
    # The last per-iteration values (the loss, the state's watch), written out in blocks.
    metrics.update({k: v for k, v in getattr(model, "latest", {}).items() if "/" in k})
    metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step)
    bn_stats = cfg.model.get("bn_stats", "running")
    # false: the network predicts with the state it began with (train=false: the checkpoint's)
    carried = getattr(model, "update_state", cfg.model.get("update_state", True))
    if cfg.get("test"):
        said = describe_state(bn_stats, carried, resumed=bool(ckpt_path))
        log.info("Testing with bn_stats=%s: %s.", bn_stats, said)
        for results in trainer.test(model, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in results.items()})
        if reports.get("confusion_matrix"):
            figures.confusion_matrix(trainer, model)
        metrics[f"test/acc_{bn_stats}"] = metrics["test/acc"]
        log.info("Test accuracy (%s): %.4f", state_label(bn_stats, carried), metrics["test/acc"])
    log_hyperparameters(trainer.loggers, cfg, metrics)  # fast_dev_run: none (Lightning's dummy)

    # The run's own command-line overrides (a sweep job's values included): what made it differ.
    from hydra.core.hydra_config import HydraConfig

    task = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    overrides = OmegaConf.to_container(OmegaConf.create(task), resolve=False)  # as typed
    saved = {**metrics, "overrides": overrides}
    if trainer.is_global_zero:
        write_text(output_dir / "metrics.json", json.dumps(saved, indent=2, sort_keys=True) + "\n")
    finished(log, output_dir)
    return metrics


def job(cfg: DictConfig) -> float | None:
    """A job of `main`; returns the metric a Hydra sweeper optimises (`optimized_metric`)."""
    # A sweep run again into its folder: a finished job is skipped, a killed one resumes.
    kept = continue_job(cfg)  # holds the job folder's lock until the job ends
    try:
        metrics = train(cfg, config_checked()) if kept is None else kept
    finally:
        release_job()
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


main, cli = entry_point(job, "config")


if __name__ == "__main__":
    gc.freeze()  # what the imports made lives as long as the process: no collection walks it
    cli()
