# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The real Synapse for tests/real, in a venv of its own: its dependencies stay out of Turret's.
SYNAPSE_VENV := .venv-synapse
SYNAPSE_STAMP := $(SYNAPSE_VENV)/.installed
# nix-bin: the Nix checks (nix/). systemd-container, debootstrap, python3-venv, python3-dev: the
# end-to-end test boots systemd in a container, with a venv of Debian's Python (tests/e2e).
# qbittorrent-nox: the real qBittorrent the capability tests run against (tests/real).
APT_PACKAGES := libsystemd-dev pkg-config nix-bin systemd-container debootstrap python3-venv python3-dev \
	qbittorrent-nox
# Only `make bench` needs these: the load generator, the peer proxy, and socket activation.
BENCH_APT_PACKAGES := wrk nginx systemd
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test test-e2e lint check sysdeps setup clean bench fuzz

run: setup
	$(PY) -m turret.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

setup: $(STAMP) $(SYNAPSE_STAMP)

# Turret against a direct call, nginx and a minimal aiohttp proxy, on loopback: a few minutes.
# Prints a table; writes bench/RESULTS.md, bench/latency.png and the figures in README.md.
bench: $(BENCH_STAMP)
	@$(MAKE) --no-print-directory sysdeps APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(PY) -m bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Coverage-guided fuzzing of the request path with atheris, on demand (not part of `make test`).
# New inputs go to a scratch directory, so the committed seed corpus stays small.
FUZZ_SECONDS ?= 60
fuzz: setup
	$(PY) -m pip install -q -e '.[fuzz]'
	scratch=$$(mktemp -d); \
	$(PY) fuzz/fuzz_paths.py -max_total_time=$(FUZZ_SECONDS) $$scratch fuzz/corpus/paths; \
	status=$$?; rm -rf $$scratch; exit $$status

# systemd-python compiles against libsystemd; nix-bin (Nix 2.8) parses and evaluates nix/ in the
# tests. Install them from apt when we can (root) and they are absent.
sysdeps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends $$missing; \
	  else \
	    echo "missing system packages: $$missing (run as root, or install them with apt)" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml | sysdeps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(SYNAPSE_STAMP): | sysdeps
	test -x $(SYNAPSE_VENV)/bin/python || $(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install -q 'matrix-synapse>=1.163,<2'
	touch $(SYNAPSE_STAMP)

clean:
	rm -rf $(VENV) $(SYNAPSE_VENV) .mypy_cache .ruff_cache .pytest_cache

# Only the end-to-end test (real systemd in a container; needs root). Set CI=1 to build from scratch.
test-e2e: setup
	$(PY) -m pytest tests/e2e
