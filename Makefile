# `make demo` and `make test` set up a fresh machine on their own: a venv kept
# outside the clone (keyed by a hash of setup.cfg and pyproject.toml, so a
# dependency change builds a new one) with every package, then this clone
# installed into it in editable mode.
SHELL := /bin/bash
PYTHON ?= python3
VENV_KEY := $(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/mcuformer-tf/venv-$(VENV_KEY)
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed
PYTEST_ARGS ?=
# The Cortex-M7 toolchain and emulator (Debian packages), installed when missing.
M7_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install toolchain demo test test-all bench clean

$(DEPS_STAMP):
	$(PYTHON) -m venv $(VENV) || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --upgrade pip 'setuptools>=64' wheel
	$(BIN)/pip install -e '.[test]'
	touch $@

# Re-point the shared venv at this clone (cheap; no dependency is touched).
install: $(DEPS_STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# Idempotent: apt-get runs only when one of the packages is not installed.
toolchain:
	@dpkg -s $(M7_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $(M7_PACKAGES); }

demo: install toolchain
	$(BIN)/mcuformer-tf demo --out runs/demo

test: install toolchain
	$(BIN)/python -m pytest -q -rs --durations=25 -m "not slow" $(PYTEST_ARGS)

# Includes the slow tests: the demo's accuracy targets, the multi-seed, multi-worker and fuzz
# runs, the memory model on 10 exports per preset (deit-tiny-mcu ones take minutes each): hours
# on 2 cores, not minutes.
test-all: install toolchain
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

bench: install toolchain
	$(BIN)/python tools/bench_supernet_throughput.py
	$(BIN)/python tools/bench_block_arena.py
	$(BIN)/python tools/bench_fused_arena.py
	$(BIN)/python tools/bench_cortex_m7.py

clean:
	rm -rf runs build *.egg-info .pytest_cache
