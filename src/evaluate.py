"""`python -m src.evaluate ckpt_path=PATH [overrides]`: test a training checkpoint on any data."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from src import entry
from src.callbacks.figures import ConfusionMatrixReport
from src.checkpoint import DATA_MODULE_TARGET, model_settings, read_checkpoint, stored_data_settings
from src.config_checks import check_config
from src.data.datamodule import DigitsDataModule
from src.errors import CheckpointError
from src.model.module import BNStateModule
from src.model.state import describe_state, population_statistics
from src.train import CONFIG_DIR, instantiate_group

log = logging.getLogger(__name__)


def checked_checkpoint(cfg: DictConfig) -> dict:
    """Check the config as `check_config` does, then read the checkpoint it names."""
    # `model` here only picks the statistics; the network is the checkpoint's to build.
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        bn_stats = probe.model.get("bn_stats") or "running"
        probe.model = {
            **probe.model,
            "_target_": "src.model.module.BNStateModule",
            "bn_stats": bn_stats,
        }
    check_config(probe)
    ckpt = read_checkpoint(Path(cfg.ckpt_path))
    # Untrusted until checked: its settings are refused now, before any run folder exists.
    model_settings(ckpt, cfg.ckpt_path)
    stored_data_settings(ckpt, cfg.ckpt_path)
    return ckpt


def data_config(cfg: DictConfig, ckpt: dict) -> DictConfig:
    """The training run's data with this command line's `data.KEY` overrides on top; a data
    group named on the command line (`data=folder ...`) replaces it."""
    stored = stored_data_settings(ckpt, cfg.ckpt_path)  # checked values; CheckpointError
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    if any(o.key_or_group == "data" for o in overrides):
        return cfg.data
    if stored is None:
        log.warning("The checkpoint records no data settings; testing on the configured data.")
        return cfg.data
    data = OmegaConf.create({"_target_": DATA_MODULE_TARGET, **stored})
    for o in overrides:
        if o.key_or_group.startswith("data."):
            key = o.key_or_group.removeprefix("data.")
            if o.is_delete():
                data.pop(key, None)
            else:  # the composed value: parsed, typed and checked by preflight already
                OmegaConf.update(data, key, OmegaConf.select(cfg, o.key_or_group))
    # The cache belongs to this machine: the training machine's folder may not exist here.
    data.cache_dir = cfg.paths.cache_dir
    return data


def build_model(
    ckpt: dict, path: Path, bn_stats: str | None, dm: DigitsDataModule
) -> BNStateModule:
    """The trained network, predicting with `bn_stats` (None: what the checkpoint predicts with)."""
    saved = ckpt.get("bn_statistics") or {}
    used = saved.get("used", "running")  # what the state_dict holds
    chosen = bn_stats or used
    model = BNStateModule(**{**model_settings(ckpt, path), "bn_stats": chosen})
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # hyper_parameters and weights disagree: not this project's
        lines = str(err).strip().splitlines()  # the first only says "Error(s) in loading"
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(
            f"ckpt_path={path}: its weights do not fit the network it describes ({detail})"
        ) from err
    if chosen != used and saved.get(chosen) is not None:
        model.net.state = saved[chosen]
        source = "stored in the checkpoint's bn_statistics"
    elif chosen != used and chosen == "population":  # trained and saved with the running estimate
        model.net.state = population_statistics(
            model.net, lambda: (x for x, _ in dm.ordered_dataloader("train"))
        )
        source = f"computed now over the {len(dm.train_set)} training images"
    else:
        source = "stored in the checkpoint's weights"
    # A network trained with model.update_state=false predicts with the state it began with.
    described = describe_state(chosen, bool(model.update_state))
    log.info("Predicting with bn_stats=%s (%s), %s.", chosen, described, source)
    return model


def build_datamodule(data: DictConfig) -> DigitsDataModule:
    """The project's data module from `data` settings, called directly: the settings may come
    from a checkpoint, so their `_target_` is never imported or instantiated."""
    settings = OmegaConf.to_container(data, resolve=True)
    target = settings.pop("_target_", DATA_MODULE_TARGET)
    if target != DATA_MODULE_TARGET:  # the command line's own data group names another class
        return hydra.utils.instantiate(data)
    return DigitsDataModule(**settings)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint, write `metrics.json` in the run directory, and return the metrics."""
    ckpt = checked_checkpoint(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = data_config(cfg, ckpt)
    # What this run actually used: the checkpoint's data, not the placeholder group.
    resolved = {**{k: v for k, v in cfg.items() if k != "hydra"}, "data": data}
    OmegaConf.save(OmegaConf.create(resolved), output_dir / "config.yaml", resolve=True)

    datamodule = build_datamodule(data)
    datamodule.setup("fit")  # the training set too: population statistics may need it
    datamodule.check_labels(model_settings(ckpt, cfg.ckpt_path).get("num_classes"))
    model = build_model(ckpt, Path(cfg.ckpt_path), cfg.model.get("bn_stats"), datamodule)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[ConfusionMatrixReport()],
        logger=instantiate_group(cfg.get("logger")) or False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # a few test batches: the bar would only add noise
    )
    metrics: dict[str, Any] = {}
    for results in trainer.test(model, datamodule=datamodule, verbose=False):
        metrics.update({k: float(v) for k, v in results.items()})
    metrics.update(
        ckpt_path=str(Path(cfg.ckpt_path).resolve()),
        bn_stats=model.bn_stats,
        num_test_images=len(datamodule.test_set),
    )
    log.info(
        "Test accuracy (%s statistics): %.4f on %d images",
        model.bn_stats,
        metrics["test/acc"],
        metrics["num_test_images"],
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log.info("Outputs in %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """CLI entry point."""
    entry.run_job(lambda: evaluate(cfg))


def cli() -> None:
    """`python -m src.evaluate`: the shared command-line checks, then the run."""
    # Reading the checkpoint at preflight too: a damaged file costs one line and no run folder.
    entry.cli(main, CONFIG_DIR, "evaluate", check=checked_checkpoint)


if __name__ == "__main__":
    cli()
