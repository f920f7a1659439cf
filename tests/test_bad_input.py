"""Inputs that used to end in a traceback: each is one `error:` line, exit 2, and no run folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from src.config import schema
from src.config.compose import preflight
from src.config.folders import check_output_folder
from src.config.rules import check_config
from src.errors import ConfigError
from src.model.module import BNStateModule
from tests.conftest import (
    CONF,
    TINY,
    assert_one_line_error,
    cli_in_process,
    compose_config,
    composed,
    raised_line,
    run_cli,
)

# Bytes of float32 images per `num_*_per_class` step: ten classes of 1x28x28.
IMAGE_BYTES_PER_CLASS_STEP = 10 * 28 * 28 * 4


class DropoutModule(BNStateModule):
    """A fork's network option, as a researcher adds one: a layer that checks its own value."""

    def __init__(self, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropout = torch.nn.Dropout(dropout)


# ---------------------------------------------------------------------------------------------
# Through the real CLI: one line, exit code 2, no run folder


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # 1. interpolations that cannot be resolved
        (["optimizer.lr=${nope}"], ["optimizer.lr=${nope}", "cannot be resolved", "'nope'"]),
        (
            ["optimizer.lr=${oc.env:UNSET_VAR_XYZ}"],
            ["optimizer.lr=${oc.env:UNSET_VAR_XYZ}", "cannot be resolved", "UNSET_VAR_XYZ"],
        ),
        (["optimizer.lr=${foo:bar}"], ["optimizer.lr=${foo:bar}", "cannot be resolved", "foo"]),
        (["~paths"], ["data.cache_dir=${paths.cache_dir}", "cannot be resolved"]),
        # an empty path is the current folder: the data cache was written there, exit 0
        (["paths.cache_dir="], ["paths.cache_dir='' is empty: give it a path"]),
        # 2. keys a _target_ does not take, values out of range or of the wrong type
        (["+data.foo=1"], ["data.foo:", "DigitsDataModule", "'foo'", "num_train_per_class"]),
        (["+optimizer.foo=1"], ["optimizer.foo:", "torch.optim.SGD", "'foo'", "momentum"]),
        (
            ["+logger.tensorboard.foo=1"],
            ["logger.tensorboard.foo:", "TensorBoardLogger", "'foo'", "flush_secs"],
        ),
        (["+model.foo=1"], ["model.foo:", "BNStateModule", "'foo'", "num_filters"]),
        (["data.source=bogus"], ["data.source='bogus'", "synthetic"]),
        (["data.batch_size=0"], ["data.batch_size"]),
        (["optimizer.lr=-0.1"], ["optimizer.lr"]),
        (["optimizer.momentum=1.0"], ["optimizer.momentum"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs"]),
        (["model.update_state=maybe"], ["model.update_state"]),
        (["model.pool=abc"], ["model.pool must be true or false, got 'abc'"]),  # its annotation
        (["trainer=tpu"], ["trainer/tpu"]),
        (["optimizer.lrr=3"], ["optimizer.lrr"]),
        (["numEpochs=3"], ["numEpochs=3: numEpochs is MATLAB's name: write trainer.max_epochs=3"]),
        (["executionEnvironment=cpu"], ["MATLAB's name: write trainer=cpu"]),  # not +KEY
        (["--multirun", "numEpochs=1,2"], ["numEpochs=1,2: numEpochs is MATLAB's name: write "
                                           "trainer.max_epochs=1,2"]),  # fmt: skip
        (["executionEnvironment=multi-gpu"], ["write trainer=ddp"]),
        (["executionEnvironment=banana"], ["write trainer=NAME (one of: auto, cpu, ddp, "]),
        # the example's names typed together, and two typos: each line names what to write
        (["numEpochs=2", "miniBatchSize=64", "learnRate=0.1"], ["numEpochs=2 miniBatchSize=64 "
         "learnRate=0.1: MATLAB's names: write trainer.max_epochs=2 data.batch_size=64 "
         "optimizer.lr=0.1"]),  # fmt: skip
        (["trainer.max_epoch=2", "data.batchsize=3"], ["did you mean data.batch_size?"]),
        # a key copied from the config tree, under a node that is another's value
        (["model.optimizer.lr=0.5"], ["model.optimizer is ${optimizer}: write optimizer.lr=0.5"]),
        (["trainer.default_root_dir.x=1"], ["trainer.default_root_dir.x=1: "
         "trainer.default_root_dir is a value, not a node with keys"]),  # was a traceback
        (["--multirun", "executionEnvironment=cpu,gpu"], ["write trainer=cpu,gpu"]),
        (["model.optimizer=5"], ["model.optimizer=5 must be Callable or null"]),  # was a TypeError
        (["model.bn_stats=median"], ["model.bn_stats", "median"]),
        # 0 == False in Python: a switch's choices are compared by type too
        (["trainer.deterministic=0"], ["trainer.deterministic=0 must be true, false or warn"]),
        (["data.on_device=1.0"], ["data.on_device=1.0 must be auto, true or false"]),
        (["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps"]),
        (["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path", "/nonexistent/last.ckpt"]),
        (["ckpt_path=last"], ["ckpt_path=last: no such checkpoint file (Lightning's 'last' is "
                              "one in the run's own folder"]),  # fmt: skip
        (["trainer.max_epochs=null"], ["trainer.max_epochs", "null"]),
        (["data.batch_size=1e3"], ["data.batch_size", "whole number"]),
        (["trainer.devices=0"], ["trainer.devices=0"]),  # 2 is DDP now (trainer=ddp_cpu)
        (["callbacks=null"], ["override"]),
        (["data.overfit_batches=-1"], ["data.overfit_batches=-1"]),
        # 3. no class to build, or an entry without a _target_
        (["~model._target_"], ["model._target_ must be set"]),
        (["model._target_=src.nope.Net"], ["model._target_=src.nope.Net", "cannot be imported"]),
        (
            ["+callbacks.early_stopping.monitor=val/acc"],
            ["callbacks.early_stopping has no _target_", "monitor=val/acc",
             "+callbacks/early_stopping=val_acc"],
        ),  # fmt: skip
        (["+logger.wandb.project=x"], ["logger.wandb has no _target_", "~logger.wandb"]),
        (["scheduler=piecewise", "scheduler.interval=batch"], ["scheduler.interval='batch'"]),
        (["scheduler=piecewise", "scheduler.interval=true"], ["scheduler.interval=true must"]),
        # Lightning's scheduler keys this module does not read (were silently ignored), and
        # ReduceLROnPlateau's metric (was a TypeError after the first epoch)
        (["scheduler=cosine", "+scheduler.frequency=5"], ["scheduler.frequency: the scheduler "
         "group takes interval, scheduler and monitor"]),  # fmt: skip
        (["scheduler=plateau"], ["scheduler monitors val/loss, which needs a validation split"]),
        (["scheduler=plateau", "data.val_fraction=0.2", "scheduler.interval=step"],
         ["ReduceLROnPlateau steps on a metric after each epoch"]),
        (["scheduler=plateau", "data.val_fraction=0.2", "scheduler.monitor=val/acc"],
         ["scheduler.scheduler.mode='min' must be max: val/acc is better higher"]),
        (["train=false"], ["train=false", "ckpt_path"]),
        # 4. finite in Python, infinite in float32
        (["optimizer.lr=1e308"], ["optimizer.lr=1e+308", "overflows float32"]),
        # 5. classes the digit labels can fill
        (["model.num_classes=11"], ["model.num_classes=11", "[2, 10]"]),
        (["model.num_classes=1"], ["model.num_classes=1", "[2, 10]"]),
        # 6. more images than this machine has memory for
        (["data.num_train_per_class=10000000"], ["data.num_train_per_class=10000000", "GiB"]),
        # 7. zero batches
        (["trainer.limit_test_batches=0"], ["trainer.limit_test_batches=0", "test=false"]),
        (["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0", "no training"]),
        (["trainer.limit_train_batches=1.5"], ["trainer.limit_train_batches=1.5", "fraction"]),
        # 8. process settings that would run otherwise
        (["+trainer.strategy=ddp"], ["trainer.strategy"]),  # added on the command line
        (["trainer.strategy=ddp"], ["trainer.strategy=ddp", "single process", "trainer=ddp_cpu"]),
        (["trainer=cpu", "trainer.devices=2"], ["trainer.devices=2", "trainer.strategy=ddp"]),
        (["trainer.strategy=dp"], ["trainer.strategy=dp", "not supported"]),
        (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], ["ddp_spawn", "not supported"]),
        (["trainer=cpu", "+trainer.num_nodes=2"], ["trainer.num_nodes=2", "trainer.strategy=ddp"]),
        (["trainer=ddp_cpu", "trainer.devices=-1"], ["trainer.devices=-1", "CPU"]),
        (["trainer=ddp_cpu", "trainer.use_distributed_sampler=true"],
         ["trainer.use_distributed_sampler"]),
        (["trainer.precision=bf17"], ["trainer.precision=bf17", "must be 32-true"]),
        (["trainer.precision=bf16-true"], ["trainer.precision=bf16-true", "state"]),
        pytest.param(["model.cuda_graph=true"], ["model.cuda_graph=true", "no CUDA GPU"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(),
                                              reason="the refusal is for machines without CUDA")),
        # a list or sweep outside ASCII: quoting the whole value would change its meaning
        *[([typed], [typed, "only inside quotes"])
          for typed in ("data.classes=[ä,b]", "seed=ä,b", "paths.x=ä\\,b")],
        # 9. issue 17's samples (--cfg job: code that accepted one would print, not train)
        (["--cfg", "job", "callbacks.model_checkpoint.every_n_train_steps=-1"],
         ["every_n_train_steps=-1"]),
        (["--cfg", "job", "callbacks.model_checkpoint.every_n_epochs=-1"], ["every_n_epochs=-1"]),
        (["--cfg", "job", "scheduler=piecewise", "scheduler.scheduler.gamma=-1"], ["gamma=-1"]),
        (["--cfg", "job", "scheduler=piecewise", "scheduler.scheduler.step_size=abc"],
         ["step_size must be"]),
        (["--cfg", "job", "scheduler=piecewise", "scheduler.scheduler.step_size=0"],
         ["step_size=0"]),
        (["--cfg", "job", "optimizer=adam", "optimizer.betas=[2,0.999]"], ["optimizer.betas.0=2"]),
        (["--cfg", "job", "tags=[[a]]"], ["tags must be"]),
        # Hydra's rules for its own flags (were its ValueError's traceback, exit 1)
        (["-m", "--cfg", "job", "seed=0,1"], ["--multirun and --cfg: Hydra takes one of"]),
        (["--resolve"], ["--resolve goes with --cfg or --help"]),
        (["--cfg", "hydra", "--resolve"], ["use --cfg all --resolve"]),
        # 10. the validation split, and early stopping without one
        (["data.val_fraction=1.0"], ["data.val_fraction=1.0 is out of range"]),
        (["data.val_fraction=-0.1"], ["data.val_fraction=-0.1 is out of range"]),
        (["data.val_seed=-1"], ["data.val_seed=-1"]),
        (["+callbacks/early_stopping=val_acc"],
         ["callbacks.early_stopping", "data.val_fraction=0"]),
        # a metric that is not logged while training, or no direction (were tracebacks mid-run)
        *[(["+callbacks/early_stopping=val_acc", "data.val_fraction=0.2", typed], [said])
          for typed, said in (
            ("callbacks.early_stopping.monitor=train/loss",
             "callbacks.early_stopping.monitor=train/loss is not one of the metrics a callback or "
             "schedule can watch (VALIDATION_METRICS, src/model/module.py): watch val/acc or "
             "val/loss"),
            ("callbacks.early_stopping.mode=best",
             "callbacks.early_stopping.mode='best' must be max: val/acc is better higher"),
            ("+trainer.limit_val_batches=0", "callbacks.early_stopping monitors val/acc, but "
             "trainer.limit_val_batches=0 runs no validation"),  # was accepted: never checked
        )],
        # 11. sweeps: every end of an Optuna search space is checked; a bad value, sweep values
        # without --multirun, an Optuna search with nothing (or the test set) to maximise:
        # refused before Hydra starts, instead of its multi-line report or a failed study
        (["--multirun", "hparams_search=optuna", "optimizer.momentum=interval(0.5, 1.5)"],
         ["optimizer.momentum=1.4999"]),
        (["--multirun", "optimizer.lr=0.01,-1"], ["optimizer.lr=-1"]),
        (["hparams_search=optuna", "hydra.sweeper.n_trials=0"], ["hydra.sweeper.n_trials=0"]),
        # optuna 2 (what the sweeper allows) cannot use a database with SQLAlchemy 2
        (["hparams_search=optuna", "hydra.sweeper.storage=sqlite:///x.db"],
         ["hydra.sweeper.storage"]),
        (["hparams_search=optuna", "hydra.sweeper.params.optimizer.lr=interval(0.1,0.2)"],
         ["cannot be changed key by key", "'optimizer.lr=interval(0.1,0.2)'"]),  # was misleading
        (["--multirun", "optimizer.lr=interval(0,1)"], ["optimizer.lr=interval(0,1): Hydra's "
         "basic sweeper runs lists and ranges, not an interval"]),  # was a traceback, sweep.json
        (["hparams_search=optuna", "optimizer=glob(sgd*)"], ["optimizer=glob(sgd*): the Optuna "
         "sweeper takes no glob: name the options, optimizer=choice(sgd,sgdm)"]),  # as above
        (["--multirun", "optimizer=glob(zzz*)"], ["optimizer=glob(zzz*): this sweep has no value"]),
        # Lightning's callbacks that act where it steps the optimizer (were a traceback in the
        # run, and a test of weights no checkpoint holds), Hydra's chdir (relative paths broke)
        (["+callbacks.gas._target_=lightning.pytorch.callbacks.GradientAccumulationScheduler",
          "+callbacks.gas.scheduling={0:2}"], ["callbacks.gas: GradientAccumulationScheduler"]),
        (["+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
          "+callbacks.swa.swa_lrs=0.01"], ["callbacks.swa: StochasticWeightAveraging"]),
        (["hydra.job.chdir=true"], ["hydra.job.chdir=true: the paths a run is given"]),
        # a second progress bar: was Lightning's Trainer's refusal, once the run folder existed
        (["+callbacks.rich._target_=lightning.pytorch.callbacks.RichProgressBar"],
         ["callbacks.rich is a second progress bar beside callbacks.progress_bar"]),
        (["--multirun", "trainer=ddp_cpu", "seed=0,1"], ["trainer.strategy=ddp cannot run "
         "inside a Hydra multirun"]),  # was refused by each job, in the sweep's folder
        (["--multirun", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
         ["hydra.launcher.n_jobs=0 runs no job"]),  # was joblib's traceback
        # was a sweep of its own in an existing sweep's folder, whose summary it replaced
        (["--multirun", "seed=1,2", "sweep.rerun_failed=false,true"], ["sweep.rerun_failed=false,"
         "true: sweep.rerun_failed says how the sweep continues (not a setting of its jobs)"]),
        # each sweep value composed as Hydra's job composes it: `+` on a key that exists
        (["--multirun", "+optimizer.lr=0.01,0.02"], ["Could not append", "'optimizer.lr'"]),
        (["optimizer.lr=0.01,0.02"], ["optimizer.lr=0.01,0.02 is a sweep", "--multirun"]),
        (["ckpt_path=/runs/epoch=3-step=40.ckpt"], ["ckpt_path=/runs/epoch=3-step=40.ckpt: Hydra "
         "cannot read this value", "quoted: \"ckpt_path='/runs/epoch=3-step=40.ckpt'\""]),
        (["data=folder", "data.root=/tmp/a,b"], ["data.root=/tmp/a,b is a sweep", "--multirun",
         "one that holds a comma is quoted: \"data.root='a,b'\""]),
        (["hydra/sweeper=optuna", "optimizer.lr=interval(0.001,0.1)"], ["--multirun"]),
        (["--multirun", "hydra/sweeper=optuna", "optimizer.lr=interval(0.001,0.1)"],
         ["optimized_metric is not set", "hparams_search=optuna"]),
        (["--multirun", "hydra/sweeper=optuna", "optimized_metric=test/acc",
          "optimizer.lr=interval(0.001,0.1)"], ["optimized_metric=test/acc", "validation"]),
        # a metric the jobs never return, or searched the wrong way (were a failed study, exit 1)
        *[(["--multirun", "hparams_search=optuna", *typed], [said]) for typed, said in (
            (["optimized_metric=val/f1"], "optimized_metric=val/f1: an Optuna search needs a "
             "validation or training metric the run returns (val/acc, val/loss, train/loss)"),
            (["data.val_fraction=0"], "optimized_metric=val/acc needs a validation split"),
            (["optimized_metric=val/loss"], "hydra.sweeper.direction=maximize with "
             "optimized_metric=val/loss, which is better lower: set "
             "hydra.sweeper.direction=minimize"),
        )],
        # 13. types from each class's own signature (some were tracebacks mid-run, some were
        # refused only after the run folder existed, some were accepted)
        (["scheduler=onecycle", "scheduler.scheduler.anneal_strategy=0"],
         ["scheduler.scheduler.anneal_strategy=0 must be one of: cos, linear"]),
        (["logger=csv", "logger.csv.name=true"], ["logger.csv.name=true must be a string or null"]),
        (["logger=tensorboard", "logger.tensorboard.name=[a]"],
         ["logger.tensorboard.name=['a'] must be a string or null"]),
        (["trainer.accelerator=0"], ["trainer.accelerator=0 must be a string or Accelerator"]),
        *[([f"trainer.accelerator={name}"], [f"trainer.accelerator={said} must be one of: auto, "])
          for name, said in (("''", "''"), ("CPU", "'CPU'"), ("tpuu", "'tpuu'"))],
        (["trainer.accelerator=tpu"],  # was Lightning's traceback in the run folder
         ["trainer.accelerator=tpu: Lightning finds no such device on this machine"]),
        (["callbacks.lr_monitor.logging_interval=0"],
         ["callbacks.lr_monitor.logging_interval=0 must be one of: step, epoch"]),
        (["callbacks.progress_bar.plain=0"], ["progress_bar.plain must be true or false, got 0"]),
        *[([f"data.style={v}"], [f"data.style={v} must be one of: mixed, handwriting, print"])
          for v in ("0", "'bogus'")],
        (["data=folder", "data.root=[a]"], ["data.root=['a'] must be a string, Path or null"]),
        (["task_name=[a,b]"], ["task_name=['a', 'b'] must be a string"]),
        (["optimized_metric=0"], ["optimized_metric=0 must be a string or null"]),
        # 14. trainer settings the module's own optimizer step cannot honour (were tracebacks or
        # refusals after the run folder existed); null or 0 leave them off
        *[([f"+trainer.{typed}"], [f"trainer.{typed} {said}"]) for typed, said in (
            ("gradient_clip_val=1.0", "clips gradients where Lightning steps the optimizer"),
            ("accumulate_grad_batches=2", "accumulates gradients where Lightning steps"),
            ("overfit_batches=2", "replaces the data module's sampler: use data.overfit_batches"),
            ("sync_batchnorm=true", "converts torch's BatchNorm layers"),
            ("enable_checkpointing=false", "while callbacks.model_checkpoint is on: switch that "
             "off too with ~callbacks.model_checkpoint"),
            ("enable_progress_bar=false", "while callbacks.progress_bar is on"),
            ("barebones=true", "switches off the loggers, checkpoints and progress"),
            ("check_val_every_n_epoch=0", "is out of range: it must be at least 1"),
            ("max_steps=0", "is out of range: it must be at least 1 (-1: none)"),
            # Lightning's own checks (a ZeroDivisionError for 0) ran in the run folder
            ("val_check_interval=0", "must be a whole number of iterations (at least 1) or"),
            ("val_check_interval=1.5", "must be a whole number of iterations (at least 1) or an "
             "epoch's fraction in (0, 1]"),
        )],
        (["+trainer.max_time=abc"], ["trainer.max_time='abc': `Timer(duration='abc')` is not a "
         "valid duration"]),
        (["+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=0.5"],
         ["trainer.val_check_interval=0.5 is a fraction of an epoch, and check_val_every_n_epoch"
          "=null counts iterations"]),
        # what the run passes to the Trainer itself would silently win
        *[([f"+trainer.{key}={typed}"], [f"trainer.{key}={said}: the run passes it itself, {how}"])
          for key, typed, said, how in (
            ("logger", "false", "false", "from the logger group (logger=none"),
            ("callbacks", "[]", "[]", "from the callbacks group"),
            ("plugins", "[a]", "['a']", "its own plugin"),
        )],
        # 15. torch's own checks of the optimizer and schedule (were tracebacks mid-run)
        (["optimizer.nesterov=true", "optimizer.momentum=0"], ["optimizer: torch.optim.SGD "
         "refuses these settings (Nesterov momentum requires a momentum and zero dampening)"]),
        (["scheduler=onecycle", "scheduler.scheduler.max_lr=-1"],  # was a diverged run, exit 3
         ["scheduler.scheduler.max_lr=-1 is out of range: it must be 0 or more"]),
        (["scheduler=piecewise", "+scheduler.scheduler.last_epoch=3"], ["scheduler.scheduler: "
         "torch.optim.lr_scheduler.StepLR refuses these settings (param 'initial_lr' is not"]),
        # 12. data=mnist's download settings (test_download.py fetches with good ones)
        *[(["data=mnist", "data.root=/nonexistent", typed], [said]) for typed, said in (
            ("data.dataset=cifar10", "data.dataset='cifar10' is not one of mnist, fashion_mnist"),
            ("data.download=yes", "data.download must be true or false"),
            ("data.mirrors=http://host/mnist/", "data.mirrors must be a list of base URLs"),
            ("data.mirrors=[ftp://host/]", "data.mirrors: 'ftp://host/' is not an http://"),
            ("data.mirrors=[https:///mnist/]", "names no host"),
            ("data.mirrors=[]", "data.mirrors is empty"),
        )],
        # a key the config lacks, without the +: Hydra's hint to add it, and the likely key
        *[([typed], [f"error: {typed}: {said}; a new key is added with +{typed}"])
          for typed, said in (
            ("model.num_filter=3",
             "model has no key 'num_filter' (did you mean model.num_filters?)"),
            ("seeds=1", "the config has no key 'seeds' (did you mean seed?)"),
            ("model.foo.bar=1", "model has no key 'foo'"),
        )],
        # a top-level key added with a + was read by nothing (one epoch, exit 0)
        (["+max_epochs=3"], ["+max_epochs=3: nothing reads a top-level max_epochs (did you mean "
         "trainer.max_epochs?)"]),
        # no typo: another class's option, which this group's class would refuse with the + too
        (["optimizer=adam", "optimizer.momentum=0.9"], ["optimizer.momentum=0.9: optimizer has "
         "no key 'momentum', and torch.optim.Adam takes no argument 'momentum' (it takes: "]),
        # the run folder is Hydra's: another one put the figures apart from the run's outputs
        *[([f"{key}=elsewhere"], [f"{key}=elsewhere: a run writes everything into its run "
          "folder, which Hydra names: set hydra.run.dir=elsewhere"])
          for key in ("trainer.default_root_dir", "paths.output_dir")],
        # Hydra's own check of a +key resolves a value of its run folder, too early
        (["+trainer.default_root_dir=x"], ["+trainer.default_root_dir=x: trainer.default_root_dir "
         "is already set", "the run folder is Hydra's: set hydra.run.dir=x instead"]),
        (["+logger.tensorboard.save_dir=x"], ["+logger.tensorboard.save_dir=x: ", "already set",
         "remove the +: logger.tensorboard.save_dir=x"]),
        # MLflow's store (its file store: a long error in the run; a database it cannot create:
        # minutes of retries first)
        (["logger=mlflow", "logger.mlflow.tracking_uri=file:/tmp/runs"],
         ["logger.mlflow.tracking_uri=file:/tmp/runs", "MLFLOW_ALLOW_FILE_STORE=true"]),
        (["logger=mlflow", "logger.mlflow.tracking_uri=null"],  # Lightning's: ./mlruns
         ["logger.mlflow.tracking_uri=file:./mlruns", "MLFLOW_ALLOW_FILE_STORE=true"]),
        (["logger=mlflow", "logger.mlflow.tracking_uri=sqlite:////proc/x.db"],
         ["cannot create the database in /proc"]),
        # a logger's folder in another run's (was exit 0, its hparams.yaml overwritten)
        (["logger.tensorboard.name=../victim/tensorboard"], ["logger.tensorboard.name=../victim/"
         "tensorboard: leaves its logger's folder (logger.tensorboard.save_dir)"]),
        (["logger=csv", "logger.csv.version=/tmp/x"], ["logger.csv.version=/tmp/x: leaves"]),
        (["+logger.tensorboard.sub_dir=../../x"], ["logger.tensorboard.sub_dir=../../x: leaves"]),
        (["logger.tensorboard.name=${oc.env:HOME}"], ["logger.tensorboard.name=/", "leaves"]),
        # 16. the files and folders a data source reads (were refused in the run folder)
        (["data.num_train_per_class=10"], ["data.batch_size=128 is larger than the 100 training "
         "images of data source 'synthetic'"]),
        (["data=folder", "data.root=/nonexistent"], ["/nonexistent: no such folder (data.root)"]),
        (["debug=overfit", "data.overfit_batches=100"], ["data.overfit_batches=100 needs 12800 "
         "training images (x data.batch_size=128); data source 'synthetic' has 5000"]),
        (["callbacks.model_checkpoint.dirpath=/proc/x"], ["callbacks.model_checkpoint.dirpath="
         "/proc/x: cannot create the checkpoint folder"]),  # was exit 4 after the first epoch
        (["trainer=ddp_cpu", "data.num_train_per_class=20", "data.batch_size=150"],
         ["data.batch_size=150 for each of 2 processes is 300 images, more than the 200"]),
        (["data.val_fraction=0.99"], ["data.val_fraction=0.99 leaves 50 of the 5000 training "
         "images of data source 'synthetic', fewer than data.batch_size=128"]),
        (["data.val_fraction=0.5", "trainer=ddp_cpu", "data.batch_size=1500"],
         ["data.batch_size=1500 for each of 2 processes is 3000 images, more than the 2500"]),
        (["debug=fdr", "trainer.fast_dev_run=-1"], ["trainer.fast_dev_run=-1 must be true, false "
         "or a number of batches"]),  # was Lightning's MisconfigurationException in the run
        # a path left unset in the config
        *[([f"data={group}"], [key]) for group, key in
          (("folder", "data.root"), ("mnist", "data.root"), ("mat", "data.train_file"))],
        (["data=mat", "data.train_file=/", "data.test_file=/"],
         ["/: is a folder, expected a file (data.train_file)"]),
        (["data=mnist", "data.root=/nonexistent"],
         ["/nonexistent: no such folder (data.root); add data.download=true to fetch it"]),
        # a fork's own layer refusing its value as it is built (was said after the run folder)
        ([f"model._target_={__name__}.DropoutModule", "+model.dropout=1.5"],
         ["model: dropout probability has to be between 0 and 1, but got 1.5"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_before_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needles: list[str]
) -> None:
    monkeypatch.delenv("UNSET_VAR_XYZ", raising=False)
    folders = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = cli_in_process(*args, *folders)
    assert_one_line_error(proc, *needles, code=2)
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_run_or_sweep_folder_under_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    proc = cli_in_process(f"hydra.run.dir={blocker}/run")
    assert_one_line_error(
        proc, f"hydra.run.dir={blocker}/run", "cannot create the run folder", "Not a directory",
        code=2,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    sweep = f"hydra.sweep.dir={blocker}/sweep"
    proc = cli_in_process("--multirun", "optimizer.lr=0.01,0.05", sweep, f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, sweep, "cannot create the sweep folder", code=2)
    assert not run_dir.exists()
    assert blocker.read_text() == "not a folder\n"


def test_a_quoted_tilde_where_nothing_expands_it_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hydra takes `~/...` only quoted, and then made a folder named `~` in the current one
    (cleaned up with `rm -rf ~`: the home folder) or read a checkpoint there."""
    monkeypatch.chdir(tmp_path)
    for typed in ("hydra.run.dir='~/r'", "paths.cache_dir='~/c'", "ckpt_path='~/x.ckpt'"):
        proc = cli_in_process(typed)
        assert_one_line_error(proc, f"{typed}: ~ is not expanded here", "write $HOME/", code=2)
    proc = cli_in_process("ckpt_path='~/x.ckpt'", module="src.evaluate")  # reads it first
    assert_one_line_error(proc, "ckpt_path='~/x.ckpt': ~ is not expanded here", code=2)
    proc = cli_in_process("paths.cache_dir='~root/c'")  # a user's home: named in full
    assert_one_line_error(proc, "called ~root): write /root/c", code=2)
    proc = cli_in_process("--multirun", "seed=1,2", "hydra.sweep.dir='~'")
    assert_one_line_error(proc, "hydra.sweep.dir='~': ~ is not expanded", code=2)
    assert list(tmp_path.iterdir()) == []


def test_a_run_into_a_folder_holding_a_runs_checkpoint_continues_it_or_is_refused(
    ckpt: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The same command again with its `hydra.run.dir` trained over the earlier run's last.ckpt
    and config.yaml without a word. It is refused before the folder is touched; with that
    checkpoint as `ckpt_path` the run continues it."""
    run, args = ckpt.parents[1], [*TINY, "logger=none", f"paths.cache_dir={cache_dir}"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = cli_in_process(*args, f"hydra.run.dir={run}")
    assert_one_line_error(proc, f"{ckpt} holds the checkpoint of an earlier run in this folder",
                          f"continue it with ckpt_path={ckpt}", code=2)  # fmt: skip
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert preflight([*args, f"hydra.run.dir={run}", f"ckpt_path={ckpt}"], str(CONF), "config")[0]
    elsewhere = [
        f"hydra.run.dir={tmp_path / 'new'}",
        f"callbacks.model_checkpoint.dirpath={ckpt.parent}",
    ]
    proc = cli_in_process(*args, *elsewhere)  # a checkpoint folder two runs share
    assert_one_line_error(proc, "another folder (callbacks.model_checkpoint.dirpath)", code=2)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # a folder named by Hydra's override_dirname holds '=' and ',': the advice pastes as given
    named = tmp_path / "lr=0.1,seed=1"
    shutil.copytree(run, named)
    line = assert_one_line_error(cli_in_process(*args, f"hydra.run.dir='{named}'"), code=2)
    given = line.split("continue it with ", 1)[1].split(", or give", 1)[0]
    assert OverridesParser.create().parse_override(given).value() == str(
        named / "checkpoints" / "last.ckpt"
    )


def test_any_other_run_into_an_earlier_runs_folder_is_refused(
    tmp_path: Path, cache_dir: Path, ckpt: Path
) -> None:
    """evaluate, predict, export, train=false, and a training run with no checkpoint of its own
    overwrote the earlier run's metrics.json, config.yaml and figures (exit 0)."""
    run = tmp_path / "run"  # an earlier run's folder: its results, and Hydra's record (.hydra)
    shutil.copytree(ckpt.parents[1], run)
    (run / ".hydra").mkdir(exist_ok=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    common = [f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}"]
    for module, args in (
        ("src.evaluate", common),
        ("src.predict", [*common, f"images={tmp_path / 'digit.png'}"]),
        ("src.export", common),
        ("src.train", [*common, "train=false"]),
        ("src.train", [*TINY, *common[1:], "~callbacks.model_checkpoint"]),
    ):
        proc = cli_in_process(*args, module=module)
        said = f"hydra.run.dir={run} holds an earlier run (its metrics.json), whose files this run "
        assert_one_line_error(proc, said, "would overwrite: give this run another folder", code=2)
    # without Hydra's record (hydra.output_subdir=null; a copy that left dotfiles out): the same
    shutil.rmtree(run / ".hydra")
    proc = cli_in_process(*common, module="src.evaluate")  # was exit 0, both files replaced
    assert_one_line_error(proc, f"hydra.run.dir={run} holds an earlier run", code=2)
    (run / "metrics.json").unlink()  # a stopped run's: its checkpoint alone
    proc = cli_in_process(*common, module="src.evaluate")
    assert_one_line_error(proc, "holds an earlier run (its checkpoints/last.ckpt)", code=2)
    before = {p: b for p, b in before.items() if ".hydra" not in p.parts and p.suffix != ".json"}
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # a start stopped before any result (its config and log only): the same command again runs
    stopped = tmp_path / "stopped"
    (stopped / ".hydra").mkdir(parents=True)
    (stopped / "train.log").write_text("killed in its first epoch\n")
    assert preflight([*TINY, f"hydra.run.dir={stopped}"], str(CONF), "config")[0] == "run"


# ---------------------------------------------------------------------------------------------
# The run-folder probe, in-process


def test_the_probe_leaves_no_folder_behind_and_an_existing_one_as_it_was(tmp_path: Path) -> None:
    preflight([f"hydra.run.dir={tmp_path / 'a' / 'b' / 'c'}"], str(CONF), "config")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "earlier.txt").write_text("x")
    preflight([f"hydra.run.dir={tmp_path}"], str(CONF), "config")
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.txt"]
    # a probe that fails part way removes what it made
    target = tmp_path / "new" / ("x" * 300)  # longer than any file system allows a name to be
    with pytest.raises(ConfigError, match="cannot create the run folder") as info:
        preflight([f"hydra.run.dir={target}"], str(CONF), "config")
    assert f"hydra.run.dir={target}" in str(info.value)
    assert not (tmp_path / "new").exists()
    # printing the config needs no run folder
    preflight(["--cfg", "job", "hydra.run.dir=/proc/x"], str(CONF), "config")


def test_multirun_probes_the_sweep_folder_not_the_run_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = composed([f"hydra.run.dir={blocker}/run", f"hydra.sweep.dir={tmp_path}/sweep"])
    check_output_folder(cfg, multirun=True)  # the run folder is not used by a sweep
    with pytest.raises(ConfigError, match=r"hydra\.run\.dir=.*cannot create the run folder"):
        check_output_folder(cfg, multirun=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # the multirun mode key picks the sweep folder
    cfg = composed(["hydra.mode=MULTIRUN", f"hydra.sweep.dir={blocker}/s"])
    with pytest.raises(ConfigError, match=r"hydra\.sweep\.dir=.*cannot create the sweep folder"):
        check_output_folder(cfg, multirun=False)


def test_an_optuna_search_may_minimise_a_loss(tmp_path: Path) -> None:
    for metric, split in (("val/loss", 0.1), ("train/loss", 0)):  # the last: no split needed
        argv = ["--multirun", "hparams_search=optuna", f"optimized_metric={metric}",
                f"data.val_fraction={split}", "hydra.sweeper.direction=minimize",
                f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
        assert preflight(argv, str(CONF), "config")[0] == "multirun"


def test_each_sweep_value_is_composed_as_hydras_job_composes_it(tmp_path: Path) -> None:
    """`++key=a,b` (add or override) composes one config a value, as each of Hydra's jobs does."""
    argv = ["--multirun", "++optimizer.lr=0.01,0.02", f"hydra.sweep.dir={tmp_path}/sweep"]
    mode, configs = preflight(argv, str(CONF), "config")[:2]
    assert mode == "multirun"
    assert sorted(cfg.optimizer.lr for cfg in configs) == [0.01, 0.02]
    # a glob over a group's options, which Hydra's basic sweeper expands (was "ConfigLoader is
    # not set"): each option composed
    argv = ["--multirun", "optimizer=glob(sgd*)", f"hydra.sweep.dir={tmp_path}/glob"]
    configs = preflight(argv, str(CONF), "config")[1]
    assert sorted(cfg.optimizer.get("momentum", 0) for cfg in configs) == [0, 0.9]


# ---------------------------------------------------------------------------------------------
# check_config directly


def _error(tmp_path: Path, *overrides: str) -> str:
    cfg = compose_config(list(overrides), tmp_path / "run", tmp_path / "cache")
    return raised_line(ConfigError, lambda: check_config(cfg))


def _passes(tmp_path: Path, *overrides: str) -> None:
    check_config(compose_config(list(overrides), tmp_path / "run", tmp_path / "cache"))


def test_hydra_runtime_values_resolve_before_hydra_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """paths.output_dir is ${hydra:runtime.output_dir}: no error at preflight, and no leftovers;
    an unresolvable value is still caught."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    cfg = composed([])
    check_config(cfg)
    assert not HydraConfig.initialized()
    assert not OmegaConf.is_readonly(cfg.hydra)  # the stand-in was set on a copy
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs=\$\{nope\}: cannot be resolved"):
        check_config(composed(["trainer.max_epochs=${nope}"]))
    assert not HydraConfig.initialized()


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.weight_decay=${optimizer.dampening}", "data.seed=${seed}"],  # they resolve
        ["optimizer.lr=3e38"],  # within float32
        ["model.num_classes=2"],
        # early stopping on the validation loss, which is better lower
        ["+callbacks/early_stopping=val_acc", "data.val_fraction=0.1",
         "callbacks.early_stopping.monitor=val/loss", "callbacks.early_stopping.mode=min"],
        # each source takes its own options
        ["data=folder", "data.root=TMP", "data.split_seed=3", "data.resize=true",
         "data.grayscale=true"],
        ["data=mat", "data.train_file=TMP/a", "data.test_file=TMP/b"],
        ["data=mnist", "data.root=TMP"],
        # SummaryWriter's options reach TensorBoard
        ["+logger.tensorboard.flush_secs=5", "+logger.tensorboard.max_queue=3"],
        ["logger.tensorboard.name=mine/first", "logger.tensorboard.version=v1"],
        # batch limits that leave batches
        ["trainer.limit_test_batches=0", "test=false"],
        ["trainer.limit_test_batches=0.5", "trainer.limit_train_batches=2"],
        ["trainer.limit_train_batches=1.0", "trainer.limit_test_batches=null"],
        # process settings that run as asked
        ["trainer=ddp_cpu"],
        ["trainer=ddp_cpu", "trainer.devices=3", "model.sync_batchnorm=true"],
        ["trainer=ddp_cpu", "trainer.devices='2'"],
        ["trainer=cpu", "trainer.strategy=single_device"],
        # a fraction of an epoch, validated each epoch (check_val_every_n_epoch not given)
        ["data.val_fraction=0.2", "+trainer.val_check_interval=0.5"],
        # keys a + adds that are read: forced (++), or by an interpolation
        ["++seed=3"], ["+lr=0.05", "optimizer.lr=${lr}"],
    ],
)  # fmt: skip
def test_settings_that_work_pass(tmp_path: Path, overrides: list[str]) -> None:
    for name in "ab":  # data=mat's files (their contents are read with the data)
        (tmp_path / name).touch()
    _passes(tmp_path, *(o.replace("TMP", str(tmp_path)) for o in overrides))


@pytest.mark.parametrize(
    ("overrides", "start", "needle"),
    [
        (["trainer.devices=[${nope}]"], "trainer.devices.0=${nope}: cannot be resolved", ""),
        (["data=mnist", "data.root=TMP", "+data.seed=1"],
         "data.seed: src.data.datamodule.DigitsDataModule with data.source=",
         "mnist takes no argument 'seed'"),
        (["+data.split_seed=1"], "", "'split_seed'"),  # a folder-only option
        (["+logger.tensorboard.log_dir=x"], "", "'log_dir'"),  # the logger sets it
        (["~model"], "model must be set", ""),
        # batch limits that cannot work
        (["trainer.limit_test_batches=0.0"], "trainer.limit_test_batches",
         "leaves no test batches"),
        (["trainer.limit_train_batches=0.0"], "trainer.limit_train_batches",
         "leaves no training batches"),
        (["trainer.limit_train_batches=-1"], "trainer.limit_train_batches", "out of range"),
        (["trainer.limit_test_batches=all"], "trainer.limit_test_batches", "must be a number"),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_named(
    tmp_path: Path, overrides: list[str], start: str, needle: str
) -> None:
    message = _error(tmp_path, *(o.replace("TMP", str(tmp_path)) for o in overrides))
    assert message.startswith(start) and needle in message, message


def test_a_misspelt_key_suggests_the_right_one(tmp_path: Path) -> None:
    message = _error(tmp_path, "+trainer.max_epoch=3")
    assert message == (
        "trainer.max_epoch: lightning.pytorch.Trainer takes no argument 'max_epoch' "
        "(did you mean 'max_epochs'?)"
    )


def test_memory_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 + 50 per class: exactly what fits, then one image's worth over.
    exact = 150 * IMAGE_BYTES_PER_CLASS_STEP
    monkeypatch.setattr(schema, "_physical_memory", lambda: exact)
    args = ("data.num_train_per_class=100", "data.num_test_per_class=50")
    _passes(tmp_path, *args)
    monkeypatch.setattr(schema, "_physical_memory", lambda: exact - 1)
    message = _error(tmp_path, *args)
    assert message.startswith("data.num_train_per_class=100, data.num_test_per_class=50: ")
    assert "GiB of memory" in message


@pytest.mark.slow
def test_fewer_classes_than_the_data_has_is_one_line(tmp_path: Path, cache_dir: Path) -> None:
    """Found once the data is read, inside the run (10-class data, 3 classes): one line there
    too, and in train.log with the config tree beside it."""
    from tests.conftest import TINY, assert_last_line_error

    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "model.num_classes=3", f"paths.cache_dir={cache_dir}",
                   f"hydra.run.dir={run_dir}", timeout=120)  # fmt: skip
    line = assert_last_line_error(proc, "model.num_classes=3", "labels up to 9", code=2)
    log = (run_dir / "train.log").read_text()
    assert line in log and f"[src.cli][ERROR] - {line}" in log
    assert (run_dir / "config_tree.log").is_file()
    assert "\r" not in proc.stdout + proc.stderr
    assert not (run_dir / "checkpoints").exists()


def test_a_classs_own_refusal_inside_the_run_is_its_line_once(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Lightning's check of a Trainer argument the config cannot type: the key and Lightning's
    line, once (was Hydra's 'Error in call to target ...' with the message twice)."""
    from tests.conftest import TINY, assert_last_line_error, cli_in_process

    proc = cli_in_process(*TINY, "+trainer.reload_dataloaders_every_n_epochs=-1",
                          f"paths.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path}")  # fmt: skip
    line = assert_last_line_error(proc, code=2)
    assert (
        line == "error: trainer: `reload_dataloaders_every_n_epochs` should be an int >= 0, got -1."
    )
