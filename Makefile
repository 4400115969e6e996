# tokenbrake: `make demo` runs the whole loop on the embedded stack; `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv compose-tool report-tool demo test test-unit test-integration chaos chaos-long lint schemas bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing tokenbrake with its worker and test dependencies into $(VENV)"
	@echo "(first run only: ~1.2 GB, Faust, River, chdb, pyarrow...; usually 2-5 minutes; pip's progress follows)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[worker,dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tokenbrake demo

# docker-compose.yml is validated with Debian's docker-compose (no Docker engine needed)
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || \
	  (apt-get install -y -q docker-compose >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null)) || \
	  (echo "install docker-compose (Debian package) to validate docker-compose.yml" >&2; exit 1)

# the HTML report is checked in headless Chromium (Debian package)
report-tool:
	@command -v chromium >/dev/null 2>&1 || \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || \
	  (echo "install chromium (Debian package) to test the HTML report" >&2; exit 1)

test: $(STAMP) compose-tool report-tool
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit detectors schemas streams

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration tests/e2e

# the fault suite (tests/chaos, not part of `make test`): real workers killed, rebalanced, ClickHouse
# taken away, input replayed, hostile messages, privacy; prints each scenario's figures.
# CHAOS_SEED=N repeats a run; CHAOS_RUNS=N repeats the kill -9 scenario (chaos-long: 5).
chaos: $(STAMP)
	$(BIN)/python -m pytest -q tests/chaos $(if $(CHAOS_SELECT),-k "$(CHAOS_SELECT)")

chaos-long: $(STAMP)
	CHAOS_RUNS=$${CHAOS_RUNS:-5} $(BIN)/python -m pytest -q tests/chaos

lint: $(STAMP)
	$(BIN)/ruff check schemas streams detectors clients tests

schemas: $(STAMP)
	$(BIN)/python -m tokenbrake.schemas.export

bench: $(STAMP)
	$(BIN)/tokenbrake bench

clean:
	rm -rf $(VENV) .tokenbrake .pytest_cache .hypothesis
