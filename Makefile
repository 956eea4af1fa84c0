# The project's commands. Each one sets up .venv on first use (Python 3.11, no GPU needed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup book test lab assign clean

help:
	@echo "make book    execute every chapter and build the book to _build/html/index.html"
	@echo "make test    run every test (package, kernels, notebooks, book, browser, grading)"
	@echo "make lab     open JupyterLab on the chapters and exercises"
	@echo "make assign  write student notebooks and autograders to dist/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24,<27"
	$(PY) -m pip install -q -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (seqlib)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --toc book/_toc.yml --config _config.yml
	@echo "open _build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest tests -v

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --config=jupyter_server_config.py

assign: $(STAMP)
	$(PY) -m seqlib.classroom assign --out dist

clean:
	rm -rf _build dist .pytest_cache tests/artifacts
