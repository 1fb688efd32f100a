# ecanet: `make demo` (train ECA-ResNet-18 on real images, CPU) and `make test` (the test suite, one worker per core).
# Both create .venv on first use (scripts/setup_venv.sh); PYTHON picks the interpreter (>= 3.10).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ecanet-installed

.PHONY: help venv test test-fast demo model-table clean

help:
	@echo "make demo         prepare Fashion-MNIST and train ECA-ResNet-18 on the CPU (a few minutes)"
	@echo "make test         create .venv if needed and run the test suite"
	@echo "make test-fast    the test suite without the tests marked slow (real main.py runs, a compile cache)"
	@echo "make model-table  print the model table of docs/model_zoo.md (paras_flops.py --all --markdown)"
	@echo "make clean        remove the demo's run directories (runs/demo-*) and pytest's cache"

$(STAMP): requirements.txt pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) bash scripts/setup_venv.sh $(VENV)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow" tests

demo: $(STAMP)
	PY=$(PY) bash scripts/demo.sh

model-table: $(STAMP)
	$(PY) paras_flops.py --all --markdown

clean:
	rm -rf runs/demo-* .pytest_cache
