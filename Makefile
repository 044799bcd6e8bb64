# multigrid-video: make setup | demo | test
PY := .venv/bin/python
CORE_STAMP := .venv/.core-installed
DEV_STAMP := .venv/.installed
# Where pip's default index serves torch's CUDA build (several GB), take the CPU one instead, e.g.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup demo test lint clean gpu-check

setup: $(DEV_STAMP)

# The library, its command line and the demo: the runtime dependencies only.
$(CORE_STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: a bare `torch` from the project's dependencies may pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e .
	touch $(CORE_STAMP)

# The tests' extras on top: pytest, ruff, hypothesis, transformers, lightning, accelerate.
$(DEV_STAMP): $(CORE_STAMP)
	$(PY) -m pip install -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(CORE_STAMP)
	$(PY) -m mgvideo demo --out runs/demo

lint: $(DEV_STAMP)
	.venv/bin/ruff check mgvideo tests

test: $(DEV_STAMP) lint
	$(PY) -m pytest -q --timeout=900

# On a CUDA machine (see README, "Checking a GPU machine"); `make test` runs its --smoke mode.
gpu-check:
	scripts/gpu_check.sh runs/gpu_check

clean:
	rm -rf .venv runs .pytest_cache
