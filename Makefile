# The README's commands. Every target creates the virtual environment first.
# torch is pinned through a pip constraints file so that pip keeps the build it
# finds for this machine (the CPU build here) instead of pulling another one.
PYTHON ?= python3
VENV ?= .venv
PIP_CONSTRAINT ?= $(CURDIR)/constraints.txt
export PIP_CONSTRAINT
CHH := $(VENV)/bin/chh
DATA ?= data/phantom
RUN ?= runs/cpu
PROFILE ?= cpu

.PHONY: venv demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## The main job: phantom, training with the cpu profile, temperature calibration, evaluation and the results table.
demo: venv
	$(CHH) phantom $(DATA)
	$(CHH) train --data $(DATA) --run-dir $(RUN) --profile $(PROFILE) $(if $(wildcard $(RUN)/checkpoints/last.pt),--resume,)
	$(CHH) calibrate --run-dir $(RUN)
	$(CHH) evaluate --run-dir $(RUN) --split test

## Unit, reference, bad-input, end-to-end and notebook tests, then nbval on the committed notebooks.
test: venv
	$(VENV)/bin/python -m pytest
	CHH_PROFILE=smoke $(VENV)/bin/python -m pytest --nbval-lax notebooks/ -p no:cacheprovider

## Speed measurements; results land in benchmarks/results/.
bench: venv
	$(VENV)/bin/python benchmarks/bench_phantom.py
	$(VENV)/bin/python benchmarks/bench_model.py
	$(VENV)/bin/python benchmarks/bench_augment.py

clean:
	rm -rf runs .pytest_cache
