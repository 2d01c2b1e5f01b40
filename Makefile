# The two commands of the README: `make demo` and `make test`. Both build the
# environment from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XDG_CACHE_HOME ?= $(CURDIR)/build/cache
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test env lint bench clean

env: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iverilog; \
	  else echo "iverilog missing: install the Debian package 'iverilog'" >&2; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e '.[all]'
	touch $(STAMP)

demo: env
	$(BIN)/apical run --out runs/demo

test: env
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

lint: env
	$(BIN)/ruff check .

bench: env
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build sim_build runs/demo
