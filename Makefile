# graphprune: `make demo` and `make test` do all their set-up themselves.
PY_SYSTEM ?= /usr/bin/python3
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed

.PHONY: setup test demo docs lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@# graph-tool is not on PyPI: Debian ships it for the system Python.
	@if ! $(PY_SYSTEM) -c "import graph_tool" >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing python3-graph-tool with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-graph-tool python3-venv; \
	  else \
	    echo "graph-tool missing (not root or no apt-get): graph-tool features and tests will be skipped."; \
	    echo "Install it with: sudo apt-get install python3-graph-tool"; \
	  fi; \
	fi
	@# Headless Chromium renders the report pages in tests/test_browser.py (skipped where it is missing).
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium missing (not root or no apt-get): the browser tests of the report pages will be skipped."; \
	    echo "Install it with: sudo apt-get install chromium"; \
	  fi; \
	fi
	@if ! $(PY_SYSTEM) -c "import ensurepip" >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; fi
	@test -x $(PY) || $(PY_SYSTEM) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) examples/demo.py

# The documentation site (Sphinx + numpydoc) in docs/_build/html; any warning fails the build.
docs: setup
	$(PY) -m sphinx -W --keep-going -b html docs/source docs/_build/html

lint: setup
	$(VENV)/bin/ruff check graphprune tests examples benchmarks docs/source

bench: setup
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"  # Torch-Pruning, a peer of bench_structured.py
	$(PY) benchmarks/bench_export.py
	$(PY) benchmarks/bench_resistance.py
	$(PY) benchmarks/bench_approx.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_depthwise.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
