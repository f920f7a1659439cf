"""The library internals `src.compat` relies on: each test names the one a new release changed."""

from __future__ import annotations

from pathlib import Path

import torch

from src import compat
from tests.conftest import TINY, cli_in_process, compose_config, read_csv, tb_events


def test_hydra_parses_the_command_line_as_its_app_does() -> None:
    args = compat.hydra_args_parser().parse_args(["--multirun", "seed=1,2", "--cfg", "job"])
    assert args.multirun is True and args.overrides == ["seed=1,2"] and args.cfg == "job"
    assert args.config_dir is None and args.help is False


def test_hydras_own_launcher_and_sweeper_have_these_class_paths(
    tmp_path: Path, cache_dir: Path
) -> None:
    import hydra

    cfg = compose_config([], tmp_path, cache_dir)
    assert cfg.hydra.launcher._target_ == compat.BASIC_LAUNCHER
    assert cfg.hydra.sweeper._target_ == compat.BASIC_SWEEPER
    for path in (compat.BASIC_LAUNCHER, compat.BASIC_SWEEPER):
        assert isinstance(hydra.utils.get_class(path), type)


def test_a_failed_jobs_error_is_read_without_raising() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    err = ValueError("bad")
    job = JobReturn(status=JobStatus.FAILED)
    job.return_value = err
    assert compat.job_error(job) is err


def test_lightnings_ddp_launcher_is_recognised() -> None:
    import lightning as L

    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert compat.is_script_launcher(ddp.strategy.launcher)
    one = L.Trainer(accelerator="cpu", devices=1, logger=False)
    assert not compat.is_script_launcher(one.strategy.launcher)


def test_a_counted_step_moves_the_trainers_iteration_count() -> None:
    """The hooks the CUDA-graph mode calls for a replayed step: each counts one iteration."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            compat.count_optimizer_step(self.optimizers())  # no optimizer.step() of Lightning's

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.zeros(6, 2), batch_size=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(Module(), data)
    assert trainer.global_step == 3


def test_one_summary_of_the_event_writer_is_one_event(tmp_path: Path) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    values = [Summary.Value(tag=t, simple_value=v) for t, v in (("a", 1.5), ("b", 2.5))]
    compat.event_file_writer(writer).add_summary(Summary(value=values), 7)
    writer.close()
    events = tb_events(tmp_path)
    assert [(e.step, e.value) for e in events.Scalars("a")] == [(7, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("b")] == [(7, 2.5)]


def test_keep_lost_jobs(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    """submitit jobs that end with no result (here killed at once, `timeout_min=0`; on a cluster
    SIGKILL, out of memory) are failed rows of the summary, and the sweep ends with one line,
    not submitit's UncompletedJobError."""
    import submitit

    monkeypatch.setattr(submitit.Job, "_results_timeout_s", 1)  # its wait for a result file
    sweep = tmp_path / "sweep"
    args = [*TINY, f"paths.cache_dir={cache_dir}", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    lost = cli_in_process(
        "--multirun", *args, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0"
    )
    assert lost.returncode == 1 and "Traceback" not in lost.stderr, lost.stderr[-3000:]
    assert lost.stderr.splitlines()[-1].startswith("error: 2 of 2 jobs failed (0_seed=0, 1_seed=1)")
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "failed")]
    assert all(r["error"].startswith("error: ended with no result (submitit: ") for r in rows)


def test_end_searches_without_result(tmp_path: Path, cache_dir: Path) -> None:
    """An Optuna search whose every trial fails: Optuna's sweeper asks for the best trial and
    there is none. Was a ValueError traceback and no summary."""
    sweep = tmp_path / "sweep"
    proc = cli_in_process("hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY,
                          "optimizer.lr=interval(1e6,1e7)", "logger=none", "reports=none",
                          f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]  # each diverged: exit 3, as one would
    assert "error: 2 of 2 jobs failed" in proc.stderr.splitlines()[-1]
    assert "2 jobs, 0 ok, 2 failed" in (sweep / "summary.txt").read_text()
    assert not (sweep / "optimization_results.yaml").exists()
