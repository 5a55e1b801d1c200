# The two commands of the README, on a fresh machine: each creates the virtualenv and installs the
# project (once; again when pyproject.toml changes) before it runs.
#   make quickstart   # train the main job on the embedded data (ResNet-20 on scikit-learn's digits)
#   make test         # the test suite (offline, CPU)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A stamp, so that an install that failed half-way is tried again.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/python main.py fit --config configs/quickstart/resnet.yaml

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)
