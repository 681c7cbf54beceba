# Each target sets up what it needs: a virtual environment in .venv with the pinned dependencies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench bench-speed bench-gateway bench-ope bench-log clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/learned-router demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for d in ../shared/data/*/; do \
	  [ -f "$$d/models.json" ] || continue; \
	  $(BIN)/learned-router bench "$$d" --plot out/bench-$$(basename $$d).png --json-out out/bench-$$(basename $$d).json || exit 1; \
	done
	$(BIN)/python benchmarks/route_speed.py

clean:
	rm -rf $(VENV) out
