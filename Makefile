# Two commands a new user needs: `make quickstart` and `make test`.
# Both bootstrap a virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test test-fast clean

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

clean:
	rm -rf $(VENV) build *.egg-info
