# Set-up is part of every target: a fresh machine needs only `make build` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Foundry Local bundles these; a second environment proves our folders load there.
FOUNDRY_VENV  := .venv-foundry
FOUNDRY_STAMP := $(FOUNDRY_VENV)/.installed
FOUNDRY_PINS  := onnxruntime==1.26.0 onnxruntime-genai==0.14.1

# RECIPE is a name under recipes/ (qwen-int4) or a path to a recipe file.
RECIPE ?= tiny-qwen2-int4
RECIPE_FILE := $(if $(filter %.yaml %.yml %.json,$(RECIPE)),$(RECIPE),recipes/$(RECIPE).yaml)

.PHONY: all install build test validate foundry-venv clean bench bench-quick

all: build

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, from the CPU wheel: otherwise pip resolves a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(STAMP)

$(FOUNDRY_STAMP):
	$(PYTHON) -m venv $(FOUNDRY_VENV)
	$(FOUNDRY_VENV)/bin/pip install $(FOUNDRY_PINS)
	touch $@

foundry-venv: $(FOUNDRY_STAMP)

build: $(STAMP)
	$(BIN)/pipeline build $(RECIPE_FILE)

validate: $(STAMP)
	$(BIN)/pipeline validate $$(find recipes -name '*.yaml' -o -name '*.yml' -o -name '*.json' | sort)

test: $(STAMP) $(FOUNDRY_STAMP)
	PIPELINE_FOUNDRY_PYTHON=$(FOUNDRY_VENV)/bin/python $(BIN)/python -m pytest

# Build time and memory (vs the builder run directly), decode speed (vs transformers and the
# machine's memory bandwidth), quality per precision and int4 setting; each prints a table and
# writes benchmarks/results/. About 20 minutes the first time on 2 cores (models are made and
# built once, then cached under benchmarks/.work/). bench-quick: a smoke check of all three.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_speed.py
	$(BIN)/python benchmarks/bench_quality.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py --quick --results benchmarks/.work/quick
	$(BIN)/python benchmarks/bench_speed.py --quick --results benchmarks/.work/quick
	$(BIN)/python benchmarks/bench_quality.py --quick --results benchmarks/.work/quick

clean:
	rm -rf $(VENV) $(FOUNDRY_VENV) .pytest_cache
	find artifacts -mindepth 1 ! -name README.md -exec rm -rf {} +
