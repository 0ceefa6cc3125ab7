# The two set-up commands of the README: `make demo` and `make test`. Each builds
# .venv from the pinned requirements on first use (and again whenever a requirements
# file changes), so a fresh clone needs nothing else.
#
# `make venv` builds the production virtualenv only: requirements.txt and the `herald`
# command, without the dev requirements and without running the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: venv demo test lint bench clean screenshots

# runtime: the pinned requirements, then this folder in editable mode for .venv/bin/herald
$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

# development: the runtime plus pytest, freezegun, ruff, mypy
$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(VENV)/bin/herald demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

bench: $(VENV)/.installed
	$(PY) bench/drain.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache .ruff_cache herald.egg-info

# the README's console pictures, taken by the browser test
screenshots: $(VENV)/.installed
	HERALD_SCREENSHOTS=docs/console $(PY) -m pytest -q tests/test_console_browser.py
