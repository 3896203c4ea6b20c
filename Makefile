# make demo  — create .venv, install everything, build a small model zoo and write its report to demo-out/
# make test  — the same install, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# The CPU build by default; GPU users pass a CUDA build: make test TORCH_SPEC="torch==2.13.0 --index-url <CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test readme lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, so that no other package drags in a CUDA build as a dependency
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/modelprint demo --out demo-out

test: install
	$(BIN)/python -m pytest -q

# the README's Python examples end to end (about 15 minutes: they build the null bank and the demo benchmark)
readme: install
	MODELPRINT_README=1 $(BIN)/python -m pytest -q tests/test_readme.py

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) demo-out .zoo-cache
