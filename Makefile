# The two set-up commands of the README are `make html` and `make test`; each
# installs what it needs into .venv from pyproject.toml and requirements/lock.txt.

# Python 3.11: python3.11 where it is on the PATH, else python3 (which must then be 3.11).
PYTHON     ?= $(or $(shell command -v python3.11 2>/dev/null),python3)
VENV       := .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
BUILD      := _build
SPHINX     := $(BIN)/python -m sphinx
SPHINXOPTS ?= -n -W --keep-going -j 2
export JAX_PLATFORMS := cpu
# One persistent compilation cache for the whole suite: the figures of the build, the examples
# and the tests compile many of the same functions, and each compiles once. It lives outside the
# checkout, so that it outlives `make clean` and serves every clone; JAX keys each entry on the
# computation, the JAX version and the flags, so a warm cache cannot change a result. Override it
# with JAX_COMPILATION_CACHE_DIR=... (an empty folder measures a cold run).
JAX_COMPILATION_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/deep-learning-cookbook/jax
export JAX_COMPILATION_CACHE_DIR
# Compiling, not running, is most of what the build and the tests spend: their programs are small
# and each runs a few times. Two settings of XLA's CPU compiler make compiling cheaper:
# - LLVM's optimisation level 1 compiles a random-number kernel in a tenth of the time of the
#   default level 2 and runs the book's small models about as fast;
# - XLA's older emitters for fused loops (--xla_cpu_use_fusion_emitters=false) compile the graphs
#   chapter's tests with a quarter less CPU time, and took a cold make test from 750 s to 530 s
#   (December 2026, 3,434 tests on this machine's 2 cores).
# The second changes the last bits of some float32 results (a tanh, a long sum) and so can move a
# trained model's figures a little: the examples and tests ask only for what holds under these
# flags and under XLA's defaults, which a reader's run and Read the Docs' build use (when this was
# set, every test and example passed both ways; docs/contributing.rst says how to check a chapter).
# `make bench` measures with XLA's defaults (it clears this variable). Level 0 is not used: it
# rounds long float32 sums differently enough that tests fail (the U-Net's loss with a zero head,
# the mean of log 2 over every pixel, comes out as 0.693154 instead of 0.693147).
export XLA_FLAGS ?= --xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false
# The training runs that a page's figure and its tests share are stored here once (cookbook/_memo.py).
export COOKBOOK_TRAIN_CACHE ?= $(CURDIR)/$(BUILD)/trained
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS := 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES := 0
PYTEST_WORKERS ?= 2

.PHONY: help install browser html doctest pytest test check costs serve clean lock bench bench-test rtd

