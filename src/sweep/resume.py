"""A sweep run again into its own folder (the same `--multirun` command, the same
`hydra.sweep.dir`) continues where it stopped (docs/sweeps-and-clusters.md).

Two halves, one in each kind of process:

- `start`, in the launching process (`SweepSummary.on_multirun_start`, before Hydra writes
  anything): the sweep's identity (the command line's fixed and swept overrides, the search
  space, the sweeper, the code and config files that change results, the library versions) is
  written to `sweep.json` at the first start. A later start compares: any difference is refused
  in one line (exit 2) and nothing in the folder changes. So only the very same sweep continues
  into existing job folders.
- `continue_job`, inside each job (whichever launcher runs it; `src.train.main`), once Hydra has
  made the job's folder: a finished job (its `metrics.json`) is skipped, a job with a
  `last.ckpt` resumes from it exactly, a job started before without one runs again from the
  start, a failed one too unless `sweep.rerun_failed=false` (then its row is kept). A resumed
  job continues its TensorBoard events (`purge_step`) and its MLflow run (found by its
  `sweep_job` tag).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf, open_dict

from src.config.rules import in_multirun
from src.errors import ConfigError, exit_with
from src.io import write_text
from src.sweep.naming import DEFAULT_SUBDIR, sweep_overrides
from src.sweep.rows import STATUS_FILE, Row, saved_row, text_map

log = logging.getLogger(__name__)

IDENTITY_FILE = "sweep.json"
LOCK_FILE = ".job.lock"  # in each job folder: held by the process running the job
ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "lightning", "numpy")

# The sweep this process may continue: (its folder, its id), once `start` checked its identity
# (the launching process) or the unpickled SweepSummary brought it (a job's own process).
# None: no job continues anything.
checked: tuple[str, str] | None = None
# What each job run in this process did with its folder, by folder: ("resumed" from its
# checkpoint, "skipped", "rerun" from the start, or "held": another job's or start's folder, whose
# row stays) and the row it had saved, if any.
outcomes: dict[str, tuple[str, Row | None]] = {}


# -- The sweep's identity -------------------------------------------------------------------------


def identity(master: DictConfig) -> dict[str, Any]:
    """What makes a sweep's results: swept and fixed overrides (`key: line`), the sweeper, the
    digest of every file of src/ and conf/, and the versions of the libraries that compute."""
    from importlib.metadata import version

    swept, fixed = {}, {}
    for o in sweep_overrides(master):
        if o.key_or_group.startswith("sweep."):  # how to continue, not what is computed
            continue
        (swept if o.is_sweep_override() else fixed)[o.key_or_group] = o.input_line
    files = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")])
    sweeper = str(OmegaConf.select(master, "hydra.sweeper._target_", default=""))
    # An Optuna search continues by asking its seeded sampler again: the same answers give the
    # same trials, so what decides them is part of the sweep (n_trials may grow, as epochs do).
    optuna = "optuna" in sweeper.lower()
    search = {}
    if optuna:  # the plugin's own default direction is an enum: as its name
        settings = OmegaConf.to_container(master.hydra.sweeper, resolve=True, enum_to_str=True)
        for key in ("sampler", "direction", "n_jobs"):
            value = settings.get(key)
            for name, v in value.items() if isinstance(value, dict) else [("", value)]:
                search[".".join(filter(None, ("hydra.sweeper", key, name)))] = json.dumps(v)
    return {
        "sweeper": sweeper,
        "swept": swept,
        "fixed": dict(sorted(fixed.items())),
        "search": search,
        "code": {
            str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files
        },
        "versions": {name: version(name) for name in LIBRARIES},
    }


def difference(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first way `now` differs from `was` (two identities), in words; None if none."""
    if was["sweeper"] != now["sweeper"]:
        return f"was started by {was['sweeper']}; this command sweeps with {now['sweeper']}"
    old, new = {**was["swept"], **was["fixed"]}, {**now["swept"], **now["fixed"]}
    for key in dict.fromkeys([*now["swept"], *was["swept"], *new, *old]):
        if old.get(key) != new.get(key):
            said = f"with {old[key]}" if key in old else f"without {key}"
            verb = "sweeps" if key in now["swept"] else "sets"
            return f"was started {said}; this command " + (
                f"{verb} {new[key]}" if key in new else f"does not set {key}"
            )
    for key in sorted({*was.get("search", {}), *now["search"]}):
        old, new = was.get("search", {}).get(key), now["search"].get(key)
        if old != new:
            return f"was started with {key}={old}; this command has {key}={new}"
    if list(was["swept"]) != list(now["swept"]):
        return (
            f"was started sweeping {', '.join(was['swept'])} in that order; this command sweeps "
            f"{', '.join(now['swept'])}"
        )
    for name, versions in (("code", "code"), ("library", "versions")):
        old, new = was[versions], now[versions]
        for key in sorted({*old, *new}):
            if old.get(key) != new.get(key):
                if name == "library":
                    return f"was started with {key} {old.get(key)}; this command runs {new[key]}"
                state = "is new" if key not in old else "is gone" if key not in new else "changed"
                return f"was started with other code ({key} {state} since)"
    return None


