# The two set-up commands of the README are `make html` and `make test`; each
# installs what it needs into .venv from pyproject.toml and requirements/lock.txt.

PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
BUILD      := _build
SPHINX     := $(BIN)/python -m sphinx
SPHINXOPTS ?= -n -W --keep-going
export JAX_PLATFORMS := cpu

.PHONY: help install html doctest pytest test serve clean lock

help:
	@echo "make html     build the book into $(BUILD)/html"
	@echo "make test     build the book, run the Sphinx doctests and the whole test suite"
	@echo "make doctest  run the examples of every page with Sphinx's doctest builder"
	@echo "make serve    build the book and serve it on http://127.0.0.1:8000"
	@echo "make clean    remove what builds made"

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

html: $(STAMP)
	$(SPHINX) -b html $(SPHINXOPTS) -d $(BUILD)/doctrees . $(BUILD)/html

doctest: $(STAMP)
	$(SPHINX) -b doctest $(SPHINXOPTS) -d $(BUILD)/doctrees . $(BUILD)/doctest

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: html doctest pytest

serve: html
	@echo "Serving the book on http://127.0.0.1:8000/ (Ctrl-C to stop)"
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory $(BUILD)/html

lock: $(STAMP)
	{ echo "# Exact versions the book is built and tested with (Python 3.11)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > requirements/lock.txt

clean:
	rm -rf $(BUILD) docs/chapters
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
