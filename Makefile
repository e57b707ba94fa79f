# One-command set-up: `make demo` and `make test` create .venv and install everything they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install browser demo test bench bench-quality bench-search bench-recs bench-review bench-scale gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[es,serve,test,multilingual,bench,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

# The review page's browser tests drive Debian's chromium through its chromedriver (nothing downloads a browser).
# Installed with apt when we are root and it is missing; otherwise those tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium: the browser tests will skip"; \
	else echo "chromium/chromedriver missing and not root: the browser tests will skip"; fi

test: install browser
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/run.py

bench-quality: install
	$(BIN)/python bench/quality.py

# Relevance of BM25, vector, hybrid and hybrid + query tags on judged English and Chinese queries, embedded and
# noida-db: bench/results/relevance.md
bench-search: install
	$(BIN)/python bench/bench_relevance.py

# Next-basket recommendations on the real purchase log, event ingest speed, /recommendations latency:
# bench/results/recs.md and docs/BENCHMARKS.md
bench-recs: install
	$(BIN)/python bench/recs.py

# The learning loop on fashion: 2% labels, 3 rounds of 200 simulated review decisions through the review API,
# guarded retraining, coverage at the target precision and weighted F1 per round: bench/results/review_loop.md
bench-review: install
	$(BIN)/python bench/review_loop.py --products 5000

# The kNN tagging stage, local engine vs Ray (local cluster), on 100k and 1M synthetic products and the 44k fashion
# catalog: products/s, peak memory of driver and workers: bench/results/scale.md (docs/SCALE.md plans from it)
bench-scale: install
	$(BIN)/python bench/scale.py

# The GPU path on a CUDA machine in at most 8 minutes (GPU encode, GPU kNN, CLIP training); prints a table
gpu-check: install
	bash bench/gpu_check.sh

clean:
	rm -rf shoptag-workspace bench/work .pytest_cache
