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

.PHONY: venv demo cli-demo test bench notebooks clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## The main job: the six notebooks on the phantom, executed headless with papermill (summary table at the end).
demo: venv
	$(CHH) notebooks --run-dir runs/notebooks/$(PROFILE) --profile $(PROFILE)

## The same pipeline through the command line only: phantom, training, calibration, evaluation.
cli-demo: venv
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
	$(VENV)/bin/python benchmarks/bench_labelme.py
	$(VENV)/bin/python benchmarks/bench_checkpoint.py
	$(VENV)/bin/python benchmarks/bench_predict.py

## Rebuild the notebooks from notebooks/src (no outputs); see notebooks/build.py to publish executed copies.
notebooks: venv
	$(VENV)/bin/python notebooks/build.py

clean:
	rm -rf runs .pytest_cache
