# polyspec — every target creates or reuses the project's environment in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/polyspec/v1/*.proto)
PYTEST_ARGS ?=
DEMO_DRAFTER ?= smollm2-135m
DEMO_TARGET ?= qwen2.5-coder-1.5b
BENCH_ARGS ?=
BENCH_DRAFTER ?= qwen2.5-coder-0.5b
BENCH_TARGET ?= qwen2.5-coder-1.5b

.PHONY: help venv demo test test-fast lint protos check-protos bench clean

help:
	@echo "make demo   - fetch the default models and run a speculative generation end to end"
	@echo "make test   - lint, type-check and run the test suite"
	@echo "make bench  - benchmark ar vs sd through the services and transformers in-process (JSON + PNG)"
	@echo "make protos - regenerate the gRPC stubs from protos/"
	@echo "make check-protos - fail if the committed stubs in sdk/polyspec/v1 differ from what protos/ generates"

$(STAMP): pyproject.toml sdk/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e ./sdk -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# The stubs of $(PROTO_SRC) generated into the folder $(1) (as polyspec/v1/...).
protoc = $(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=$(1) --grpc_python_out=$(1) \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$(1) \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(1) \
	  $(PROTO_SRC)

protos: $(STAMP)
	$(call protoc,sdk)

# Offline and about a second: generate into a temporary folder and compare (run by `make test`).
check-protos: $(STAMP)
	@fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
	  $(call protoc,$$fresh) && \
	  if ! diff -r -q -x __init__.py -x __pycache__ "$$fresh/polyspec/v1" sdk/polyspec/v1; then \
	    echo "check-protos: the stubs in sdk/polyspec/v1 differ from what protos/ generates;" \
	      "run \`make protos\` and commit the result" >&2; \
	    exit 1; \
	  fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && npx --yes @bufbuild/buf@1.75.0 lint

test: $(STAMP) lint check-protos
	$(BIN)/pytest --durations=30 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not real_model and not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/polyspec models fetch $(DEMO_DRAFTER) $(DEMO_TARGET)
	$(BIN)/polyspec demo --drafter $(DEMO_DRAFTER) --target $(DEMO_TARGET)

bench: $(STAMP)
	$(BIN)/polyspec models fetch $(BENCH_DRAFTER) $(BENCH_TARGET)
	$(BIN)/polyspec bench --drafter $(BENCH_DRAFTER) --target $(BENCH_TARGET) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
