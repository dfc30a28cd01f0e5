# Every target builds .venv first when it is missing; nothing but Python 3.11 (the default and
# the one CI tests; 3.12 and 3.13 with PY=python3.12) and make is needed.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard protos/facepay/*/v1/*.proto)
PROTO_INCLUDE = $(shell $(BIN)/python -c "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))")
# adbutils ships its own adb; tests and the demo pin that one.
export ADB_LIBUSB := 0

.PHONY: setup proto proto-check lint test test-fast install-check fuzz demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11 or later is required, found " + sys.version' 
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The .proto files are copied beside their generated code so the wheel ships them (package
# data, at their import paths: protoc -I <site-packages> finds facepay/terminal/v1/terminal.proto).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos -I$(PROTO_INCLUDE) \
		--python_out=daemon --pyi_out=daemon --grpc_python_out=daemon $(PROTOS)
	for f in $(PROTOS); do cp $$f daemon/$${f#protos/}; done

# The committed generated code must match protos/.
proto-check: $(STAMP)
	@rm -rf .venv/proto-check && mkdir -p .venv/proto-check
	@$(BIN)/python -m grpc_tools.protoc -Iprotos -I$(PROTO_INCLUDE) \
		--python_out=.venv/proto-check --pyi_out=.venv/proto-check \
		--grpc_python_out=.venv/proto-check $(PROTOS)
	@for f in $$(cd .venv/proto-check && find . -name '*.py*' -type f); do \
		cmp -s .venv/proto-check/$$f daemon/$$f || { echo "generated code is stale: daemon/$$f (run make proto)"; exit 1; }; \
	done
	@for f in $(PROTOS); do \
		cmp -s $$f daemon/$${f#protos/} || { echo "shipped proto is stale: daemon/$${f#protos/} (run make proto)"; exit 1; }; \
	done
	@echo "generated code is current"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) proto-check lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -p no:cacheprovider tests --ignore=tests/chaos

# The wheel into a fresh venv outside the repository, offline (see the test's docstring), then
# `facepayd --simulate` and `facepay status` from it; a few seconds, so `make test` runs it too.
install-check: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_install.py

# 20,000 generated requests over every RPC (make test runs about 2,200 of them, reproducibly).
fuzz: $(STAMP)
	FACEPAY_FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=1200 tests/fuzz

demo: $(STAMP)
	$(BIN)/python -m facepayd.demo

# Every figure of the README's performance table, A/B against its baseline in one run (under
# 5 minutes on 2 cores; BENCH_ARGS=--long for P5 over 10,000 payments). Not part of `make test`:
# tests/integration/test_bench_smoke.py runs it tiny and checks the table's shape, never timings.
BENCH_ARGS ?=
bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python tests/bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
