# zoetrope developer commands. `make test` and `make demo` work from a fresh clone:
# they create .venv, install the project with torch pinned (CPU build, no CUDA download).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev,minilm]" $(TORCH_PIN)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

demo: $(STAMP)
	$(BIN)/zoetrope generate "a red circle moving right" --seed 0 -o outputs/demo.mp4

clean:
	rm -rf $(VENV) outputs
