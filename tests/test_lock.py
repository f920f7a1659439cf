"""requirements.lock is what `make` installs: the running environment holds the locked versions,
the lock is portable (CPU torch, no CUDA, no local paths), and `pip install .` stays lean."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"

TORCH = "2.13.0"
# The optional stacks, which only extras may bring in.
OPTIONAL = {
    "mlflow",
    "mlflow-skinny",
    "sqlalchemy",
    "alembic",
    "onnx",
    "onnxruntime",
    "optuna",
    "hydra-optuna-sweeper",
    "submitit",
    "hydra-submitit-launcher",
    "joblib",
    "hydra-joblib-launcher",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(?:#.*)?$")


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    """Name -> version of each distribution, the first on sys.path winning as on import."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_every_locked_package_that_is_installed_has_the_locked_version() -> None:
    pins, have = locked(), installed()
    # a local label (torch's +cpu) is the same release: pip's == matches it too
    wrong = {
        name: (version, have[name])
        for name, version in pins.items()
        if name in have and version not in (have[name], have[name].split("+")[0])
    }
    assert not wrong, f"installed versions differ from the lock (locked, installed): {wrong}"
    assert "torch" in have and "lightning" in have


def test_lock_pins_the_cpu_torch_is_portable_and_says_how_it_was_made() -> None:
    pins, text = locked(), LOCK.read_text()
    assert pins.get("torch") == TORCH
    makefile_torch = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", MAKEFILE.read_text(), re.M)
    assert makefile_torch and makefile_torch[1] == TORCH
    cuda = [n for n in pins if n.startswith("nvidia-") or "cuda" in n or n == "triton"]
    assert not cuda, f"CUDA packages in the lock: {cuda}"
    assert "make lock" in "\n".join(text.splitlines()[:8])
    lines = [line.strip() for line in text.splitlines()]
    assert not [line for line in lines if line.startswith("-")]  # no index, find-links, -e
    for bad in ("file://", " @ ", "/opt/", "/work/", "/tmp/", "+cpu"):
        assert bad not in text, f"{bad!r} in requirements.lock"
    assert len(pins) == sum(1 for line in text.splitlines() if PIN.match(line)) > 50


def test_lock_covers_every_requirement_within_its_range() -> None:
    """A pyproject edit without `make lock` shows here rather than as an unlocked install."""
    pins, meta = locked(), project()
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in meta["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    for req in reqs:
        name = canonicalize_name(req.name)
        if name == canonicalize_name(meta["name"]):
            continue  # `all` names the other extras through the project itself
        assert name in pins, f"{req} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock has {name}=={pins[name]}, outside {req}: run `make lock`"
        )


def test_plain_install_leaves_out_the_optional_stacks_which_extras_bring() -> None:
    meta = project()
    core = {canonicalize_name(Requirement(r).name) for r in meta["dependencies"]}
    assert not core & OPTIONAL, f"optional stacks among the core dependencies: {core & OPTIONAL}"
    assert {"torch", "lightning", "hydra-core", "omegaconf", "tensorboard"} <= core
    extras = meta["optional-dependencies"]
    for extra, names in (
        ("mlflow", {"mlflow-skinny", "sqlalchemy", "alembic"}),
        ("onnx", {"onnx", "onnxruntime"}),
        ("sweeps", {"hydra-joblib-launcher", "hydra-submitit-launcher", "hydra-optuna-sweeper"}),
        ("dev", {"pytest", "pytest-xdist", "ruff", "import-linter", "hypothesis"}),
    ):
        assert names <= {canonicalize_name(Requirement(r).name) for r in extras[extra]}, extra
    # `all` is every optional stack, through the project itself
    (req,) = [Requirement(r) for r in extras["all"]]
    assert canonicalize_name(req.name) == canonicalize_name(meta["name"])
    assert req.extras == {"mlflow", "onnx", "sweeps"}
