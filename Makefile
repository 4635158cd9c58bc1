# Everything runs from a project-local virtualenv (.venv) so a fresh machine needs only python3.
PY := .venv/bin/python
SILERO_VAD := silero-vad==6.2.3

.PHONY: install serve test bench fixtures

.venv/bin/python:
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip

install: .venv/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	# The silero-vad wheel carries the ONNX model Lectern runs; its torch requirement is not needed.
	$(PY) -m pip install --quiet --no-deps '$(SILERO_VAD)'

serve: install
	.venv/bin/lectern serve

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/realtime.py

fixtures:
	$(PY) scripts/make_fixtures.py
