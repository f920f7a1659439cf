"""A sweep run again into its folder continues it: finished jobs skipped, a killed job resumed to
the figures of one never stopped, failed jobs rerun or kept; any other sweep into the folder is
refused in one line with the folder untouched. On each launcher, and under repeated SIGKILLs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from src import cli as entry
from tests.conftest import (
    ROOT,
    TINY,
    assert_one_line_error,
    cli_in_process,
    read_csv,
    run_cli,
    table_jobs,
    tb_events,
)

# 7 iterations a job, a checkpoint after each: a kill lands mid-training. One thread a job
# whatever the launcher, so every launcher's figures equal the reference sweep's.
SWEEP = [*TINY, "num_threads=1", "reports=none", "callbacks.model_checkpoint.every_n_train_steps=1"]
LRS = "optimizer.lr=0.01,0.05"
# joblib's resume is the load test's (two workers, killed again and again, the same checks).
LAUNCHERS = {
    "basic": [],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
}


def _rows(sweep: Path) -> list[dict[str, str]]:
    return read_csv(sweep / "summary.csv")


def _figures(sweep: Path) -> dict[str, tuple[float, float]]:
    """Each job folder's (test/acc, final train/loss), from its metrics.json."""
    found = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        saved = json.loads(path.read_text())
        found[path.parent.name] = (saved["test/acc"], saved["train/loss"])
    return found


def _losses(folder: Path) -> list[tuple[int, float]]:
    """A job folder's TensorBoard train/loss: (iteration, value) each."""
    return [(e.step, e.value) for e in tb_events(folder / "tensorboard").Scalars("train/loss")]


