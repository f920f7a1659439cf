# Set-up is idempotent: the venv and installs are redone only when pyproject.toml or
# requirements.lock changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every package `make` installs, at one version each (all extras + dev, Python 3.11, Linux
# x86_64): `make lock` writes it from pyproject.toml's ranges with pip-tools' pip-compile.
LOCK := requirements.lock
EXTRAS := all,dev
TORCH_VERSION := 2.13.0
PIP_VERSION := 26.3
# The lock's own tool lives in a venv of its own, never in the project's.
LOCK_VENV := .venv-lock
PIP_TOOLS_VERSION := 7.6.2
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest release pyproject allows;
# `LOCK_ARGS="--upgrade-package NAME"` one package. Plain `make lock` keeps the pins that still
# fit and only adds, drops or moves what a pyproject change requires.
LOCK_ARGS ?=
ARGS ?=

.PHONY: train test lint format clean install lock

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip==$(PIP_VERSION)"

# torch is pinned and installed first: otherwise pip resolves the newest build with GBs of CUDA.
# Then the project with its extras, every package held to the lock's version by -c.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install --quiet -c $(LOCK) "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $(STAMP)

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet "pip==$(PIP_VERSION)" "pip-tools==$(PIP_TOOLS_VERSION)"

# pip-compile reads pip's own configuration, so it sees the CPU build of torch on this disk, held
# to TORCH_VERSION. The lock keeps no index, find-links or local path: the project's own entry
# (`all` names its other extras through the project, so pip-compile lists it as a file:// path)
# is dropped, and torch is named without its local label (+cpu), which the same pin then
# matches on any index.
lock: | $(LOCK_VENV)/bin/pip-compile
	printf 'torch==%s\n' "$(TORCH_VERSION)" > $(LOCK_VENV)/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
		--extra all --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--constraint $(LOCK_VENV)/torch.txt --output-file $(LOCK) $(LOCK_ARGS) pyproject.toml
	awk '/^bn-state-lightning @ /{skip=1; next} skip && /^ +#/{next} {skip=0; print}' $(LOCK) \
		| sed -E 's/^torch==([^+ ]+)\+[a-z0-9.]+/torch==\1/' > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

train: $(STAMP)
	$(PY) -m src.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
