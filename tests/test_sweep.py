"""Sweeps people can read: summary.csv, the printed tables, seeds, sweep.png, readable job folders,
and a failed job that is a row of the summary instead of the end of the sweep."""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from src import cli as entry
from src.errors import DataError, JobFailed
from src.sweep import naming
from src.sweep.naming import MAX_NAME, job_name, plan_of, sweep_subdir
from src.sweep.summary import SweepSummary
from tests.conftest import TINY, read_csv, run_cli, table_jobs


@pytest.mark.slow
def test_a_parallel_sweep_over_seeds_is_summarised(tmp_path: Path, cache_dir: Path) -> None:
    """Two jobs at once (joblib): every row gathered from the workers. (A new MLflow store
    under joblib: the load test of test_sweep_resume.py.)"""
    sweep = tmp_path / "sweep"
    proc = run_cli("--multirun", *TINY, "test=true", "optimizer.lr=0.01,0.05", "seed=0,1",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr

    names = ["0_lr=0.01,seed=0", "1_lr=0.01,seed=1", "2_lr=0.05,seed=0", "3_lr=0.05,seed=1"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    rows = read_csv(sweep / "summary.csv")
    assert list(rows[0])[:4] == ["job", "name", "optimizer.lr", "seed"]
    swept = [("0.01", "0"), ("0.01", "1"), ("0.05", "0"), ("0.05", "1")]
    for i, (row, name, (lr, seed)) in enumerate(zip(rows, names, swept)):
        assert (row["job"], row["optimizer.lr"], row["seed"]) == (str(i), lr, seed)
        assert (row["status"], row["error"], row["val/acc"]) == ("ok", "", "")
        assert Path(row["run_dir"]) == sweep / name and name.endswith(row["name"])
        assert f"lr: {lr}" in (sweep / name / ".hydra" / "config.yaml").read_text()
        assert (sweep / name / "checkpoints" / "last.ckpt").is_file()
        saved = json.loads((sweep / name / "metrics.json").read_text())
        assert {f"optimizer.lr={lr}", f"seed={seed}", "trainer=cpu"} <= set(saved["overrides"])
        assert row["overrides"].split() == saved["overrides"]
        assert float(row["test/acc"]) == pytest.approx(saved["test/acc"])
        assert float(row["train/loss"]) == pytest.approx(saved["train/loss"])
        assert float(row["wall_time_s"]) > 0
        # each job's threads: joblib's cap, cores / workers (1 on a 2-core machine), unless the
        # launching process sets OMP_NUM_THREADS (tests/conftest.py does), which joblib passes on
        cores = joblib.cpu_count()
        threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(cores // 2, 1)
        choice = f"torch threads: {threads} ({cores} cores / 2 at once: hydra.launcher.n_jobs=2)"
        log = (sweep / name / "train.log").read_text()
        assert f"{choice}; intra-op {threads}," in log, log[:2000]

    # The printed table: every job, best test accuracy first.
    assert "Sweep: 4 jobs, 4 ok, 0 failed; by test/acc, highest first" in proc.stdout
    best_first = sorted(rows, key=lambda r: (-float(r["test/acc"]), int(r["job"])))
    assert table_jobs(proc.stdout, "Sweep: 4 jobs") == [r["job"] for r in best_first]

    # The seeds table: one group per learning rate, over both seeds.
    assert "Over seed=0,1 (grouped by lr;" in proc.stdout
    seeds = {(r["optimizer.lr"], r["metric"]): r for r in read_csv(sweep / "seeds.csv")}
    assert set(seeds) == {(lr, m) for lr in ("0.01", "0.05") for m in ("test/acc", "train/loss")}
    for lr, jobs in (("0.01", rows[:2]), ("0.05", rows[2:])):
        acc = [float(r["test/acc"]) for r in jobs]
        got = seeds[(lr, "test/acc")]
        assert int(got["n"]) == 2
        assert float(got["mean"]) == pytest.approx(statistics.fmean(acc))
        assert float(got["std"]) == pytest.approx(statistics.stdev(acc))
        assert (float(got["min"]), float(got["max"])) == pytest.approx((min(acc), max(acc)))
        assert f"{statistics.fmean(acc):.4f}" in proc.stdout
    assert (sweep / "sweep.png").stat().st_size > 0
    assert "Over seed=0,1" in (sweep / "summary.txt").read_text()

    # TensorBoard pointed at the sweep folder lists each run by its job folder's name.
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    runs = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(sweep)).Runs()
    assert sorted(runs) == [f"{name}/tensorboard" for name in names]


def test_run_job_exits_in_a_single_run_and_raises_in_a_sweep(
    tiny_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def bad_data() -> None:
        raise DataError("data.root=/nowhere: no such folder")

    with pytest.raises(SystemExit) as stopped:
        entry.run_job(bad_data)
    assert stopped.value.code == entry.EXIT_BAD_INPUT
    capsys.readouterr()

    instance = HydraConfig.instance()  # as inside a multirun job, the run mode back afterwards
    monkeypatch.setattr(instance, "cfg", instance.cfg)
    with read_write(tiny_cfg.hydra):
        tiny_cfg.hydra.mode = RunMode.MULTIRUN
    instance.set_config(tiny_cfg)
    with pytest.raises(JobFailed) as known:
        entry.run_job(bad_data)
    assert (known.value.line, known.value.code) == ("error: data.root=/nowhere: no such folder", 2)
    assert capsys.readouterr().err == "error: data.root=/nowhere: no such folder\n"

    def bug() -> None:
        raise KeyError("oops")

    with pytest.raises(JobFailed) as unexpected:
        entry.run_job(bug)
    assert (unexpected.value.line, unexpected.value.code) == ("error: KeyError: 'oops'", 1)
    assert "Traceback" in capsys.readouterr().err  # a bug still shows where it is


def test_job_names_are_short_readable_folder_names() -> None:
    assert job_name({"optimizer.lr": "0.05", "seed": "1"}) == "lr=0.05,seed=1"
    assert job_name({"data": "folder", "data.root": "/tmp/x/GOOD/"}) == "data=folder,root=GOOD"
    assert job_name({"data.seed": "1", "seed": "2"}) == "data.seed=1,seed=2"  # same last name
    assert job_name({"model.sizes": "[8, 16]"}) == "sizes=8_16"
    assert job_name({}) == ""
    sampled = {"optimizer.lr": "0.0034567890123456", "optimizer.momentum": "0.05"}
    assert job_name(sampled) == "lr=0.003457,momentum=0.05"  # an Optuna trial's values
    long = [job_name({f"k{i}": "x" * 30 for i in range(10)} | {"seed": s}) for s in "12"]
    assert all(len(n) <= MAX_NAME for n in long) and long[0] != long[1]
    assert all("/" not in n and n.isascii() for n in long)


def test_the_job_folder_is_the_number_then_the_swept_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Joblib and submitit unpickle the callback in the job's process before Hydra resolves the
    job's folder there: the plan comes with it."""
    monkeypatch.setattr(naming, "current", None)  # as it was, afterwards
    master = OmegaConf.create({"hydra": {"overrides": {"task": ["seed=range(12)", "test=false"]}}})
    summary = SweepSummary()
    summary.on_multirun_start(master)
    job = {"hydra": {"job": {"num": 3}, "overrides": {"task": ["seed=3", "test=false"]}}}
    naming.current = None  # a fresh process
    assert sweep_subdir(_root_=OmegaConf.create(job)) == "3"  # nothing known: the number
    pickle.loads(pickle.dumps(summary))
    assert sweep_subdir(_root_=OmegaConf.create(job)) == "03_seed=3"  # 12 jobs: two digits
    monkeypatch.setattr(naming, "current", plan_of(master))  # the launching process's plan
    assert sweep_subdir(_root_=OmegaConf.create(job)) == "03_seed=3"


def test_a_search_that_grows_keeps_its_folder_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Optuna search run again with 11 trials after 10: its folders are numbered 0 to 9,
    and 11 trials would number them 00 to 10: every trial ran again beside the old folders,
    and the next start was refused (21 trials held)."""
    from src.sweep import resume, summary

    for module, name in ((naming, "current"), (resume, "checked"), (summary, "launching")):
        monkeypatch.setattr(module, name, None)  # as they were, afterwards
    sweeper = {
        "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "sampler": {"seed": 1},
        "params": {"optimizer.lr": "interval(0.001, 0.1)"},
    }
    hydra = {"sweep": {"dir": str(tmp_path)}, "overrides": {"task": ["seed=1"]}}  # fmt: skip
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {**hydra, "sweeper": {
        **sweeper, "n_trials": 10}}}))  # fmt: skip
    for trial in range(10):
        (tmp_path / f"{trial}_lr=0.0{trial}" / ".hydra").mkdir(parents=True)
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {**hydra, "sweeper": {
        **sweeper, "n_trials": 11}}}))  # fmt: skip
    for trial, named in ((3, "3_lr=0.03"), (10, "10_lr=0.1")):
        job = {"job": {"num": trial}, "overrides": {"task": [f"optimizer.{named.split('_')[1]}"]}}
        assert sweep_subdir(_root_=OmegaConf.create({"hydra": job})) == named


def test_an_optuna_search_plans_its_trials() -> None:
    params = {
        "optimizer.lr": "tag(log, interval(0.001, 0.1))",
        "data.batch_size": "choice(64, 128)",
    }
    master = {"overrides": {"task": ["seed=1"]}, "sweeper": {"params": params, "n_trials": 20}}
    plan = plan_of(OmegaConf.create({"hydra": master}))
    assert (plan.keys, plan.jobs) == (["optimizer.lr", "data.batch_size"], 20)
    # a key given again: Hydra sweeps its last value (was "1 of 4 jobs run" for one job)
    master = {"overrides": {"task": ["seed=0,1", "optimizer.lr=0.1,0.2", "seed=2"]}}
    plan = plan_of(OmegaConf.create({"hydra": master}))
    assert (plan.keys, plan.jobs) == (["optimizer.lr"], 2)
    # ... by the key as written, as Hydra's basic sweeper does: ++seed is another (2 jobs)
    master = {"overrides": {"task": ["seed=0,1", "++seed=5"]}}
    plan = plan_of(OmegaConf.create({"hydra": master}))
    assert (plan.keys, plan.jobs) == (["seed"], 2)


def test_no_seed_table_before_any_job_completed(tmp_path: Path) -> None:
    """A sweep stopped before any job ended printed `Over seed= (...)` with no seed, and wrote
    seeds.csv a row of `-` in its metric column."""
    from src.sweep.rows import Row

    summary = SweepSummary()
    summary.keys = ["optimizer.lr", "seed"]
    stopped = Row(0, {"optimizer.lr": "0.1", "seed": "0"}, status="stopped")
    assert summary.seeds(tmp_path, [stopped]) == ""
    assert not (tmp_path / "seeds.csv").exists()


def test_the_summary_reads_each_metric_a_callback_may_watch(tmp_path: Path) -> None:
    """val/loss was missing from the summary; a fork's metric listed in VALIDATION_METRICS
    (src/model/module.py) joins it there, better higher or lower as listed."""
    from src.sweep.rows import METRICS, read_metrics

    saved = {"test/acc": 0.9, "val/acc": 0.8, "val/loss": 0.5, "train/loss": 0.1, "epochs": 2}
    (tmp_path / "metrics.json").write_text(json.dumps(saved))
    assert read_metrics(tmp_path) == {k: v for k, v in saved.items() if k != "epochs"}
    assert (METRICS["val/acc"], METRICS["val/loss"]) == (True, False)


def test_a_stop_names_the_jobs_other_processes_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """submitit's jobs outlive the command that launched them: a signal to that command alone
    marked them `stopped` while they trained on. A job folder whose lock another process holds
    is `running`, and the stop line says to run the sweep again once they end."""
    for num, lr in ((0, "0.1"), (1, "0.2")):
        folder = tmp_path / f"{num}_lr={lr}" / ".hydra"
        folder.mkdir(parents=True)
        job = {"job": {"num": num}, "overrides": {"task": [f"optimizer.lr={lr}"]}}
        OmegaConf.save({"hydra": job}, folder / "hydra.yaml")
    hold = "f = open(sys.argv[1], 'a+'); fcntl.lockf(f, fcntl.LOCK_EX); f.write('process 7 on n1')"
    hold = f"import fcntl, sys, time; {hold}; f.flush(); print(); time.sleep(60)"
    lock = tmp_path / "0_lr=0.1" / ".job.lock"
    holding = subprocess.Popen(
        [sys.executable, "-c", hold, lock], stdout=subprocess.PIPE, text=True
    )
    try:
        holding.stdout.readline()  # it holds the lock
        summary = SweepSummary()
        summary.keys, summary.planned, summary.detached = ["optimizer.lr"], 2, True  # submitit
        summary.gather_unsaved(tmp_path, "stopped: SIGINT: stopped with the sweep", 130)
        with pytest.raises(SystemExit) as stop:
            summary.finish(tmp_path, interrupted=("SIGINT", 130))
    finally:
        holding.kill()
    out = capsys.readouterr()
    assert stop.value.code == 130
    assert "Sweep: 2 jobs, 0 ok, 0 failed, 1 stopped, 1 running" in out.out
    assert "job 0 (0_lr=0.1): still run by process 7 on n1" in out.out
    assert out.err.strip().endswith(
        "the sweep stops, 0 of 2 jobs ended, 1 still running in other processes (see "
        f"{tmp_path / 'summary.csv'}); run the same command again once they end, to resume it"
    )
    assert [r["status"] for r in read_csv(tmp_path / "summary.csv")] == ["running", "stopped"]


def test_a_search_is_tabled_by_the_metric_it_optimises(tmp_path: Path) -> None:
    """`optimized_metric=train/loss` (hydra/sweeper=optuna): its table was sorted by test/acc."""
    from src.sweep.rows import Row

    summary = SweepSummary()
    summary.keys, summary.metric = ["optimizer.lr"], "train/loss"
    rows = [Row(n, {"optimizer.lr": lr}, status="ok") for n, lr in enumerate(("0.1", "0.2"))]
    rows[0].metrics, rows[1].metrics = (
        {"test/acc": 0.9, "train/loss": 0.5},
        {"test/acc": 0.8, "train/loss": 0.2},
    )
    text = summary.summary_text(tmp_path, rows)
    assert "by train/loss, lowest first" in text
    assert table_jobs(text, "Sweep:") == ["1", "0"]