def _files(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `folder` with its size and modification time (None: a folder)."""
    stats = {p: p.stat() for p in folder.rglob("*")}
    return {
        str(p.relative_to(folder)): (s.st_size, s.st_mtime_ns) if p.is_file() else None
        for p, s in stats.items()
    }


def _start(sweep: Path, *args: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """`python -m src.train --multirun ARGS` in a process group of its own (launcher, workers)."""
    command = [sys.executable, "-m", "src.train", "--multirun", *args, f"hydra.sweep.dir={sweep}"]
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker it started
    proc.wait()


def _kill_at_first_checkpoint(sweep: Path, *args: str, job: str = "*") -> int:
    """The sweep SIGKILLed as soon as a job (whose folder `job` matches) has written a
    checkpoint; the lowest iteration of its checkpoints."""
    proc = _start(sweep, *args)
    while not any(sweep.glob(f"{job}/checkpoints/last.ckpt")) and proc.poll() is None:
        time.sleep(0.01)
    _kill(proc)
    steps = [torch.load(p, weights_only=True)["global_step"]
             for p in sweep.glob("*/checkpoints/last.ckpt")]  # fmt: skip
    return min(steps)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The sweep run once, never stopped (the default launcher)."""
    sweep = tmp_path_factory.mktemp("reference") / "sweep"
    proc = run_cli("--multirun", *SWEEP, f"paths.cache_dir={cache_dir}", LRS,
                   f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "sweep.json").is_file()
    return sweep


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_killed_sweep_resumes_to_the_figures_of_one_never_stopped(
    launcher: str, reference: Path, tmp_path: Path, cache_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    args = [*SWEEP, f"paths.cache_dir={cache_dir}", LRS, *LAUNCHERS[launcher]]
    step = _kill_at_first_checkpoint(sweep, *args)
    assert step > 0 and not _figures(sweep)  # killed in the middle of training

    proc = run_cli("--multirun", *args, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _figures(sweep) == _figures(reference)  # exactly: the same floats
    rows = _rows(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok")]
    resumed = [Path(r["run_dir"]) for r in rows if r["resume"] == "resumed"]
    assert resumed and f"({len(resumed)} resumed" in proc.stdout
    for folder in resumed:  # TensorBoard continues its event folder: every iteration once
        assert "checkpoints/last.ckpt (iteration " in (folder / "train.log").read_text()
        assert _losses(folder) == _losses(reference / folder.name)

    if launcher != "basic":
        return
    # Run again (nothing to train: in this process): every job finished, all skipped, the same rows.
    again = cli_in_process("--multirun", *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(2 skipped)" in again.stdout
    assert [r["test/acc"] for r in _rows(sweep)] == [r["test/acc"] for r in rows]


@pytest.mark.slow  # the reference sweep
def test_another_sweep_into_the_folder_is_refused_and_changes_nothing(
    reference: Path, cache_dir: Path
) -> None:
    """Other swept values, a key set anew, or another sweeper: one line each, the folder
    untouched."""
    before = _files(reference)
    same = [*SWEEP, f"paths.cache_dir={cache_dir}"]
    for change, *said in (
        ([*same, "optimizer.lr=0.01,0.02"], "was started with optimizer.lr=0.01,0.05; this "
         "command sweeps optimizer.lr=0.01,0.02"),
        ([*same, LRS, "seed=3"], "was started without seed; this command sets seed=3"),
        (["hparams_search=optuna", *TINY, "trainer.max_epochs=1"], "was started by",
         "BasicSweeper; this command sweeps with", "OptunaSweeper"),
    ):  # fmt: skip
        proc = cli_in_process("--multirun", *change, f"hydra.sweep.dir={reference}")
        assert proc.returncode == entry.EXIT_BAD_INPUT
        line = assert_one_line_error(proc, str(reference), *said, "use another hydra.sweep.dir")
        assert line.count(";") == 1, line
    assert _files(reference) == before


@pytest.mark.slow
def test_a_killed_optuna_search_asks_the_trials_of_one_never_stopped(
    tmp_path: Path, cache_dir: Path
) -> None:
    """hparams_search=optuna (in memory) killed in its second trial, then run again: its seeded
    sampler, told the finished trial's stored value and the resumed trial's, asks the same third
    trial, which TPE picks from them: the same trials, values and best as never stopped. Another
    sampler seed, or none, is refused in one line."""
    args = [*SWEEP, f"paths.cache_dir={cache_dir}", "hparams_search=optuna",
            "data.num_train_per_class=40",  # 11 iterations a trial: the kill lands in one
            "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=1"]  # fmt: skip
    never = _start(tmp_path / "never", *args)  # meanwhile

    sweep = tmp_path / "killed"
    _kill_at_first_checkpoint(sweep, *args, job="1_*")
    again = run_cli("--multirun", *args, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and never.wait(timeout=300) == 0, again.stderr[-3000:]
    columns = ("job", "name", "status", "val/acc", "train/loss")
    rows = _rows(sweep)
    assert [[r[c] for c in columns] for r in rows] == [
        [r[c] for c in columns] for r in _rows(tmp_path / "never")
    ]
    assert [r["resume"] for r in sorted(rows, key=lambda r: r["job"])] == ["skipped", "resumed", ""]
    best = "optimization_results.yaml"
    assert (sweep / best).read_text() == (tmp_path / "never" / best).read_text()
    # the search itself: each trial's figure is its validation accuracy (test=false), the best
    # of them is Optuna's, over the searched keys alone (data.batch_size is fixed)
    trials = [json.loads(p.read_text()) for p in (tmp_path / "never").glob("*/metrics.json")]
    assert len(trials) == 3 and not any("test/acc" in t for t in trials)
    found = yaml.safe_load((sweep / best).read_text())
    assert found["best_value"] == pytest.approx(max(t["val/acc"] for t in trials))
    assert set(found["best_params"]) == {"optimizer.lr", "optimizer.momentum"}

    before = _files(sweep)
    for typed, said in (
        ("sampler.seed=7", "was started with hydra.sweeper.sampler.seed=1234; this command has "
         "hydra.sweeper.sampler.seed=7"),
        ("sampler.seed=null", "its sampler has no seed"),
        # fewer trials: Optuna's best of those alone would replace the search's (was exit 0)
        ("n_trials=2", "holds 3 trials of an Optuna search, more than hydra.sweeper.n_trials=2"),
    ):  # fmt: skip
        refused = cli_in_process("--multirun", *args, f"hydra.sweeper.{typed}",
                                 f"hydra.sweep.dir={sweep}")  # fmt: skip
        assert_one_line_error(refused, str(sweep), said, code=entry.EXIT_BAD_INPUT)
    assert _files(sweep) == before


def test_an_optuna_search_without_hparams_search_keeps_its_results(
    tmp_path: Path, cache_dir: Path
) -> None:
    """`hydra/sweeper=optuna` with the plugin's defaults (direction an enum, no sampler seed):
    its identity is written (was a warning and no sweep.json), so the same command again is
    refused instead of running new trials over the first search's results."""
    sweep = tmp_path / "search"
    args = ["--multirun", *SWEEP, f"paths.cache_dir={cache_dir}", "hydra/sweeper=optuna",
            "optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.n_trials=1",
            "optimized_metric=train/loss", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    first = cli_in_process(*args)
    assert first.returncode == 0 and "Warning" not in first.stderr, first.stderr[-3000:]
    assert "alembic" not in first.stdout  # its plugins' INFO lines, as Hydra's (7 lines)
    assert (
        json.loads((sweep / "sweep.json").read_text())["search"]["hydra.sweeper.direction"]
        == '"minimize"'
    )
    before = _files(sweep)
    again = cli_in_process(*args)
    assert_one_line_error(again, str(sweep), "its sampler has no seed", code=entry.EXIT_BAD_INPUT)
    assert _files(sweep) == before


@pytest.mark.slow
def test_a_job_an_earlier_start_still_runs_is_not_run_twice(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A submitit or SLURM job outlives the command that launched it. Started again while such
    a job still runs (here: this process holds its folder's lock), the sweep does not train a
    second process into the folder: that job fails in one line naming the holder. Once the
    holder has ended, the same command continues it."""
    import fcntl

    sweep = tmp_path / "sweep"
    args = ["--multirun", *SWEEP, f"paths.cache_dir={cache_dir}", "optimizer.lr=0.01",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    assert run_cli(*args).returncode == 0
    job = sweep / "0"  # one job, no swept key: its number alone
    (job / "metrics.json").unlink()  # as if still training
    with open(job / ".job.lock", "a+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate(0)
        lock.write("process 1234 on node7")
        lock.flush()
        busy = run_cli(*args)
        assert not (job / "metrics.json").exists()
    assert busy.returncode == entry.EXIT_BAD_INPUT
    line = f"error: job folder {job} is still being run by process 1234 on node7, started by "
    assert line in busy.stderr and _rows(sweep)[0]["error"].startswith(line)
    assert json.loads((job / "sweep_job.json").read_text())["status"] == "ok"  # the holder's row
    (job / "metrics.json").write_text("[0.98]")  # JSON, but no job's metrics: it runs again
    row = json.loads((job / "sweep_job.json").read_text())
    (job / "sweep_job.json").write_text(json.dumps({**row, "wall_s": 1000.0}))  # a long start
    # and its row "still being run" was no failure of its own: continued, failures kept or not
    again = run_cli(*args, "sweep.rerun_failed=false")
    assert again.returncode == 0 and (job / "metrics.json").is_file(), again.stderr[-3000:]
    assert _rows(sweep)[0]["resume"] == "resumed"
    assert float(_rows(sweep)[0]["wall_time_s"]) > 1000  # the holder's time and its own


def test_a_file_system_without_locks_runs_the_jobs_unguarded(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS mounted with nolock refuses every lock (ENOLCK): a job runs, with a warning, rather
    than be taken for one an earlier start still runs."""
    import errno
    import fcntl

    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    sweep = tmp_path / "sweep"
    proc = cli_in_process("--multirun", *SWEEP, f"paths.cache_dir={cache_dir}",
                          "optimizer.lr=0.01", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file()
    log = (sweep / "0" / "train.log").read_text()
    assert "cannot be locked (No locks available): not guarded" in log


def test_a_sweep_subdir_of_one_value_fails_the_later_jobs_and_keeps_the_first(
    tmp_path: Path, cache_dir: Path
) -> None:
    """`hydra.sweep.subdir=run` gave every job one folder: job 1 found job 0's metrics.json and
    reported job 0's results as its own. A constant is one line before any job; one that only
    resolves alike (here `${task_name}`) fails the later job in one line, job 0's row kept."""
    sweep, args = tmp_path / "sweep", ["--multirun", *SWEEP, f"paths.cache_dir={cache_dir}", LRS]
    proc = cli_in_process(*args, "hydra.sweep.subdir=run", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(proc, "hydra.sweep.subdir=run names one folder for every job", code=2)
    assert not sweep.exists()
    proc = cli_in_process(*args, "hydra.sweep.subdir=${task_name}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == entry.EXIT_BAD_INPUT, proc.stderr[-3000:]
    line = f"error: job folder {sweep / 'train'} holds job 0 of this sweep: hydra.sweep.subdir="
    assert line + "train names one folder" in proc.stderr
    saved = json.loads((sweep / "train" / "sweep_job.json").read_text())
    assert (saved["job"], saved["status"]) == (0, "ok")
    assert "optimizer.lr=0.01" in saved["overrides"]


@pytest.mark.slow
def test_a_failed_job_runs_again_or_keeps_its_row(tmp_path: Path, cache_dir: Path) -> None:
    """Job 0 diverges (exit 3) with no checkpoint: a row of the summary, and the sweep goes on.
    A re-run runs it again from the start and skips the finished job, here through submitit (the
    launcher may change between starts): each job in its own process, as submitit starts it on a
    cluster node, and the sweep still ends with the diverged code. With sweep.rerun_failed=false
    it is skipped too, its row kept."""
    sweep = tmp_path / "sweep"
    args = [*TINY, "reports=none", f"paths.cache_dir={cache_dir}", "optimizer.lr=1000,0.05",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    first = run_cli("--multirun", *args)
    assert first.returncode == entry.EXIT_DIVERGED, first.stderr[-3000:]
    # The first run: the failed job is a row, the next one still runs (diverged code, 3)
    assert "Traceback" not in first.stdout + first.stderr
    errors = [ln for ln in first.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2, first.stderr
    assert errors[0].startswith("error: training diverged") and "optimizer.lr=1000" in errors[0]
    last = [ln for ln in first.stderr.splitlines() if ln.strip()][-1]
    assert last == errors[1]
    assert last.startswith("error: 1 of 2 jobs failed (0_lr=1000); see ")
    failed, ok = _rows(sweep)
    log = sweep / "0_lr=1000" / "train.log"
    assert (failed["status"], failed["error"], failed["test/acc"]) == ("failed", errors[0], "")
    assert errors[0] in log.read_text()
    assert not (sweep / "0_lr=1000" / "metrics.json").exists()
    assert ok["status"] == "ok" and float(ok["test/acc"]) * 100 == pytest.approx(
        round(float(ok["test/acc"]) * 100)
    )  # a whole number of TINY's 100 test images
    assert (sweep / "1_lr=0.05" / "checkpoints" / "last.ckpt").is_file()
    assert "Sweep: 2 jobs, 1 ok, 1 failed" in first.stdout
    assert table_jobs(first.stdout, "Sweep: 2 jobs") == ["1", "0"]
    assert f"job 0 (0_lr=1000): {errors[0]}" in first.stdout
    assert not (sweep / "seeds.csv").exists() and not (sweep / "sweep.png").exists()

    again = run_cli("--multirun", *args, *LAUNCHERS["submitit_local"])
    assert again.returncode == entry.EXIT_DIVERGED, again.stderr[-3000:]
    assert "Traceback" not in again.stdout + again.stderr
    last = [ln for ln in again.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: 1 of 2 jobs failed (0_lr=1000); see ")
    rows = _rows(sweep)
    assert [(r["status"], r["resume"]) for r in rows] == [("failed", "rerun"), ("ok", "skipped")]
    assert rows[0]["error"] == failed["error"] and rows[1]["test/acc"] == ok["test/acc"]
    assert log.read_text().count(failed["error"]) == 2  # it ran again
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit's own results
    assert log.read_text().count("torch threads: ") == 2  # the submitit job's own log lines

    kept = cli_in_process("--multirun", *args, "sweep.rerun_failed=false")  # trains nothing
    assert kept.returncode == entry.EXIT_DIVERGED, kept.stderr[-3000:]
    rows = _rows(sweep)
    assert [(r["status"], r["resume"]) for r in rows] == [("failed", "skipped"), ("ok", "skipped")]
    assert rows[0]["error"] == failed["error"]
    assert log.read_text().count(failed["error"]) == 2  # not run this time
    assert f"job 0 (0_lr=1000): {failed['error']}" in kept.stdout


@pytest.mark.slow
def test_a_sweep_killed_again_and_again_under_load_ends_as_one_never_stopped(
    tmp_path: Path, cache_dir: Path
) -> None:
    """12 tiny jobs, two at once (joblib), MLflow and TensorBoard on, the launcher and its
    workers stopped by a Ctrl-C once, then SIGKILLed, at random moments (fixed seed), and the
    same command run again until it ends: every job's row, test/acc and final train/loss as in
    the same sweep never stopped (run meanwhile, one job after another, without loggers), and no
    job folder, MLflow run or TensorBoard event duplicated or lost."""
    from mlflow.tracking import MlflowClient

    # 5 iterations a job, a checkpoint after each; 12 jobs from 5 compositions checked at each
    # start (one key of 12 values: 12)
    tiny = [*TINY[:2], "data.num_train_per_class=4", "data.num_test_per_class=2",
            "data.batch_size=8", "num_threads=1", "reports=none", f"paths.cache_dir={cache_dir}",
            "callbacks.model_checkpoint.every_n_train_steps=1", "optimizer.lr=0.01,0.02",
            "data.shuffle_seed=0,1",
            "optimizer.weight_decay=0,0.001,0.002"]  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = ["logger=many_loggers", "~logger.csv", f"logger.mlflow.tracking_uri={uri}",
               f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # fmt: skip
    reference = _start(tmp_path / "reference", *tiny, "logger=none")

    def training() -> bool:  # a job has a checkpoint and no metrics yet
        return any(not (p.parents[1] / "metrics.json").exists()
                   for p in killed.glob("*/checkpoints/last.ckpt"))  # fmt: skip

    # Each kill once a random number of jobs have finished: a random moment later, or (every
    # other kill) as soon as a job has a checkpoint and is still training.
    killed, chance = tmp_path / "killed", random.Random(24)
    done_at_kills: list[int] = []
    for i, target in enumerate([*sorted(chance.sample(range(2, 11), 3)), None]):
        stderr = tmp_path / f"stderr_{i}.txt"
        with stderr.open("w") as out:  # the process writes its own copy
            proc = _start(killed, *tiny, *loggers, stderr=out)
        while target is not None and len(_figures(killed)) < target and proc.poll() is None:
            time.sleep(0.02)
        while target is not None and i % 2 == 0 and not training() and proc.poll() is None:
            time.sleep(0.005)
        if target is None or proc.poll() is not None:
            assert proc.wait(timeout=300) == 0
            break
        time.sleep(chance.uniform(0.0, 0.5) if i % 2 else 0)
        done_at_kills.append(len(_figures(killed)))
        if i == 0:  # the first time a Ctrl-C: the summary of the jobs that ended, then the line
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=120) == 130
            # a row for every job started (its folder's Hydra record written), stopped ones too
            rows = _rows(killed)
            assert len(rows) == len(list(killed.glob("*/.hydra/hydra.yaml")))
            assert {r["status"] for r in rows} <= {"ok", "stopped"}
            last = stderr.read_text().splitlines()[-1]  # after it, no resource tracker's warning
            assert last.startswith("stopped: SIGINT: the sweep stops, "), last
        else:
            _kill(proc)
    assert reference.wait(timeout=300) == 0

    rows, expected = _rows(killed), _rows(tmp_path / "reference")
    columns = ("job", "name", "status", "test/acc", "train/loss")
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in expected]
    figures = _figures(killed)
    assert figures == _figures(tmp_path / "reference") and len(figures) == 12
    assert sorted(p.name for p in killed.iterdir() if p.is_dir()) == sorted(figures)

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    tags = sorted(int(r.data.tags["sweep_job"].split("/")[1]) for r in runs)
    assert tags == list(range(12))  # one MLflow run a job: none duplicated, none lost
    for run in runs:
        folder = run.info.run_name.removeprefix("dev_")
        assert run.info.status == "FINISHED"
        assert run.data.metrics["train/loss"] == figures[folder][1]
        assert run.data.metrics["test/acc"] == figures[folder][0]

    resumed = 0
    for folder in figures:  # TensorBoard: every iteration once, the last the final loss
        losses = _losses(killed / folder)
        assert [step for step, _ in losses] == list(range(len(losses))) and len(losses) >= 5
        assert losses[-1][1] == pytest.approx(figures[folder][1], abs=0)
        resumed += "Resuming from" in (killed / folder / "train.log").read_text()
    print(
        f"\nload: 12 jobs, {len(done_at_kills)} kills (after {done_at_kills} jobs had "
        f"finished), {len(rows)} rows, {resumed} jobs resumed from a checkpoint; rows, "
        "test/acc, train/loss, MLflow runs and TensorBoard events as never stopped"
    )
    assert len(done_at_kills) == 3
