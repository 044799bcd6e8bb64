# multigrid-video: make setup | demo | test
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup demo test lint clean gpu-check

setup: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	# The pinned CPU wheel first: a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	touch $(VENV_STAMP)

demo: $(VENV_STAMP)
	$(PY) -m mgvideo demo --out runs/demo

lint: $(VENV_STAMP)
	.venv/bin/ruff check mgvideo tests

test: $(VENV_STAMP) lint
	$(PY) -m pytest -q --timeout=900

# On a CUDA machine (see README, "Checking a GPU machine"); `make test` runs its --smoke mode.
gpu-check:
	scripts/gpu_check.sh runs/gpu_check

clean:
	rm -rf .venv runs .pytest_cache
