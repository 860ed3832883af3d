# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# Which torch to install before anything pulls one in. The default is the CPU build that these
# machines keep on disk; on a GPU machine use e.g. TORCH_SPEC=torch, or a CPU wheel index with
# TORCH_PIP_ARGS="--index-url <your CPU wheel index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.pz-installed

.PHONY: install system-deps demo test bench-peers clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium and postgresql for the UI and PostgreSQL tests; skips (exit 0) when it can't.
system-deps:
	bash scripts/install-system-deps.sh

# The demo: every batch of data/enron/emails, learning from the labels of the first two, then
# the answer scored against the labels the optimizer was not given.
DEMO_ENV := HF_HUB_OFFLINE=1 DAGSTER_HOME=$(CURDIR)/.pz_home
demo: $(STAMP)
	$(DEMO_ENV) $(VENV)/bin/pz-dagster run --partitions 0
	$(DEMO_ENV) $(VENV)/bin/pz-dagster score --labels data/enron/held-back-labels.json

test: $(STAMP) system-deps
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -ra

# Side by side with Palimpzest and LOTUS (issue 9): ENDPOINT=sim (minutes) or local (hours).
ENDPOINT ?= sim
bench-peers: $(STAMP)
	bash benchmarks/peers/install.sh
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m benchmarks.peer_enron --endpoint $(ENDPOINT)

clean:
	rm -rf $(VENV) .pz_home
