# Two commands a new user needs: `make quickstart` and `make test`.
# Both bootstrap a virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test test-fast model-garden-venv clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Runs the main job on the embedded default (synthetic CelebA-format faces).
quickstart: $(STAMP)
	$(PY) -m launch.quickstart

## Runs the test suite (fast tests and the slow end-to-end ones).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

## Only the fast tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

## TF Model Garden in its own environment (it pins its own TensorFlow), for
## `python -m benchmarks.throughput`'s model_garden contender.
MODEL_GARDEN_VENV ?= $(HOME)/.cache/facetrain/model_garden_venv
model-garden-venv:
	$(PYTHON) -m venv $(MODEL_GARDEN_VENV)
	$(MODEL_GARDEN_VENV)/bin/pip install --quiet tf-models-official==2.20.0

clean:
	rm -rf $(VENV) build *.egg-info
