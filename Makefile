# Every target creates .venv with the pinned stack first if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test clean

install: $(STAMP)

# constraints.txt: the tested version of every dependency (a fresh install gets what CI tested)
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

## the README main job: train the MNIST BNN, prune it by weight flipping frequency, convert, report (runs/mnist_wff/)
demo: $(STAMP)
	$(BIN)/bnnprune run pipelines/mnist_wff.yaml

## the whole test suite, on 2 processes
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf runs .pytest_cache .hypothesis
