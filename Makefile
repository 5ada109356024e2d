# visiontool developer commands. `make test` and `make demo` each work alone on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint format demo weights bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when it collected nothing: treat that as a failure, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: $(STAMP)
	$(BIN)/ruff format --check visiontool tests benchmarks
	$(BIN)/ruff check visiontool tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format visiontool tests benchmarks
	$(BIN)/ruff check --fix visiontool tests benchmarks

demo: $(STAMP)
	$(BIN)/visiontool detect examples --model frcnn-mobile-320 --weights none --out runs/demo --exist-ok

clean:
	rm -rf runs .pytest_cache
