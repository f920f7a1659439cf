"""Hydra's parallel and cluster launchers: joblib (worker processes on this machine), submitit
(local processes here; SLURM array jobs on a cluster), each job's torch thread count, and a sweep
summary that gets every job's row from jobs run in other processes. Sweeps through the CLI on
each launcher: test_sweep.py (joblib) and test_sweep_resume.py (basic, submitit_local)."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf

from src import cli as entry
from src.compat import BASIC_SWEEPER
from src.config.compose import preflight
from src.errors import JobFailed
from src.runtime.build import CONFIG_DIR
from src.runtime.threads import (
    JOBLIB,
    SUBMITIT_LOCAL,
    SUBMITIT_SLURM,
    choose_threads,
    configure_threads,
)
from src.sweep.summary import STATUS_FILE, SweepSummary
from tests.conftest import read_csv, run_cli

BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}


def _joblib(n_jobs: int) -> dict:
    return {"_target_": JOBLIB, "n_jobs": n_jobs}


# -- The thread arithmetic ----------------------------------------------------------------------


def test_the_launcher_targets_are_the_plugins_own() -> None:
    assert JOBLIB == JobLibLauncherConf._target_
    assert SUBMITIT_LOCAL == LocalQueueConf._target_
    assert SUBMITIT_SLURM == SlurmQueueConf._target_


def test_a_plain_run_and_a_sequential_sweep_keep_torchs_default() -> None:
    for launcher, multirun in ((None, False), (_joblib(2), False), (BASIC, True), (None, True)):
        assert choose_threads(None, launcher, multirun, cores=2).threads is None
    unknown = choose_threads(None, {"_target_": "x.RayLauncher"}, True, cores=2)
    assert unknown.threads is None and "set num_threads" in unknown.reason


def test_an_explicit_count_is_used_as_is() -> None:
    for launcher in (None, _joblib(2), {"_target_": SUBMITIT_SLURM, "cpus_per_task": 8}):
        choice = choose_threads(3, launcher, multirun=True, cores=2)
        assert (choice.threads, choice.reason) == (3, "num_threads=3")


def test_joblib_jobs_keep_joblibs_cap_unless_fewer_run_at_once() -> None:
    """Joblib's workers start with cores / workers threads (what a job gets on this machine:
    test_sweep.py::test_a_parallel_sweep_over_seeds_is_summarised); a sweep with fewer jobs
    than workers shares the cores among the jobs it runs."""

    def threads(n_jobs: int, cores: int, batch: int | None = None) -> int | None:
        return choose_threads(None, _joblib(n_jobs), True, cores, batch).threads

    assert threads(2, cores=16) is None and threads(2, cores=16, batch=2) is None  # joblib's
    assert threads(8, cores=16, batch=2) == 8  # a 2-job sweep runs 2 at once, not 8
    assert threads(8, cores=16, batch=3) == 5  # rounded down: never more threads than cores
    assert threads(8, cores=2, batch=4) == 1  # at least one


def test_submitit_jobs_use_their_cpus_per_task() -> None:
    slurm = {"_target_": SUBMITIT_SLURM, "cpus_per_task": 8, "tasks_per_node": 1}
    assert choose_threads(None, slurm, True, cores=64, batch=100).threads == 8
    # No cpus_per_task: the cores SLURM let the job run on (its affinity mask).
    assert choose_threads(None, {**slurm, "cpus_per_task": None}, True, cores=4).threads == 4
    # The local executor starts every job of the batch at once on this machine.
    local = {"_target_": SUBMITIT_LOCAL, "cpus_per_task": None, "tasks_per_node": 1}
    assert choose_threads(None, local, True, cores=2, batch=2).threads == 1
    assert choose_threads(None, local, True, cores=16, batch=4).threads == 4
    assert choose_threads(None, {**local, "tasks_per_node": 2}, True, 16, batch=4).threads == 2
    assert choose_threads(None, {**local, "cpus_per_task": 3}, True, 16, batch=4).threads == 3


def test_a_single_run_leaves_torchs_threads_alone(
    tiny_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # and back as it was afterwards
    before = torch.get_num_threads()
    assert configure_threads(tiny_cfg).threads is None
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    try:
        tiny_cfg.num_threads = 1
        assert configure_threads(tiny_cfg).threads == 1  # interop may be fixed already: no error
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"  # for Lightning's DDP processes
        # the next job of a sweep in this process, left automatic: torch's default again (it
        # trained on with the earlier job's count, while the log said torch's default)
        tiny_cfg.num_threads = None
        assert configure_threads(tiny_cfg).threads is None
        assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
        # DDP: what Lightning's processes use, said before they start (the log said 2, not 1)
        tiny_cfg.trainer.accelerator, tiny_cfg.trainer.devices = "cpu", 2
        choice = configure_threads(tiny_cfg)
        assert choice.threads == max(len(os.sched_getaffinity(0)) // 2, 1)
        assert (
            "/ 2 at once: DDP processes" in choice.reason
            and torch.get_num_threads() == choice.threads
        )
        assert configure_threads(tiny_cfg) == choice  # again: the same share (was the default)
        tiny_cfg.trainer.devices = 1  # one process again: torch's default back
        assert configure_threads(tiny_cfg).threads is None
        assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    finally:
        torch.set_num_threads(before)


# -- Preflight and the project's SLURM preset ---------------------------------------------------


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "submitit_slurm", "slurm"])
def test_preflight_composes_sweeps_on_each_launcher(tmp_path: Path, launcher: str) -> None:
    argv = ["--multirun", f"hydra/launcher={launcher}", "optimizer.lr=0.01,0.05"]
    preflight([*argv, f"hydra.sweep.dir={tmp_path / 'sweep'}"], CONFIG_DIR, "config")


@pytest.mark.slow
def test_the_slurm_preset_submits_an_array_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI, the plugin and submitit up to `sbatch`: a stand-in `sbatch` keeps the
    script it is given and refuses it (no cluster here), so the sweep ends there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "job.sbatch"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that srun exists
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho refused >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    proc = run_cli("--multirun", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
                   "hydra.launcher.setup=[module load cuda]", "optimizer.lr=0.01,0.02,0.05",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "refused" in proc.stderr, proc.stderr[-2000:]
    text = script.read_text()
    for line in ("--partition=debug", "--array=0-2%3", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--time=240", "--mem=32GB", "--nodes=1", "--ntasks-per-node=1"):  # fmt: skip
        assert f"#SBATCH {line}\n" in text, text
    assert "\nmodule load cuda\n" in text and "-m submitit.core._submit" in text


# -- Rows of jobs run in other processes --------------------------------------------------------


def _job(sweep: Path, num: int, folder: str) -> DictConfig:
    hydra = {
        "mode": RunMode.MULTIRUN,
        "job": {"num": num},
        "runtime": {"output_dir": str(sweep / folder)},
        "sweep": {"dir": str(sweep)},
        "sweeper": {"_target_": BASIC_SWEEPER},
    }
    (sweep / folder).mkdir(parents=True)
    return OmegaConf.create({"hydra": hydra})


def test_rows_come_back_from_other_processes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A worker's copy of the callback writes the rows; the launching process reads them, keeps
    this sweep's only, and exits with a stopped job's code once every job has ended."""
    sweep = tmp_path / "sweep"
    master = OmegaConf.create({"hydra": {"overrides": {"task": ["seed=0,1,2"]}}})
    parent = SweepSummary()
    parent.on_multirun_start(master)
    old = sweep / "old" / STATUS_FILE  # a previous sweep's job in the same folder
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"sweep": "previous", "job": 2, "values": {}, "overrides": []}))

    worker = pickle.loads(pickle.dumps(parent))  # as a launcher hands it to another process
    worker.pid = -1
    done = _job(sweep, 0, "0_seed=0")
    (sweep / "0_seed=0" / "metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    ok = JobReturn(overrides=["seed=0"], status=JobStatus.COMPLETED, _return_value=None)
    worker.on_job_end(done, job_return=ok)
    stopped = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    stopped.return_value = JobFailed("stopped: SIGTERM", entry.EXIT_SIGNAL[signal.SIGTERM])
    worker.on_job_end(_job(sweep, 1, "1_seed=1"), job_return=stopped)  # no exit in a worker
    assert stopped.status == JobStatus.COMPLETED  # goes back to the sweeper: no re-raise
    assert parent.rows == {}

    with pytest.raises(SystemExit) as ended:
        parent.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert ended.value.code == 143
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["seed"], r["status"], r["test/acc"]) for r in rows] == [
        ("0", "0", "ok", "0.5"),
        ("1", "1", "stopped", ""),
    ]
    said = capsys.readouterr().err
    assert "stopped: the sweep stops after job 1 of 3" in said
    assert said.rstrip().endswith("; run the same command again to resume it")
