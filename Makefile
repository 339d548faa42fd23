# gan-assets: two commands for a newcomer -- `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where `make demo` / `make dev` keep Dagster's instance (runs, events, schedules): git-ignored.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# glibc returns big freed buffers to the OS on every free; these keep them (ingest and CPU
# training measured faster, see docs/scaling.md); worker processes inherit them.
export MALLOC_MMAP_THRESHOLD_ ?= 67108864
export MALLOC_TRIM_THRESHOLD_ ?= 268435456

.PHONY: install install-test demo dev test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch lies on this disk; installing it first keeps pip from pulling a
	# multi-GB CUDA build to satisfy setup.py's range.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[codecs]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[codecs,test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m gan_assets.demo run

# The UI at http://127.0.0.1:$DAGSTER_PORT (3000) with the daemon (schedule, sensors, run queue).
# Dagster reads $DAGSTER_HOME/dagster.yaml: the repo's file is copied there on every start, so
# edit ./dagster.yaml, never the copy. Stop it with Ctrl-C, or `kill` (SIGTERM) when it runs in
# the background: `demo dev` restores the signals a background shell ignores.
dev: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	exec $(PY) -m gan_assets.demo dev --port $${DAGSTER_PORT:-3000} --workspace workspace.yaml

test: install-test
	$(PY) -m pytest gan_assets_tests -q -ra

bench: install-test
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .dagster_home artifacts data *.egg-info
