# Two commands on a fresh machine: `make analyze` and `make test`.
# Both (re)build .venv from pyproject.toml when it changed, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: analyze test venv bench reference clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

analyze: $(STAMP)
	$(BIN)/metaalliance validate
	$(BIN)/metaalliance summary
	$(BIN)/metaalliance report --config analysis.toml --out results

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.dependence

# Regenerate tests/reference/*.json (needs Rscript with metafor, metadat, jsonlite, clubSandwich, robumeta)
reference:
	Rscript tests/reference/make_reference.R

clean:
	rm -rf $(VENV) results .pytest_cache
