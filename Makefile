# Everything runs from a project-local virtualenv (.venv) so a fresh machine needs only python3.
PY := .venv/bin/python

.PHONY: install serve test bench fixtures

.venv/bin/python:
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip

install: .venv/bin/python
	$(PY) -m pip install --quiet -e '.[test]'

serve: install
	.venv/bin/lectern serve

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/realtime.py

fixtures:
	$(PY) scripts/make_fixtures.py
