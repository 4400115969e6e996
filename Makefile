# tokenbrake: `make demo` runs the whole loop on the embedded stack; `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test test-unit test-integration lint schemas bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tokenbrake demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit detectors schemas streams

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check schemas streams detectors clients tests

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

bench: $(STAMP)
	$(BIN)/tokenbrake bench

clean:
	rm -rf $(VENV) .tokenbrake .pytest_cache .hypothesis