def refuse(sweep_dir: Path, why: str) -> NoReturn:
    # 2: src.cli.EXIT_BAD_INPUT (src.sweep sits below src.cli)
    exit_with(f"error: sweep folder {sweep_dir} {why}: use another hydra.sweep.dir", 2)


def start(master: DictConfig, sweep_dir: Path) -> str:
    """The sweep's id: a new one, recorded with its identity in `sweep.json`, for a new sweep
    folder; the recorded one for the same sweep run again. Exits 2 with one line, the folder as
    it was, for any other sweep into an existing folder."""
    global checked
    now = identity(master)
    path = sweep_dir / IDENTITY_FILE
    if path.is_file():
        seed = OmegaConf.select(master, "hydra.sweeper.sampler.seed", default=None)
        trials = OmegaConf.select(master, "hydra.sweeper.n_trials", default=None)
        held = len(list(sweep_dir.glob("*/.hydra")))  # the trials already started, 0 to held-1
        if "optuna" in now["sweeper"].lower() and seed is None:
            refuse(sweep_dir, "holds an Optuna search already started, and its sampler has no "
                   "seed (hydra.sweeper.sampler.seed=null), so its trials cannot be asked "
                   "again")  # fmt: skip
        if "optuna" in now["sweeper"].lower() and isinstance(trials, int) and trials < held:
            # Optuna would judge the best of the first trials alone, over the search's results
            refuse(sweep_dir, f"holds {held} trials of an Optuna search, more than "
                   f"hydra.sweeper.n_trials={trials} (it may grow, not shrink)")  # fmt: skip
        try:
            was = json.loads(path.read_text())  # read as data: each field of its type
            texts = [was.get(k, {}) for k in ("swept", "fixed", "search", "code", "versions")]
            if not (
                re.fullmatch(r"[0-9a-f]{32}", str(was.get("id")))
                and isinstance(was.get("sweeper"), str)
                and all(map(text_map, texts))
            ):
                raise ValueError("not a sweep's identity")
        except (OSError, ValueError, AttributeError) as err:
            refuse(sweep_dir, f"has an unreadable {IDENTITY_FILE} ({err})")
        why = difference(was, now)
        if why:
            refuse(sweep_dir, why)
        sweep_id = was["id"]
    else:
        if any(sweep_dir.glob(f"*/{STATUS_FILE}")) or any(sweep_dir.glob("*/.hydra")):
            refuse(sweep_dir, f"holds the jobs of a sweep with no {IDENTITY_FILE} to compare with")
        sweep_id = uuid.uuid4().hex
        write_text(path, json.dumps({"id": sweep_id, **now}, indent=2) + "\n")
    checked = (str(sweep_dir.resolve()), sweep_id)
    return sweep_id


# -- Each job -------------------------------------------------------------------------------------


