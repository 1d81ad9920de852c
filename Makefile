# The two commands of the README: `make run` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test install lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the package metadata or the side panel's sources change.
$(STAMP): $(BIN)/python pyproject.toml $(wildcard labextension/package*.json labextension/src/* labextension/style/* labextension/schema/*)
	@# The link made below would let pip write install.json into the build output; unlink first.
	rm -rf $(VENV)/share/jupyter/labextensions/mas_jupyter mas_jupyter/labextension/install.json
	$(BIN)/pip install --quiet -e ".[lab,test]"
	rm -rf $(VENV)/share/jupyter/labextensions/mas_jupyter && mkdir -p $(VENV)/share/jupyter/labextensions && ln -s "$(CURDIR)/mas_jupyter/labextension" $(VENV)/share/jupyter/labextensions/mas_jupyter
	touch $(STAMP)

install: $(STAMP)

# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

run: install
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" notebooks/quickstart.ipynb

LINTED := mas_jupyter tests $(wildcard bench)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: install
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info mas_jupyter/labextension