help:
	@echo "make help       this list"
	@echo "make html       build the book into $(BUILD)/html (installs what it needs first)"
	@echo "make test       build the book, run every page's examples and the whole test suite"
	@echo "                (what passed before with the same inputs is not run again; FRESH=1 runs all)"
	@echo "make doctest    run the examples of every page with Sphinx's doctest builder"
	@echo "make pytest     run pytest alone, on the environment that make install made"
	@echo "make check RECIPE=attention/rope"
	@echo "                one recipe: its page, its tests and examples, its jit, bad-input and page checks"
	@echo "make costs      the ten most expensive recipes of the last make test"
	@echo "make serve      build the book and serve it on http://127.0.0.1:8000 (search with snippets)"
	@echo "make install    make .venv with the pinned packages (PYTHON=... picks the interpreter)"
	@echo "make browser    install chromium and chromedriver for the browser tests, if missing"
	@echo "make rtd        build the book as Read the Docs does: fresh environment, non-editable install, no network"
	@echo "make bench      time the recipes against their library twins (writes benchmarks/results.json)"
	@echo "make bench-test time a cold build and a cold make test in fresh clones (the performance page)"
	@echo "make lock       write the installed versions to requirements/lock.txt"
	@echo "make clean      remove what builds made"

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required; $(PYTHON) is " + sys.version.split()[0] + ". Install python3.11 (see the README) or run make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# MathJax and its font, served from the book itself (see conf.py).
$(NODE_STAMP): package.json package-lock.json
	command -v npm >/dev/null || { apt-get update && apt-get install -y npm; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's chromium and its driver, for the browser tests.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

# A failed build forgets its environment, so that the next build reads every page again and
# repeats every warning instead of reporting success on the pages it did not re-read.
html: $(STAMP) $(NODE_STAMP)
	$(SPHINX) -b html $(SPHINXOPTS) -d $(BUILD)/doctrees . $(BUILD)/html \
	  || { rm -f $(BUILD)/doctrees/environment.pickle; exit 1; }

doctest: $(STAMP)
	$(SPHINX) -b doctest $(SPHINXOPTS) -d $(BUILD)/doctrees . $(BUILD)/doctest \
	  || { rm -f $(BUILD)/doctrees/environment.pickle; exit 1; }

pytest: $(STAMP)
	$(BIN)/python -m pytest

# The whole suite with one exit status: the book builds with no warnings, and pytest passes: the
# tests, every page's examples and every function's examples, and the book in a browser. A recipe's
# examples run once, in the same worker as its jit and bad-input checks, which replay the calls the
# examples made (conftest.py, tests/replay.py); `make doctest` runs the same examples under Sphinx's
# doctest builder instead.
#
# A test or an example whose inputs (its code and every file of the repository it imports, the lock
# file, the flags) are those it last passed with is not run again (cookbook/_passed.py keeps the record
# in $(BUILD)/passed.json): after a change to one recipe, `make test` runs that recipe's tests and
# examples and the book-wide tests. A fresh clone runs everything; so does `make test FRESH=1`.
PASSED = $(if $(FRESH),,$(CURDIR)/$(BUILD)/passed.json)

test: browser html
	@$(if $(FRESH),rm -f $(BUILD)/costs/pytest-tests.json,true)
	@COOKBOOK_PASSED=$(PASSED) COOKBOOK_REQUIRE_BROWSER=1 \
	  $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=10; \
	pytest=$$?; $(BIN)/python -m benchmarks.costs; exit $$pytest

costs: $(STAMP)
	@$(BIN)/python -m benchmarks.costs

# A contributor's loop on one recipe, RECIPE=<chapter>/<concept>: the book is rebuilt (only what
# changed is read again, so this page), then the page's examples under Sphinx's doctest builder, and
# pytest on its test file, its function docstring examples, its page check, its jit check and its
# bad-input check.
check: $(STAMP) $(NODE_STAMP)
	@test -n "$(RECIPE)" || { echo "usage: make check RECIPE=<chapter>/<concept>, e.g. RECIPE=attention/rope"; exit 2; }
	@test -f cookbook/$(RECIPE).py || { echo "cookbook/$(RECIPE).py does not exist"; exit 2; }
	$(SPHINX) -b html $(SPHINXOPTS) -d $(BUILD)/doctrees . $(BUILD)/html -q \
	  || { rm -f $(BUILD)/doctrees/environment.pickle; exit 1; }
	$(SPHINX) -b doctest -n -W --keep-going -q -d $(BUILD)/doctrees . $(BUILD)/doctest docs/chapters/$(RECIPE).rst
	COOKBOOK_PAGES_DOCTESTED=1 $(BIN)/python -m pytest -q -p no:xdist tests/$(dir $(RECIPE))test_$(notdir $(RECIPE)).py \
	  cookbook/$(RECIPE).py tests/_book/test_check.py tests/test_replay.py -k "$(subst /,.,$(RECIPE)) or test_$(notdir $(RECIPE)) or $(notdir $(RECIPE)).py"

# Benchmarks: not part of `make test`; they write benchmarks/results.json, shown on a page of the book.
bench: $(STAMP) $(NODE_STAMP)
	XLA_FLAGS= $(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.recall  # accuracies, not timings: the faster-compiling flags of the tests
	$(BIN)/python -m benchmarks.build_times

bench-test: $(STAMP) $(NODE_STAMP) browser
	$(BIN)/python -m benchmarks.build_times --with-test

# The book built as Read the Docs builds it (cookbook/_book/readthedocs.py): the steps of
# .readthedocs.yaml in a copy of the checkout, a fresh environment with a non-editable install, Read the
# Docs' variables and command line, and no network during the build. CI runs it after make test.
rtd: $(STAMP)
	$(BIN)/python -m cookbook._book.readthedocs

serve: html
	@echo "Serving the book on http://127.0.0.1:8000/ (Ctrl-C to stop)"
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory $(BUILD)/html

lock: $(STAMP)
	{ echo "# Exact versions the book is built and tested with (Python 3.11)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --all --exclude-editable --exclude pip; } > requirements/lock.txt

# The compilation cache outside the checkout is kept; remove $(JAX_COMPILATION_CACHE_DIR) to drop it.
clean:
	rm -rf $(BUILD) docs/chapters node_modules
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
