# The two set-up commands of the README: `make demo` and `make test`.
# Each builds .venv from the pinned requirements on first use (and again
# whenever a requirements file changes), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) scheduler.py demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) bench/drain.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache .ruff_cache
