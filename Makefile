# One-command set-up: `make demo` and `make test` create .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench bench-quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[es,serve,test,multilingual,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

test: install
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/run.py

bench-quality: install
	$(BIN)/python bench/quality.py

clean:
	rm -rf shoptag-workspace bench/work .pytest_cache
