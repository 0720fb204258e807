# Each target sets up its own virtualenv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast fuzz bench demo clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The whole suite: unit, property-based (fast profile) and end to end.
test: $(STAMP)
	$(PY) -m pytest -q

# Unit and property tests only: seconds, no database.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit

# Deep fuzzing of the codec and relay (opt-in, minutes).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q tests/unit -k "property or fuzz"

# pgbench: direct, through pgwarden and through PgBouncer, in one run.
bench: $(STAMP)
	$(PY) bench/run.py

# A throwaway PostgreSQL with sample data and pgwarden in front; prints a psql line.
demo: $(STAMP)
	$(VENV)/bin/pgwarden demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