def continue_job(cfg: DictConfig) -> dict[str, float] | None:
    """In a job of a sweep `start` checked: the metrics of a job that needs no run (finished:
    its `metrics.json`; failed with `sweep.rerun_failed=false`: none) to return instead of
    training, else None, with `cfg` set to continue what an earlier launch left in the job's
    folder (its `last.ckpt`, TensorBoard events and MLflow run)."""
    from hydra.core.hydra_config import HydraConfig

    if checked is None or not in_multirun():
        return None
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    if str(folder.resolve().parent) != checked[0]:
        return None
    _claim(folder)
    saved = _saved(folder)
    if saved is not None and saved.job != hydra.job.num:  # a hydra.sweep.subdir of one value
        outcomes[str(folder)] = ("held", saved)
        raise ConfigError(
            f"job folder {folder} holds job {saved.job} of this sweep: hydra.sweep.subdir="
            f"{hydra.sweep.subdir} names one folder for several jobs; make it name each job's "
            f"(the default, {DEFAULT_SUBDIR}, does)"
        )
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):  # none yet, or cut short or edited by hand: the job runs again
        metrics = None
    if isinstance(metrics, dict):
        outcomes[str(folder)] = ("skipped", saved if saved and saved.status == "ok" else None)
        log.info("Finished by an earlier start of this sweep (metrics.json): skipped.")
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    keep_failed = OmegaConf.select(cfg, "sweep.rerun_failed", default=True) is False
    held = saved is not None and BUSY in (saved.error or "")  # by another start: not its failure
    if saved is not None and saved.status == "failed" and keep_failed and not held:
        outcomes[str(folder)] = ("skipped", saved)
        log.info("Failed in an earlier start of this sweep: kept so (sweep.rerun_failed=false).")
        return {}
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    last = Path(str(dirpath or folder / "checkpoints")) / "last.ckpt"
    began = saved is not None or last.is_file() or (folder / "config.yaml").is_file()
    tag = f"{checked[1]}/{hydra.job.num}"
    with open_dict(cfg):
        if last.is_file():
            cfg.ckpt_path = str(last)  # src.train continues the TensorBoard events from it
        for node in (OmegaConf.select(cfg, "logger", default=None) or {}).values():
            target = str((node or {}).get("_target_", ""))
            if target.endswith("MLFlowLogger"):
                tags = OmegaConf.to_container(node, resolve=True).get("tags") or {}
                node.tags = {**tags, "sweep_job": tag}
                if began:
                    node.run_id = _mlflow_run(node, tag)
            elif target.endswith("TensorBoardLogger") and began and not last.is_file():
                node.purge_step = 0  # the events of the start that left no checkpoint: hidden
    if began:
        outcomes[str(folder)] = ("resumed" if last.is_file() else "rerun", saved)
        if not last.is_file():
            log.info("Begun by an earlier start of this sweep, no checkpoint: from the start.")
    return None


# The lock of the job this process runs: released when the job ends, or with the process,
# however that ends.
_held: list[Any] = []


def release_job() -> None:
    """Release the lock `continue_job` took on this process's job folder, if any."""
    for lock in _held:
        lock.close()
    _held.clear()


BUSY = "is still being run by"  # a job's failure that says another process held its folder


def _claim(folder: Path) -> None:
    """Hold the job folder's lock while this process runs its job. A submitit or SLURM job
    outlives the command that launched it: the same sweep started again while it still runs
    would train a second process into the same folder. That job fails in one line instead
    (rerun later, it is skipped once the first has finished, or resumed)."""
    import errno
    import fcntl
    import os
    import socket

    release_job()
    lock = open(folder / LOCK_FILE, "a+")  # held open while the job runs
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # POSIX locks hold across NFS clients
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EAGAIN):  # no locks here (NFS mounted nolock)
            log.warning("Job folder %s cannot be locked (%s): not guarded against a second "
                        "start running it at once.", folder, err.strerror)  # fmt: skip
            lock.close()
            return
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        outcomes[str(folder)] = ("held", None)
        raise ConfigError(
            f"job folder {folder} {BUSY} {holder}, started by an earlier start of this sweep: "
            "let it end (or stop it), then run the sweep again"
        ) from None
    lock.truncate(0)
    lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    _held.append(lock)


def holder(folder: Path) -> str | None:
    """Who holds the job folder's lock: a job still running in another process (`_claim`'s
    line), or None."""
    import errno
    import fcntl

    if any(Path(lock.name).resolve().parent == folder.resolve() for lock in _held):
        return None  # this process's own job (closing a probe's file would release its lock)
    try:
        with open(folder / LOCK_FILE) as lock:
            try:
                fcntl.lockf(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as err:
                held = err.errno in (errno.EACCES, errno.EAGAIN)  # else: no locks here
                return (lock.read().strip() or "another process") if held else None
    except OSError:  # no lock file: never run here
        pass
    return None


def _saved(folder: Path) -> Row | None:
    try:
        return saved_row(json.loads((folder / STATUS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _mlflow_run(node: DictConfig, tag: str) -> str | None:
    """The MLflow run an earlier start of this job made (by its `sweep_job` tag), if any."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(node.tracking_uri))
    experiment = client.get_experiment_by_name(str(node.experiment_name))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.sweep_job = '{tag}'", max_results=1
    )
    return runs[0].info.run_id if runs else None
