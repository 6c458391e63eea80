# Two commands a new user needs: `make quickstart` and `make test`.
# Both bootstrap a virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test test-fast test-faults model-garden-venv clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Runs the main job on the embedded default (synthetic CelebA-format faces).
quickstart: $(STAMP)
	$(PY) -m launch.quickstart

## Runs the test suite (fast tests and the slow end-to-end ones) but the fault campaign.
## Three processes on 2 cores: many tests wait on the processes they start.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile -m "not faults"

## Only the fast tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile -m "not slow"

## The fault campaign (benchmarks.faults' scenarios on real processes). Scenarios spread over
## 2 processes (--dist load), each with its own data and reference run: 3-4 minutes, not 5.
test-faults: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist load -m faults tests/benchmarks/test_faults.py

## TF Model Garden in its own environment (it pins its own TensorFlow), for
## `python -m benchmarks.throughput`'s model_garden contender.
MODEL_GARDEN_VENV ?= $(HOME)/.cache/facetrain/model_garden_venv
model-garden-venv:
	$(PYTHON) -m venv $(MODEL_GARDEN_VENV)
	$(MODEL_GARDEN_VENV)/bin/pip install --quiet tf-models-official==2.20.0

clean:
	rm -rf $(VENV) build *.egg-info
