# `make demo` and `make test` set everything up on a fresh machine (Python >= 3.10 with venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases these make targets are tested with; a newer
# compatible pair works too (pip install -e . in your own environment).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint format bench docs dist check-wheel clean

$(BIN)/selfsup: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/selfsup

demo: $(BIN)/selfsup
	$(BIN)/selfsup demo

test: $(BIN)/selfsup
	$(BIN)/python -m pytest

lint: $(BIN)/selfsup
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench

format: $(BIN)/selfsup
	$(BIN)/ruff format src tests tools bench
	$(BIN)/ruff check --fix src tests tools bench

# The site (mkdocs.yml, docs/) into build/site; tools/gen_docs.py, an MkDocs hook, generates the
# CLI and config reference, the results pages and the method figures during the build.
docs: $(BIN)/selfsup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# bench/perf.py compares the loop with LightlySSL, installed by the `bench` extras.
bench: $(BIN)/selfsup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/video.py
	$(BIN)/python bench/graph.py
	$(BIN)/python bench/run.py --suite multitask
	$(BIN)/python bench/run.py --suite transitive
	$(BIN)/python bench/dense.py
	$(BIN)/python bench/perf.py
	$(BIN)/python bench/learning.py

# The sdist and the wheel (with the presets and the demo data) into dist/.
dist: $(BIN)/selfsup
	$(BIN)/python -m build --outdir dist .

# Install the wheel into a fresh environment outside the tree and run the demo there.
check-wheel: $(BIN)/selfsup
	tools/check_wheel.sh $(BIN)/python

clean:
	rm -rf $(VENV) dist build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
