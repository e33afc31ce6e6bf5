# Two commands do all the set-up on a fresh machine (Python 3.11+ and make are all it needs):
#   make run PROMPT="What are some fun things to do in SF?"   install, then answer with MoA
#   make test                                                  install, then lint, type-check, test
# uv comes from PyPI when it is not on PATH. The first install compiles llama.cpp (local extra):
# several minutes on 2 cores, cached afterwards.

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PROMPT ?= What are some fun things to do in San Francisco?
ARGS ?=

.PHONY: run test lint typecheck unit install install-dev bench

install:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode --extra local --extra serve --extra compare --no-dev

install-dev:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode --all-extras

run: install
	$(UV) run --frozen --no-dev moa $(ARGS) "$(PROMPT)"

lint: install-dev
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: install-dev
	$(UV) run --frozen mypy

unit: install-dev
	$(UV) run --frozen pytest

test: lint typecheck unit

# All benchmarks against the fake server; writes benchmarks/RESULTS.md (about 15 minutes).
bench: install-dev
	$(UV) run --frozen python -m benchmarks.run
